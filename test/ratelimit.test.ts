import assert from 'node:assert/strict';
import { after, afterEach, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import { createTestDatabase, DIALECTS } from './helpers/databases.ts';
import { startDiscord } from './helpers/fake-discord.ts';
import { startMastodon, TOKEN, type FakeMastodon } from './helpers/fake-mastodon.ts';
import { killAll, run, testEnv } from './helpers/processes.ts';

/**
 * Rate limits across worker processes, on each database: a Mastodon channel limited to
 * N posts per window, five workers, the fake instance timestamping every status it
 * receives. No window of that length ever holds more than N of them, every post is
 * published once, and the waits do not use up attempts. A 429 with Retry-After pauses
 * the channel for every worker until the time it gave.
 */
for (const dialect of DIALECTS) {
  describe(`rate limits across workers (${dialect}, real processes)`, () => {
    const cleanups: (() => Promise<void>)[] = [];
    afterEach(async () => {
      killAll();
      for (const c of cleanups.splice(0).reverse()) await c();
    });
    after(() => killAll());

    async function setup(rateLimit: string | null): Promise<{ env: NodeJS.ProcessEnv; masto: FakeMastodon; url: string }> {
      const db = await createTestDatabase(dialect);
      cleanups.push(() => db.drop());
      const masto = await startMastodon();
      cleanups.push(() => masto.close());
      // five workers of three posts each, retries of real failures far away (none expected)
      const env = testEnv(db.url, { MASTO: JSON.stringify({ access_token: TOKEN }), MIN_WORKERS: '5', MAX_WORKERS: '5', BATCH_SIZE: '3', RETRY_BASE_MS: '60000', RETRY_MAX_MS: '60000' });
      const add = await run(
        ['channels', 'add', '--name', 'masto', '--platform', 'mastodon', '--set', `instance=${masto.url}`, '--allow-private-network', '--credentials-from', 'env:MASTO', '--no-verify',
          ...(rateLimit === null ? [] : ['--rate-limit', rateLimit])],
        env,
      );
      assert.equal(add.code, 0, add.stderr);
      return { env, masto, url: db.url };
    }

    /** runs cron cycles until `count` statuses arrived (a post delayed past a cycle is due in a later one) */
    async function cycleUntil(env: NodeJS.ProcessEnv, masto: FakeMastodon, count: number): Promise<void> {
      const giveUpAt = Date.now() + 40_000;
      while (masto.statuses.length < count) {
        assert.ok(Date.now() < giveUpAt, `only ${masto.statuses.length} of ${count} published`);
        const cycle = await run(['cron'], env, 30_000);
        assert.equal(cycle.code, 0, cycle.stdout + cycle.stderr);
        if (masto.statuses.length < count) await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }

    async function attemptsOf(url: string, ids: readonly number[]): Promise<(string | number | undefined)[][]> {
      const store = await openStore(parseDatabaseUrl(url));
      try {
        return await Promise.all(ids.map(async (id) => {
          const p = await store.getPost(id);
          return [p?.status, p?.attempts];
        }));
      } finally {
        await store.close();
      }
    }

    it('five workers never send more than N statuses in any window, and every post is published once, its attempts unused by the waits', async () => {
      const N = 5;
      const WINDOW_MS = 4_000;
      const POSTS = 3 * N;
      const { env, masto, url } = await setup(`${N}/4s`);
      const list = await run(['channels', 'list'], env);
      assert.match(list.stdout, /5\/4s posts, 300\/5m requests/, list.stdout);
      // scheduled in one go (the CLI schedules one post per process)
      const store = await openStore(parseDatabaseUrl(url));
      try {
        const channel = await store.findChannel('masto');
        assert.ok(channel !== null);
        await store.schedulePosts(Array.from({ length: POSTS }, (_, i) => ({ channelId: channel.id, text: `post ${i + 1}`, runAt: new Date() })));
      } finally {
        await store.close();
      }
      await cycleUntil(env, masto, POSTS);

      assert.equal(masto.statuses.length, POSTS);
      assert.equal(new Set(masto.statuses.map((s) => s.content)).size, POSTS, 'each post once');
      const t = [...masto.arrivals].sort((a, b) => a - b);
      assert.equal(t.length, POSTS, 'no call beyond one per post');
      // a window of WINDOW_MS holding N+1 arrivals would have t[i+N] - t[i] < WINDOW_MS
      for (let i = 0; i + N < t.length; i++) {
        const a = t[i] ?? 0;
        const b = t[i + N] ?? 0;
        assert.ok(b - a >= WINDOW_MS, `arrivals ${i} and ${i + N} only ${b - a} ms apart: ${N + 1} in one ${WINDOW_MS} ms window`);
      }
      const posts = await attemptsOf(url, Array.from({ length: POSTS }, (_, i) => i + 1));
      assert.deepEqual(posts, posts.map(() => ['published', 1]), 'published on the first counted attempt');
    });

    it('a platform that takes one send at a time (discord) gets one at a time from five workers', async () => {
      const db = await createTestDatabase(dialect);
      cleanups.push(() => db.drop());
      const discord = await startDiscord();
      cleanups.push(() => discord.close());
      discord.answerDelayMs = 150;
      const env = testEnv(db.url, { HOOK: JSON.stringify({ webhook_url: discord.webhookUrl }), MIN_WORKERS: '5', MAX_WORKERS: '5', BATCH_SIZE: '2', RETRY_BASE_MS: '60000', RETRY_MAX_MS: '60000' });
      const add = await run(['channels', 'add', '--name', 'dc', '--platform', 'discord', '--allow-private-network', '--credentials-from', 'env:HOOK', '--no-verify'], env);
      assert.equal(add.code, 0, add.stderr);
      assert.match((await run(['channels', 'list'], env)).stdout, /30\/1m posts, 5\/2s requests, 1 at once/);
      const store = await openStore(parseDatabaseUrl(db.url));
      try {
        const channel = await store.findChannel('dc');
        assert.ok(channel !== null);
        await store.schedulePosts(Array.from({ length: 6 }, (_, i) => ({ channelId: channel.id, text: `message ${i + 1}`, runAt: new Date() })));
      } finally {
        await store.close();
      }
      const giveUpAt = Date.now() + 40_000;
      while (discord.messages.length < 6) {
        assert.ok(Date.now() < giveUpAt, `only ${discord.messages.length} of 6 sent`);
        const cycle = await run(['cron'], env, 30_000);
        assert.equal(cycle.code, 0, cycle.stdout + cycle.stderr);
      }
      assert.equal(discord.messages.length, 6);
      assert.equal(discord.maxInFlight, 1, 'never two executes of the webhook at once');
      assert.deepEqual(await attemptsOf(db.url, [1, 2, 3, 4, 5, 6]), Array.from({ length: 6 }, () => ['published', 1]));
    });

    it('channels update --rate-limit replaces the posts limit, and "default" gives back the platform\'s own', async () => {
      const { env } = await setup(null);
      const list = async () => (await run(['channels', 'list', '--json'], env)).stdout;
      assert.match(await list(), /"rateLimits": "300\/3h posts, 300\/5m requests"/);
      const set = await run(['channels', 'update', '--name', 'masto', '--rate-limit', '30/90s'], env);
      assert.equal(set.code, 0, set.stderr);
      assert.match(set.stdout, /Channel masto: rate limit 30\/90s posts, 300\/5m requests/);
      assert.match(await list(), /"rate_limit": "30\/90s"/);
      const reset = await run(['channels', 'update', '--name', 'masto', '--rate-limit', 'default'], env);
      assert.match(reset.stdout, /Channel masto: rate limit 300\/3h posts, 300\/5m requests/);
      assert.doesNotMatch(await list(), /rate_limit/);
    });

    it('a 429 with Retry-After pauses the channel for every worker until then; the post is published with its attempts kept', async () => {
      const { env, masto, url } = await setup(null);
      masto.overrides.push({ kind: 'answer', status: 429, body: '{"error":"Too many requests"}', headers: { 'retry-after': '2' } });
      assert.equal((await run(['schedule', '--channel', 'masto', '--text', 'first'], env)).code, 0);
      const first = await run(['cron'], env, 30_000);
      assert.equal(first.code, 0, first.stderr);
      assert.equal(masto.arrivals.length, 1);
      assert.equal(masto.statuses.length, 0);
      const status = await run(['status'], env);
      assert.match(status.stdout, /Paused by a rate limit[\s\S]*masto until \S+: mastodon .*rate limited \(HTTP 429\)/, status.stdout);
      // another post of the channel, due now: it waits for the pause too
      assert.equal((await run(['schedule', '--channel', 'masto', '--text', 'second'], env)).code, 0);
      await cycleUntil(env, masto, 2);

      const [refused = 0, ...later] = masto.arrivals;
      assert.equal(later.length, 2);
      for (const at of later) assert.ok(at - refused >= 2_000, `a status arrived ${at - refused} ms after the 429 that asked for 2 s`);
      assert.deepEqual(await attemptsOf(url, [1, 2]), [['published', 1], ['published', 1]]);
    });
  });
}
