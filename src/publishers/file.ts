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
    const appenders = new Map<string, Appender>();
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
        let appender = appenders.get(file);
        if (appender === undefined) {
          appender = new Appender(file);
          appenders.set(file, appender);
        }
        await appender.append(line + '\n');
        return { externalId: null, externalUrl: null };
      },
      async close() {
        const all = [...appenders.values()];
        appenders.clear();
        await Promise.all(all.map((a) => a.close()));
      },
    };
  },
};

/**
 * Appends lines to one file. Lines that arrive while a write is under way are joined
 * into the next write (one write call, so one O_APPEND write of whole lines), and each
 * caller is answered when its line is written.
 */
class Appender {
  private handle: Promise<fs.FileHandle> | null = null;
  private pending: { text: string; done: () => void; fail: (e: unknown) => void }[] = [];
  private writing = false;

  constructor(private readonly file: string) {}

  append(text: string): Promise<void> {
    return new Promise<void>((done, fail) => {
      this.pending.push({ text, done, fail });
      if (!this.writing) void this.drain();
    });
  }

  private open(): Promise<fs.FileHandle> {
    this.handle ??= fs.mkdir(path.dirname(this.file), { recursive: true }).then(() => fs.open(this.file, 'a'));
    this.handle.catch(() => (this.handle = null));
    return this.handle;
  }

  private async drain(): Promise<void> {
    this.writing = true;
    try {
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, this.pending.length);
        try {
          const handle = await this.open();
          await handle.write(batch.map((b) => b.text).join(''));
          for (const b of batch) b.done();
        } catch (e) {
          for (const b of batch) b.fail(e);
        }
      }
    } finally {
      this.writing = false;
    }
  }

  async close(): Promise<void> {
    if (this.handle !== null) await (await this.handle.catch(() => null))?.close().catch(() => undefined);
    this.handle = null;
  }
}
