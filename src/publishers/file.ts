import fs from 'node:fs/promises';
import path from 'node:path';
import * as v from 'valibot';
import { SettingsError, type Publisher, type PublisherModule, type PublishRequest } from './publisher.ts';

/**
 * `file`: appends each published post as one JSON line to the channel's file.
 * Lines are written with O_APPEND in one write each, so several worker processes
 * can share a file without interleaving.
 */
const settingsSchema = v.object({
  path: v.pipe(v.string('file channel needs a path'), v.minLength(1, 'file channel needs a path')),
}, 'file channel needs a path');

function parseSettings(settings: Record<string, unknown>): { path: string } {
  const parsed = v.safeParse(settingsSchema, settings);
  if (!parsed.success) throw new SettingsError(parsed.issues[0].message);
  return parsed.output;
}

export const filePublisher: PublisherModule = {
  platform: 'file',
  parseSettings,
  redactSettings: (settings) => settings,
  createPublisher(): Publisher {
    const handles = new Map<string, Promise<fs.FileHandle>>();
    const open = (file: string): Promise<fs.FileHandle> => {
      let handle = handles.get(file);
      if (handle === undefined) {
        handle = fs.mkdir(path.dirname(file), { recursive: true }).then(() => fs.open(file, 'a'));
        handles.set(file, handle);
        handle.catch(() => handles.delete(file));
      }
      return handle;
    };
    return {
      async publish(request: PublishRequest) {
        const { path: file } = parseSettings(request.channel.settings);
        const line = JSON.stringify({
          id: request.postId,
          channel: request.channel.name,
          text: request.text,
          run_at: request.runAt.toISOString(),
          attempt: request.attempt,
          idempotency_key: request.idempotencyKey,
          published_at: new Date().toISOString(),
        });
        const handle = await open(file);
        await handle.write(line + '\n');
        return { externalId: null, externalUrl: null };
      },
      async close() {
        const all = [...handles.values()];
        handles.clear();
        await Promise.all(all.map(async (h) => (await h).close().catch(() => undefined)));
      },
    };
  },
};
