import type { Command } from 'commander';
import { parseWhen, WhenError } from '../when.ts';
import { loadPublisherModule } from '../publishers/registry.ts';
import type { Store } from '../store/store.ts';
import type { Channel } from '../types.ts';
import { CliError, configFrom, parsePositiveInt, print, withStore, type GlobalFlags } from './context.ts';

const MAX_TEXT = 100_000;

async function findChannel(store: Store, name: string): Promise<Channel> {
  const channel = await store.findChannel(name);
  if (channel === null) throw new CliError(`no channel named "${name}" (see: post-scheduler channels list)`);
  return channel;
}

async function channelId(store: Store, name: string): Promise<number> {
  return (await findChannel(store, name)).id;
}

function when(value: string | undefined): Date {
  try {
    return parseWhen(value ?? 'now');
  } catch (e) {
    throw new CliError(e instanceof WhenError ? e.message : String(e));
  }
}

function postId(value: string): number {
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

export function registerPosts(program: Command, globals: () => GlobalFlags): void {
  program
    .command('schedule')
    .description('schedule one post; prints its id')
    .requiredOption('--channel <name>', 'channel to publish to')
    .requiredOption('--text <text>', 'the post text')
    .option('--at <when>', 'now (default), +30s, +5m, +2h, +1d or an ISO-8601 time')
    .action(async (flags: { channel: string; text: string; at?: string }) => {
      const config = configFrom(globals());
      const runAt = when(flags.at);
      if (flags.text.trim() === '') throw new CliError('--text must not be empty');
      if (flags.text.length > MAX_TEXT) throw new CliError(`--text is ${flags.text.length} characters; the most is ${MAX_TEXT}`);
      await withStore(config, async (store) => {
        const channel = await findChannel(store, flags.channel);
        const problem = (await loadPublisherModule(channel.platform))?.checkText(flags.text, channel.settings) ?? null;
        if (problem !== null) throw new CliError(`--text does not fit channel ${channel.name}: ${problem}`);
        const [id] = await store.schedulePosts([{ channelId: channel.id, text: flags.text, runAt }]);
        print(String(id));
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
        const done = new Set(await store.confirmPublished(wanted));
        await refuseOthers(store, wanted, done, 'only posts whose outcome is unknown can be marked published');
        print(`Marked published: ${[...done].map((n) => `post ${n}`).join(', ')}`);
      });
    });

  program
    .command('cancel')
    .description('cancel a pending post, or give up on one whose outcome is unknown')
    .argument('<id>', 'post id')
    .action(async (id: string) => {
      const config = configFrom(globals());
      const n = postId(id);
      await withStore(config, async (store) => {
        const result = await store.cancel(n);
        if (result.status === null) throw new CliError(`no post with id ${n}`);
        if (!result.cancelled) throw new CliError(`post ${n} is ${result.status}; only pending or unknown posts can be cancelled`);
        print(`Cancelled post ${n}`);
      });
    });
}
