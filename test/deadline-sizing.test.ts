import assert from 'node:assert/strict';
import { after, afterEach, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import type { Store } from '../src/store/store.ts';
import { createTestDatabase, DIALECTS } from './helpers/databases.ts';
import { killAll, run, start, testEnv, waitFor } from './helpers/processes.ts';
import { startReceiver, type Receiver } from './helpers/receiver.ts';

/**
 * WORKER_SIZING=deadline with real processes: `post-scheduler cron` sizes its workers
 * from the due posts and the publish time its earlier cycles measured, against a local
 * receiver that answers in 200 ms.
 *
 * WORKER_TIMEOUT_MS 20 s and PUBLISH_TIMEOUT_MS 8 s: a worker claims for 12 s (a 10.8 s
 * budget), and 2 s is assumed per post without history: 200 posts are 400 s of publishing
 * at the assumed 2 s, 16 s at 25 in flight, over the budget: the maximum; at the measured
 * ~200 ms (up to ~1 s on a busy machine), 40 s, 1.6 s at 25 in flight: one worker.
 */
const DELAY_MS = 200;
const LIMITS = { WORKER_TIMEOUT_MS: '20000', TIMEOUT_MS: '25000', PUBLISH_TIMEOUT_MS: '8000' };

for (const dialect of DIALECTS) {
  describe(`deadline-aware sizing on ${dialect}`, () => {
    const cleanups: (() => Promise<void>)[] = [];
    afterEach(async () => {
      killAll();
      for (const c of cleanups.splice(0).reverse()) await c();
    });
    after(() => killAll());

    /** A database with a webhook channel to a receiver answering in DELAY_MS that counts the requests open at once. */
    async function setup(): Promise<{ url: string; store: Store; receiver: Receiver; channelId: number; open: { now: number; max: number } }> {
      const db = await createTestDatabase(dialect);
      cleanups.push(() => db.drop());
      const open = { now: 0, max: 0 };
      const receiver = await startReceiver(() => {
        open.now++;
        open.max = Math.max(open.max, open.now);
        setTimeout(() => open.now--, DELAY_MS);
        return { status: 200, delayMs: DELAY_MS };
      });
      cleanups.push(() => receiver.close());
      const store = await openStore(parseDatabaseUrl(db.url));
      cleanups.push(() => store.close());
      await store.migrate();
      const channel = await store.addChannel({ name: 'hook', platform: 'webhook', settings: { url: receiver.url }, onUnknown: 'retry' });
      return { url: db.url, store, receiver, channelId: channel.id, open };
    }

    async function due(store: Store, channelId: number, n: number, tag: string): Promise<number[]> {
      const runAt = new Date(Date.now() - 1_000);
      return store.schedulePosts(Array.from({ length: n }, (_, i) => ({ channelId, text: `${tag} ${i}`, runAt })));
    }

    /** One `cron` cycle; its record and its log. */
    async function cycle(store: Store, env: NodeJS.ProcessEnv): Promise<{ workers: number; stdout: string }> {
      const r = await run(['cron'], env, 60_000);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const [record] = (await store.status(1)).cycles;
      assert.ok(record !== undefined, 'the cycle was recorded');
      return { workers: record.workersSpawned, stdout: r.stdout };
    }

    /** Every post delivered and accepted once, and published. */
    async function assertOnce(store: Store, receiver: Receiver, ids: readonly number[]): Promise<void> {
      for (const id of ids) assert.equal(receiver.accepted.get(id), 1, `post ${id} accepted once`);
      assert.equal(receiver.deliveries.length, receiver.accepted.size, 'no post sent twice');
      for (const id of ids) assert.equal((await store.getPost(id))?.status, 'published', `post ${id}`);
    }

    it('200 due posts at 200 ms, history measured by a first cycle: 1 worker of 25 in flight; seed sizing spawns 5', async () => {
      const { url, store, receiver, channelId, open } = await setup();
      const env = testEnv(url, { ...LIMITS, WORKER_SIZING: 'deadline' });
      // the first cycle measures the channel (without history: 2 s assumed, 25 posts still fit one worker)
      const history = await due(store, channelId, 25, 'history');
      const first = await cycle(store, env);
      assert.equal(first.workers, 1, first.stdout);
      assert.match(first.stdout, /Sizing \(deadline\): 25 due, est\. 50\.0 s of publishing at 2000 ms\/post \(1 channel without history taken at 2000 ms\/post\) -> 1 worker x 25 in flight/);

      const ids = await due(store, channelId, 200, 'post');
      open.max = 0;
      const second = await cycle(store, env);
      assert.equal(second.workers, 1, second.stdout);
      assert.match(second.stdout, /Sizing \(deadline\): 200 due, est\. \d+\.\d s of publishing at \d+ ms\/post -> 1 worker x 25 in flight \(clears in ~\d+\.\d s of the \d+ s budget\)/);
      assert.match(second.stdout, /Workers spawned: +1\n/);
      assert.match(second.stdout, /Posts published: +200\n/);
      assert.ok(open.max > 5, `one worker had ${open.max} requests open at once, more than WORKER_CONCURRENCY (5)`);
      await assertOnce(store, receiver, [...history, ...ids]);

      // the seed's formula on the same: ceil(200 / 5), at most MAX_WORKERS
      const seedIds = await due(store, channelId, 200, 'seed');
      const seed = await cycle(store, testEnv(url, { ...LIMITS, WORKER_SIZING: 'seed' }));
      assert.equal(seed.workers, 5, seed.stdout);
      assert.match(seed.stdout, /Calculated worker count: 5 \(pending=200, batch=5, max=5\)/);
      await assertOnce(store, receiver, seedIds);
    });

    it('daemon --precise sizes the workers it starts ahead the same way: 1 worker of 25 for 200 posts at 200 ms, 5 with the seed sizing', async () => {
      const { url, store, receiver, channelId, open } = await setup();
      // the channel's history: a first cron cycle measures it
      const history = await due(store, channelId, 25, 'history');
      await cycle(store, testEnv(url, { ...LIMITS, WORKER_SIZING: 'deadline' }));

      /** 200 posts due a few seconds ahead, sent by a daemon --precise; its log once they are published. */
      async function precise(sizing: 'deadline' | 'seed', tag: string): Promise<{ ids: number[]; stdout: string }> {
        const runAt = new Date(Date.now() + 4_000);
        const ids = await store.schedulePosts(Array.from({ length: 200 }, (_, i) => ({ channelId, text: `${tag} ${i}`, runAt })));
        const d = start(['daemon', '--precise'], testEnv(url, { ...LIMITS, WORKER_SIZING: sizing, WORKER_IDLE_MS: '1000' }), 60_000);
        await waitFor('the 200 posts published', async () => (await store.status(1)).counts.published >= history.length + ids.length + (tag === 'seed' ? 200 : 0), 40_000);
        await waitFor('the batch reported', () => /Dispatch Summary:/.test(d.output()), 10_000);
        d.child.kill('SIGTERM');
        const r = await d.done;
        assert.equal(r.code, 0, r.stdout + r.stderr);
        return { ids, stdout: r.stdout };
      }

      open.max = 0;
      const deadline = await precise('deadline', 'deadline');
      assert.match(deadline.stdout, /Pending posts: 200 \(due by then or within 1000ms after\)/);
      assert.match(
        deadline.stdout,
        /\[DISPATCHER\] Sizing \(deadline\): 200 due, est\. \d+\.\d s of publishing at \d+ ms\/post -> 1 worker x 25 in flight \(clears in ~\d+\.\d s of the \d+ s budget\)/,
      );
      assert.equal((deadline.stdout.match(/Spawning worker: /g) ?? []).length, 1, deadline.stdout);
      assert.ok(open.max > 5, `the one worker had ${open.max} requests open at once, more than WORKER_CONCURRENCY (5)`);
      assert.doesNotMatch(deadline.stdout, /does not apply/);
      await assertOnce(store, receiver, [...history, ...deadline.ids]);

      const seed = await precise('seed', 'seed');
      assert.match(seed.stdout, /\[DISPATCHER\] Calculated worker count: 5 \(pending=200, batch=5, max=5\)/);
      assert.equal((seed.stdout.match(/Spawning worker: /g) ?? []).length, 5, seed.stdout);
      await assertOnce(store, receiver, [...history, ...deadline.ids, ...seed.ids]);
    });

    it('without history the same 200 posts are assumed slow: the maximum, five workers of five', async () => {
      const { url, store, receiver, channelId } = await setup();
      const ids = await due(store, channelId, 200, 'post');
      const r = await cycle(store, testEnv(url, { ...LIMITS, WORKER_SIZING: 'deadline' }));
      assert.equal(r.workers, 5, r.stdout);
      assert.match(
        r.stdout,
        /Sizing \(deadline\): 200 due, est\. 400\.0 s of publishing at 2000 ms\/post \(1 channel without history taken at 2000 ms\/post\) -> 5 workers x 5 in flight \(does not clear/,
      );
      await assertOnce(store, receiver, ids);
    });
  });
}
