import type { Command } from 'commander';
import fs from 'node:fs';
import { describeDue, parseWhen, WhenError } from '../when.ts';
import type { Store } from '../store/store.ts';
import type { Channel, PostPart } from '../types.ts';
import { collect, flagOf, partsFromFlags, partsFromThreadFile, type ContentFlags } from './content.ts';
import { CliError, configFrom, parsePositiveInt, print, withStore, type GlobalFlags } from './context.ts';
import { cancelPosts, ContentError, markPublished, schedulePost } from '../operations/posts.ts';
import { OperationError } from '../operations/errors.ts';
import { registerPostsGroup } from './posts-manage.ts';

/** The longest post text, in characters (UTF-16 code units, as JavaScript counts them). */
export const MAX_TEXT = 100_000;

async function findChannel(store: Store, name: string): Promise<Channel> {
  const channel = await store.findChannel(name);
  if (channel === null) throw new CliError(`no channel named "${name}" (see: post-scheduler channels list)`);
  return channel;
}

async function channelId(store: Store, name: string): Promise<number> {
  return (await findChannel(store, name)).id;
}

export function when(value: string | undefined, now = new Date()): Date {
  try {
    return parseWhen(value ?? 'now', now);
  } catch (e) {
    throw new CliError(e instanceof WhenError ? e.message : String(e));
  }
}

/** The time was given as such (an ISO time), not worked out from now. */
function exactTime(at: string | undefined): boolean {
  return at !== undefined && at !== 'now' && !at.startsWith('+');
}

export function postId(value: string): number {
  return parsePositiveInt(value, 'post id', Number.MAX_SAFE_INTEGER);
}

/** Names the first id that was not changed, and why, as the command's one-line error. */
async function refuseOthers(store: Store, wanted: readonly number[], done: ReadonlySet<number>, rule: string): Promise<void> {
  const missed = wanted.find((n) => !done.has(n));
  if (missed === undefined) return;
  const post = await store.getPost(missed);
  const changed = done.size === 0 ? '' : ` (changed: ${[...done].join(', ')})`;
  throw new CliError(post === null ? `no post with id ${missed}${changed}` : `post ${missed} is ${post.status}; ${rule}${changed}`);
}

/**
 * The text of `schedule`: --text T, --text - (standard input) or --text-file PATH,
 * exactly one of them. Text read from a file or stdin must be UTF-8 and loses one
 * trailing newline (\n or \r\n), as shells add one.
 */
export async function postText(flags: { text?: string; textFile?: string }, withImages = false): Promise<string> {
  if ((flags.text === undefined) === (flags.textFile === undefined)) throw new CliError('give exactly one of --text and --text-file');
  let text: string;
  let source: string;
  if (flags.textFile !== undefined) {
    source = `--text-file ${flags.textFile}`;
    text = decode(readFileText(flags.textFile), source);
  } else if (flags.text === '-') {
    source = '--text - (standard input)';
    text = decode(await readStdin(), source);
  } else {
    source = '--text';
    text = flags.text ?? '';
  }
  if (source !== '--text') text = text.replace(/\r?\n$/, '');
  // a post of images alone may have no text, where its network takes that (checked with the channel)
  if (text.trim() === '' && !withImages) throw new CliError(`${source}: the text is empty`);
  if (text.length > MAX_TEXT) throw new CliError(`${source}: the text is ${text.length} characters; the most is ${MAX_TEXT}`);
  return text;
}

/** The most bytes read from a file or stdin: MAX_TEXT characters of 4-byte UTF-8, and a newline. */
const MAX_TEXT_BYTES = MAX_TEXT * 4 + 2;

function readFileText(file: string): Buffer {
  try {
    const size = fs.statSync(file).size;
    if (size > MAX_TEXT_BYTES) throw new CliError(`--text-file ${file}: ${size} bytes is more than ${MAX_TEXT} characters can take`);
    return fs.readFileSync(file);
  } catch (e) {
    if (e instanceof CliError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new CliError(`--text-file ${file}: cannot read it (${code ?? String(e)})`);
  }
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    size += chunk.length;
    if (size > MAX_TEXT_BYTES) {
      process.stdin.destroy();
      throw new CliError(`--text - (standard input): more than ${MAX_TEXT} characters`);
    }
  }
  return Buffer.concat(chunks);
}

function decode(bytes: Buffer, source: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new CliError(`${source}: the text is not valid UTF-8`);
  }
}

