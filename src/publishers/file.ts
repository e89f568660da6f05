import { createHash } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import * as v from 'valibot';
import { parseWith, PermanentPublishError, type Publisher, type PublisherModule, type PublishRequest } from './publisher.ts';

/**
 * `file`: appends each published post as one JSON line to the channel's file.
 * Lines are written with O_APPEND in one write each, so several worker processes
 * can share a file without interleaving.
 *
 * It can look up what it wrote (each line carries the post's idempotency key), so a
 * new file channel checks before re-sending a post whose outcome is unknown.
 *
 * Content: a post may carry images (each line records their file names, types, sizes
 * and SHA-256, never their bytes) and be a thread: each part is a line of its own, with
 * its index and count, and the id of the part it replies to. A thread's part has an id,
 * its idempotency key (a post of one part keeps none, as before).
 *
 * `channels add` stores the path absolute, so a worker in another directory writes the
 * same file. The file is opened with O_NOFOLLOW: a symlink at the path (which could
 * point the scheduler's writes at any file it may write) fails the post, permanently.
 */
const settingsSchema = v.object({
  path: v.pipe(v.string('file channel needs a path'), v.minLength(1, 'file channel needs a path')),
}, 'file channel needs a path');

function parseSettings(settings: Record<string, unknown>): { path: string } {
  return parseWith(settingsSchema, settings);
}

/** A channel's settings as its posts bring them, parsed once per settings object (the posts of one claim share it). */
const parsed = new WeakMap<Record<string, unknown>, { path: string }>();
function settingsOf(settings: Record<string, unknown>): { path: string } {
  let known = parsed.get(settings);
  if (known === undefined) {
    known = parseSettings(settings);
    parsed.set(settings, known);
  }
  return known;
}

export const filePublisher: PublisherModule = {
  platform: 'file',
  parseSettings,
  redactSettings: (settings) => settings,
  checkText: () => null,
  media: { maxImages: 10, maxBytes: 10 * 1024 * 1024, maxAltLength: 1500, types: ['image/jpeg', 'image/png', 'image/gif', 'image/webp'] },
  threads: true,
  canLookUp: true,
  defaultOnUnknown: 'check',
  createPublisher(): Publisher {
    const appenders = new Map<string, Appender>();
    return {
      async publish(request: PublishRequest) {
        const { path: file } = settingsOf(request.channel.settings);
        const line = JSON.stringify({
          id: request.postId,
          channel: request.channel.name,
          text: request.text,
          run_at: request.runAt.toISOString(),
          attempt: request.attempt,
          idempotency_key: request.idempotencyKey,
          published_at: new Date().toISOString(),
          ...(request.part.count > 1 ? { part: request.part.index + 1, parts: request.part.count, reply_to: request.replyTo?.parent.externalId ?? null } : {}),
          ...(request.images.length > 0
            ? {
                images: request.images.map((i) => ({
                  filename: i.filename,
                  type: i.mimeType,
                  bytes: i.bytes.length,
                  sha256: createHash('sha256').update(i.bytes).digest('hex'),
                  alt: i.alt,
                })),
              }
            : {}),
        });
        let appender = appenders.get(file);
        if (appender === undefined) {
          appender = new Appender(file);
          appenders.set(file, appender);
        }
        try {
          await appender.append(line + '\n');
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ELOOP') {
            throw new PermanentPublishError(`channel ${request.channel.name}: refusing to follow a symlink at its path ${file}`);
          }
          throw e;
        }
        return partResult(request);
      },
      async lookup(request: PublishRequest) {
        const { path: file } = parseSettings(request.channel.settings);
        return (await fileHasKey(file, request.idempotencyKey)) ? partResult(request) : null;
      },
      async close() {
        const all = [...appenders.values()];
        appenders.clear();
        await Promise.all(all.map((a) => a.close()));
      },
    };
  },
};

/** What a written part is: a thread's part is known by its idempotency key. */
function partResult(request: PublishRequest): { externalId: string | null; externalUrl: null } {
  return { externalId: request.part.count > 1 ? request.idempotencyKey : null, externalUrl: null };
}

/** Whether a line of `file` carries this idempotency key (a missing file has none). */
async function fileHasKey(file: string, key: string): Promise<boolean> {
  const stream = createReadStream(file, { encoding: 'utf8' });
  const opened = await new Promise<boolean>((resolve, reject) => {
    stream.once('ready', () => resolve(true));
    stream.once('error', (e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? resolve(false) : reject(e)));
  });
  if (!opened) return false;
  const lines = createInterface({ input: stream, crlfDelay: Infinity });
  try {
    for await (const line of lines) {
      if (!line.includes(key)) continue;
      try {
        if ((JSON.parse(line) as { idempotency_key?: unknown }).idempotency_key === key) return true;
      } catch {
        // a torn or foreign line: not ours
      }
    }
    return false;
  } finally {
    lines.close();
    stream.destroy();
  }
}

/** 'a' (create, append, write only), and never through a symlink at the path: ELOOP */
const APPEND_NO_FOLLOW = constants.O_WRONLY | constants.O_CREAT | constants.O_APPEND | constants.O_NOFOLLOW;

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
    this.handle ??= fs.mkdir(path.dirname(this.file), { recursive: true }).then(() => fs.open(this.file, APPEND_NO_FOLLOW, 0o666));
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
