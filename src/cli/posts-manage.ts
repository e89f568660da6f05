import type { Command } from 'commander';
import { describeDue } from '../when.ts';
import { ContentError, editPost, listPosts, showPost } from '../operations/posts.ts';
import { OperationError } from '../operations/errors.ts';
import { POST_STATUSES, type PostStatus } from '../types.ts';
import { CliError, configFrom, operation, parsePositiveInt, print, withStore, type GlobalFlags } from './context.ts';
import { MAX_LIST, type ListInput } from '../operations/posts.ts';
import { postId, postText, when } from './posts.ts';

/** `posts list | show | edit`: reading and changing scheduled posts. */
export function registerPostsGroup(program: Command, globals: () => GlobalFlags): void {
  const posts = program.command('posts').description('list, show and edit posts');

  posts
    .command('list')
    .description('list posts (filters combine); prints the cursor of the next page')
    .option('--status <status>', `only these statuses, comma-separated: ${POST_STATUSES.join(', ')}`)
    .option('--channel <name>', "only this channel's posts")
    .option('--from <when>', 'only posts due at or after this time (+2h, an ISO time, ...)')
    .option('--to <when>', 'only posts due before this time')
    .option('--order <order>', 'next (soonest first, default) or newest (latest first)')
    .option('--limit <n>', `posts per page, 1 to ${MAX_LIST} (default 50)`)
    .option('--cursor <cursor>', 'the next page: the cursor the page before printed')
    .option('--json', 'one JSON object: {"posts": [...], "next": cursor or null}')
    .action(async (flags: { status?: string; channel?: string; from?: string; to?: string; order?: string; limit?: string; cursor?: string; json?: boolean }) => {
      const config = configFrom(globals());
      const statuses = flags.status?.split(',').map((x) => x.trim());
      const bad = statuses?.find((x) => !(POST_STATUSES as readonly string[]).includes(x));
      if (bad !== undefined) throw new CliError(`invalid --status "${bad}": use ${POST_STATUSES.join(', ')}`);
      if (flags.order !== undefined && flags.order !== 'next' && flags.order !== 'newest') throw new CliError(`invalid --order "${flags.order}": use next or newest`);
      const order = flags.order === 'newest' ? 'newest' : flags.order === 'next' ? 'next' : undefined;
      const now = new Date();
      const input: ListInput = {
        ...(statuses === undefined ? {} : { statuses: statuses as PostStatus[] }),
        ...(flags.channel === undefined ? {} : { channel: flags.channel }),
        ...(flags.from === undefined ? {} : { from: when(flags.from, now) }),
        ...(flags.to === undefined ? {} : { to: when(flags.to, now) }),
        ...(order === undefined ? {} : { order }),
        ...(flags.limit === undefined ? {} : { limit: parsePositiveInt(flags.limit, '--limit', MAX_LIST) }),
        ...(flags.cursor === undefined ? {} : { cursor: flags.cursor }),
      };
      await withStore(config, async (store) => {
        const page = await operation(() => listPosts(store, input));
        if (flags.json === true) {
          print(JSON.stringify(page, null, 2));
          return;
        }
        if (page.posts.length === 0) {
          print('No posts match.');
          return;
        }
        print(`${'id'.padEnd(8)}${'status'.padEnd(11)}${'channel'.padEnd(20)}${'run_at'.padEnd(26)}${'tries'.padEnd(6)}${'text'.padEnd(42)}url`);
        for (const p of page.posts) {
          const line = (p.text.split('\n')[0] ?? '').replace(/\s+/g, ' ');
          const text = line.length > 40 ? `${line.slice(0, 39)}…` : line;
          print(
            `${String(p.id).padEnd(8)}${p.status.padEnd(11)}${(p.channel ?? '(none)').slice(0, 19).padEnd(20)}${p.runAt.toISOString().padEnd(26)}${String(p.attempts).padEnd(6)}${text.padEnd(42)}${p.externalUrl ?? ''}`,
          );
        }
        if (page.next !== null) print(`More: --cursor ${page.next}`);
      });
    });

  posts
    .command('show')
    .description("one post: its content, state, every attempt's time, outcome and error, where it was published")
    .argument('<id>', 'post id')
    .option('--json', 'one JSON object')
    .action(async (id: string, flags: { json?: boolean }) => {
      const config = configFrom(globals());
      const n = postId(id);
      await withStore(config, async (store) => {
        const { post, channel, attempts } = await operation(() => showPost(store, n));
        if (flags.json === true) {
          // the idempotency key is the platform's, not for show
          print(JSON.stringify({ ...post, idempotencyKey: undefined, channel, attempts }, null, 2));
          return;
        }
        print(`Post ${post.id} on ${channel ?? '(no channel)'}: ${post.status}`);
        print(`  scheduled for ${post.scheduledAt.toISOString()}, run_at ${post.runAt.toISOString()} (${describeDue(post.runAt, new Date())})`);
        print(`  attempts: ${post.attempts}${post.scheduleKey != null ? `, key ${post.scheduleKey}` : ''}`);
        if (post.publishedAt !== null) print(`  published at ${post.publishedAt.toISOString()}`);
        if (post.externalId !== null || post.externalUrl !== null) print(`  external id ${post.externalId ?? '-'}, url ${post.externalUrl ?? '-'}`);
        if (post.lastError !== null && post.status !== 'published') print(`  last error: ${post.lastError}`);
        post.parts.forEach((part, i) => {
          const label = post.parts.length > 1 ? `  part ${i + 1}: ` : '  text: ';
          print(`${label}${part.text}${part.images.length > 0 ? ` [${part.images.length} image(s)]` : ''}`);
        });
        if (attempts.length === 0) print('  no attempt ended yet');
        for (const a of attempts) {
          const took = a.startedAt === null ? '' : ` (${a.finishedAt.getTime() - a.startedAt.getTime()} ms)`;
          const what = a.outcome === 'published' ? `published${a.externalUrl === null ? '' : ` ${a.externalUrl}`}` : `${a.outcome}${a.reason === null ? '' : ` (${a.reason})`}${a.error === null ? '' : `: ${a.error}`}`;
          print(`  attempt ${a.attempt} at ${a.finishedAt.toISOString()}${took} by ${a.workerId ?? '?'}: ${what}`);
        }
      });
    });

  posts
    .command('edit')
    .description("change a pending post's text (a thread's first part) or time")
    .argument('<id>', 'post id')
    .option('--text <text>', 'the new text; - reads it from standard input')
    .option('--text-file <path>', 'the new text from a UTF-8 file')
    .option('--at <when>', 'the new time: +30s, +5m, +2h, +1d or an ISO-8601 time')
    .action(async (id: string, flags: { text?: string; textFile?: string; at?: string }) => {
      const config = configFrom(globals());
      const n = postId(id);
      const hasText = flags.text !== undefined || flags.textFile !== undefined;
      if (!hasText && flags.at === undefined) throw new CliError('nothing to change: give --text, --text-file or --at');
      const text = hasText ? await postText(flags) : undefined;
      const runAt = flags.at === undefined ? undefined : when(flags.at);
      await withStore(config, async (store) => {
        let post;
        try {
          post = await editPost(store, n, { ...(text === undefined ? {} : { text }), ...(runAt === undefined ? {} : { runAt }) }, { moduleDir: config.moduleDir, mediaDir: config.mediaDir });
        } catch (e) {
          if (e instanceof ContentError) throw new CliError(`--text does not fit channel ${e.channel}: ${e.problem.message}`);
          if (e instanceof OperationError) throw new CliError(e.message);
          throw e;
        }
        print(`Edited post ${post.id}: due ${post.runAt.toISOString()}`);
      });
    });
}