export function registerPosts(program: Command, globals: () => GlobalFlags): void {
  program
    .command('schedule')
    .description('schedule one post; prints its id')
    .requiredOption('--channel <name>', 'channel to publish to')
    .option('--text <text>', `the post text, at most ${MAX_TEXT} characters; - reads it from standard input`)
    .option('--text-file <path>', 'read the post text from a UTF-8 file (one trailing newline is dropped)')
    .option('--image <path|url>', 'an image of the post (a file, or an http(s) URL read when it is published); repeatable', collect, [])
    .option('--alt <text>', 'the alt text of the --image of the same rank (default empty); repeatable', collect, [])
    .option('--reply <text>', 'a thread: one more part, replying to the one before; repeatable', collect, [])
    .option('--thread-file <path>', 'a thread from a JSON file: [{"text": "...", "images": [{"source": "...", "alt": "..."}]}, ...]')
    .option('--at <when>', 'now (default), +30s, +5m, +2h, +1d or an ISO-8601 time (UTC when it has no zone); a past time is due now')
    .option('--key <key>', 'your key for this post: scheduling again with the same key returns the same post (never a second one)')
    .action(async (flags: { channel: string; text?: string; textFile?: string; at?: string; key?: string } & ContentFlags) => {
      const config = configFrom(globals());
      const now = new Date();
      const runAt = when(flags.at, now);
      const parts = await postParts(flags);
      await withStore(config, async (store) => {
        let done;
        try {
          done = await schedulePost(
            store,
            { channel: flags.channel, parts, runAt, ...(flags.key === undefined ? {} : { key: flags.key, exactTime: exactTime(flags.at) }) },
            { moduleDir: config.moduleDir },
          );
        } catch (e) {
          if (e instanceof ContentError) throw new CliError(`${flagOf(e.problem.field, flags, e.problem.message)} does not fit channel ${e.channel}: ${e.problem.message}`);
          if (e instanceof OperationError && e.kind === 'not-found') throw new CliError(`${e.message} (see: post-scheduler channels list)`);
          throw e;
        }
        // stdout: only the id, for scripts; the human line goes to stderr
        print(String(done.id));
        for (const w of done.warnings) process.stderr.write(`post-scheduler: warning: ${w}\n`);
        if (!done.created) {
          process.stderr.write(`Post ${done.id} already scheduled with key ${flags.key ?? ''} (nothing new scheduled)\n`);
          return;
        }
        const what = parts.length > 1 ? `thread of ${parts.length} parts` : 'post';
        process.stderr.write(`Scheduled ${what} ${done.id} on ${done.channel.name} for ${runAt.toISOString()} (${describeDue(runAt, now)})\n`);
      });
    });

  program
    .command('simulate')
    .description("the seed's heavy-load test: insert N posts at once")
    .requiredOption('--posts <n>', 'how many posts')
    .requiredOption('--channel <name>', 'channel to publish to')
    .option('--at <when>', 'now (default), +30s, +5m, +2h, +1d or an ISO-8601 time')
    .action(async (flags: { posts: string; channel: string; at?: string }) => {
      const config = configFrom(globals());
      const count = parsePositiveInt(flags.posts, '--posts');
      const runAt = when(flags.at);
      await withStore(config, async (store) => {
        const id = await channelId(store, flags.channel);
        const stamp = runAt.toISOString();
        let made = 0;
        for (let start = 0; start < count; start += 5_000) {
          const chunk = Array.from({ length: Math.min(5_000, count - start) }, (_, i) => ({
            channelId: id,
            text: `Simulated post ${start + i + 1} of ${count} (${stamp})`,
            runAt,
          }));
          made += (await store.schedulePosts(chunk)).length;
        }
        print(`Scheduled ${made} posts on ${flags.channel} at ${stamp}`);
      });
    });

  program
    .command('retry')
    .description('publish again: failed or unknown posts by id, or every failed post (--failed)')
    .argument('[ids...]', 'post ids (failed or unknown)')
    .option('--failed', 'every failed post (never unknown ones: those need an id each)')
    .action(async (ids: string[], flags: { failed?: boolean }) => {
      if ((ids.length === 0) === (flags.failed !== true)) throw new CliError('give either post ids or --failed');
      const config = configFrom(globals());
      const wanted = ids.map(postId);
      await withStore(config, async (store) => {
        if (wanted.length === 0) {
          const done = await store.requeue('allFailed');
          print(`Requeued ${done.length} failed posts`);
          return;
        }
        const done = new Set(await store.requeue(wanted));
        await refuseOthers(store, wanted, done, 'only failed or unknown posts can be retried');
        print(`Requeued ${[...done].map((n) => `post ${n}`).join(', ')}`);
      });
    });

  program
    .command('mark-published')
    .description('an unknown post did go out (you saw it on the platform): record it as published')
    .argument('<ids...>', 'post ids (unknown)')
    .action(async (ids: string[]) => {
      const config = configFrom(globals());
      const wanted = ids.map(postId);
      await withStore(config, async (store) => {
        const done = new Set((await markPublished(store, wanted)).published);
        await refuseOthers(store, wanted, done, 'only posts whose outcome is unknown can be marked published');
        print(`Marked published: ${[...done].map((n) => `post ${n}`).join(', ')}`);
      });
    });

  program
    .command('cancel')
    .description('cancel pending posts, or give up on ones whose outcome is unknown')
    .argument('<ids...>', 'post ids')
    .action(async (ids: string[]) => {
      const config = configFrom(globals());
      const wanted = ids.map(postId);
      await withStore(config, async (store) => {
        const { cancelled } = await cancelPosts(store, wanted);
        await refuseOthers(store, wanted, new Set(cancelled), 'only pending or unknown posts can be cancelled');
        print(`Cancelled ${cancelled.map((n) => `post ${n}`).join(', ')}`);
      });
    });

  registerPostsGroup(program, globals);
}

/** The parts of `schedule`: a thread file, or the text with its images and replies. */
async function postParts(flags: { text?: string; textFile?: string } & ContentFlags): Promise<PostPart[]> {
  if (flags.threadFile === undefined) return partsFromFlags(await postText(flags, flags.image.length > 0), flags, MAX_TEXT);
  const other = [flags.text !== undefined && '--text', flags.textFile !== undefined && '--text-file', flags.reply.length > 0 && '--reply', flags.image.length > 0 && '--image', flags.alt.length > 0 && '--alt'].find(
    (f) => f !== false,
  );
  if (other !== undefined) throw new CliError(`--thread-file gives the whole content: leave out ${other}`);
  return partsFromThreadFile(flags.threadFile, MAX_TEXT);
}
