import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import type { Store } from '../src/store/store.ts';
import type { OnUnknown } from '../src/types.ts';
import { createTestDatabase, STORE_DIALECTS, type TestDatabase } from './helpers/databases.ts';
import { childPids, killAll, processesMatching, run, start, testEnv, waitFor, type Running } from './helpers/processes.ts';
import { startReceiver, type Receiver } from './helpers/receiver.ts';

/**
 * The whole pipeline with real processes: `post-scheduler cron` spawns real worker
 * processes that claim from a real database and POST to a local receiver.
 */
for (const dialect of STORE_DIALECTS) {
  describe(`pipeline on ${dialect}`, () => {
    const cleanups: (() => Promise<void>)[] = [];
    afterEach(async () => {
      killAll();
      for (const c of cleanups.splice(0).reverse()) await c();
    });
    after(() => killAll());

    async function setup(
      posts: number,
      respond?: Parameters<typeof startReceiver>[0],
      onUnknown: OnUnknown = 'retry',
    ): Promise<{ db: TestDatabase; store: Store; receiver: Receiver; ids: number[] }> {
      const db = await createTestDatabase(dialect);
      cleanups.push(() => db.drop());
      const receiver = await startReceiver(respond);
      cleanups.push(() => receiver.close());
      const store = await openStore(parseDatabaseUrl(db.url));
      cleanups.push(() => store.close());
      await store.migrate();
      const channel = await store.addChannel({ name: 'hook', platform: 'webhook', settings: { url: receiver.url }, onUnknown });
      const runAt = new Date(Date.now() - 1_000);
      const ids = await store.schedulePosts(Array.from({ length: posts }, (_, i) => ({ channelId: channel.id, text: `post ${i}`, runAt })));
      return { db, store, receiver, ids };
    }

    /** SIGKILLs the worker process that holds a post in processing (found by its id in the process table). */
    async function killHolder(store: Store, ids: readonly number[], cycle: Running): Promise<void> {
      let holder: string | null = null;
      await waitFor('a post in processing', async () => {
        for (const id of ids) {
          const post = await store.getPost(id);
          if (post?.status === 'processing' && post.workerId !== null) holder = post.workerId;
        }
        return holder !== null;
      });
      const pid = childPids(cycle.child.pid ?? 0).find((p) => processesMatching(`--worker-id ${holder ?? '?'} `).some((l) => l.trim().startsWith(`${p} `)));
      assert.ok(pid !== undefined, `the process of ${holder ?? '?'} is a child of the dispatcher`);
      process.kill(pid, 'SIGKILL');
    }

    it('publishes 500 due posts exactly once with 3 cron cycles started at the same moment', async () => {
      const { db, store, receiver, ids } = await setup(500);
      const env = testEnv(db.url, { RETRY_BASE_MS: '0', RETRY_MAX_MS: '0' });
      // three dispatchers as if on three hosts (one host runs one cycle at a time)
      const results = await Promise.all([1, 2, 3].map((n) => run(['cron'], { ...env, SCHEDULER_HOST: `host-${n}` }, 120_000)));
      for (const r of results) assert.equal(r.code, 0, r.stdout + r.stderr);
      const twice = [...receiver.accepted.entries()].filter(([, n]) => n > 1);
      assert.deepEqual(twice, [], 'no post accepted twice');
      assert.equal(receiver.accepted.size, 500, 'every post delivered');
      assert.equal(receiver.deliveries.length, 500, 'no post sent twice');
      const status = await store.status(5);
      assert.equal(status.counts.published, 500);
      assert.equal(status.counts.duePending + status.counts.processing + status.counts.failed, 0);
      assert.deepEqual(new Set(receiver.deliveries.map((d) => d.postId)), new Set(ids));
    });

    it('gives every worker of a 5-worker cycle on 25 due posts at least one post, cycle after cycle', async () => {
      // publishes that take a while, so a worker that started first could come back for more
      const { db, store, receiver } = await setup(25, () => ({ status: 200, delayMs: 200 }));
      const env = testEnv(db.url, { MAX_WORKERS: '5', BATCH_SIZE: '5', WORKER_CONCURRENCY: '5', LOG_FORMAT: 'json' });
      const [channel] = await store.listChannels();
      assert.ok(channel !== undefined);
      for (let cycle = 1; cycle <= 10; cycle++) {
        const runAt = new Date(Date.now() - 1_000);
        if (cycle > 1) await store.schedulePosts(Array.from({ length: 25 }, (_, i) => ({ channelId: channel.id, text: `cycle ${cycle} post ${i}`, runAt })));
        const r = await run(['cron'], env, 60_000);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        // each worker's last line says how many posts it claimed in all
        const claimed = r.stdout
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as { scope?: string; claimed?: unknown; roundTrips?: unknown })
          .filter((l) => l.scope?.startsWith('WORKER ') === true && typeof l.roundTrips === 'number')
          .map((l) => Number(l.claimed));
        assert.equal(claimed.length, 5, `cycle ${cycle}: five workers reported\n${r.stdout}`);
        assert.ok(
          claimed.every((n) => n >= 1),
          `cycle ${cycle}: every worker claimed at least one post (claims: ${claimed.join(', ')})`,
        );
        assert.equal(
          claimed.reduce((a, b) => a + b, 0),
          25,
          `cycle ${cycle}: the 25 posts claimed once`,
        );
      }
      assert.equal(receiver.deliveries.length, 250, 'every post sent once');
      assert.equal((await store.status(1)).counts.published, 250);
    });

    it('publishes the posts of a worker killed mid-batch in a later cycle, none lost', async () => {
      const { db, store, receiver, ids } = await setup(20, () => ({ status: 200, delayMs: 1_500 }));
      const env = testEnv(db.url, {
        MAX_WORKERS: '2',
        TIMEOUT_MS: '4000',
        WORKER_TIMEOUT_MS: '3500',
        LEASE_MS: '1000',
        KILL_GRACE_MS: '500',
        PUBLISH_TIMEOUT_MS: '3000',
      });
      const cycle = start(['cron'], env, 30_000);
      await waitFor('a worker to send its first posts', () => receiver.deliveries.length >= 1);
      await killHolder(store, ids, cycle);
      const first = await cycle.done;
      assert.equal(first.code, 1, 'a killed worker fails the cycle');
      assert.match(first.stdout, /was killed by SIGKILL/);
      const stranded = (await store.status(1)).counts.processing;
      assert.ok(stranded > 0, 'the killed worker left posts in processing');

      // Once the dead worker's lease (LEASE_MS) has run out, the next cycle takes them back.
      let recovered = false;
      await waitFor(
        'every post to be published',
        async () => {
          const r = await run(['cron'], env, 30_000);
          if (/Recovered \d+ posts whose worker died/.test(r.stdout)) recovered = true;
          return (await store.status(1)).counts.published === 20;
        },
        40_000,
      );
      assert.ok(recovered, 'a cycle logged the recovery');
      for (const id of ids) assert.equal((await store.getPost(id))?.status, 'published', `post ${id}`);
      assert.deepEqual(new Set(receiver.deliveries.map((d) => d.postId)), new Set(ids), 'none lost');
    });

    it('exits 2 when the receiver never answers, leaving no worker process and nothing processing', async () => {
      const { db, store } = await setup(6, () => ({ hang: true }));
      const env = testEnv(db.url, {
        MAX_WORKERS: '2',
        TIMEOUT_MS: '3000',
        WORKER_TIMEOUT_MS: '2000',
        // at most WORKER_TIMEOUT_MS; the worker's budget (from its process start) still runs out first
        PUBLISH_TIMEOUT_MS: '2000',
        KILL_GRACE_MS: '500',
        RETRY_BASE_MS: '60000',
      });
      const r = await run(['cron'], env, 30_000);
      assert.equal(r.code, 2, r.stdout + r.stderr);
      const workerIds = [...r.stdout.matchAll(/Spawning worker: (worker-\d+-[0-9a-f]+-\d+)/g)].map((m) => m[1] ?? '');
      assert.equal(workerIds.length, 2);
      for (const id of workerIds) assert.deepEqual(processesMatching(id), [], `worker ${id} is gone`);
      const status = await store.status(1);
      assert.equal(status.counts.processing, 0);
      assert.equal(status.counts.scheduledLater, 6, 'all 6 returned to pending with a backoff');
      assert.equal(status.cycles[0]?.exitCode, 2);
    });

    it('on SIGTERM stops claiming at once and finishes the posts in flight, touching no other post', async () => {
      const { db, store, receiver, ids } = await setup(10, () => ({ status: 200, delayMs: 800 }));
      const env = testEnv(db.url, { MAX_WORKERS: '1', BATCH_SIZE: '10', WORKER_CONCURRENCY: '2', KILL_GRACE_MS: '4000' });
      const cycle = start(['cron'], env, 30_000);
      await waitFor('the first two posts to be sent', () => receiver.deliveries.length >= 2);
      cycle.child.kill('SIGTERM');
      const r = await cycle.done;
      assert.match(r.stdout, /Published 2 posts successfully/, r.stdout);
      const status = await store.status(1);
      assert.equal(status.counts.processing, 0);
      assert.equal(status.counts.published, 2);
      assert.equal(status.counts.duePending, 8, 'still due now, not after a lease');
      for (const id of ids) {
        const post = await store.getPost(id);
        if (post?.status === 'pending') assert.equal(post.attempts, 0, `post ${id}: no attempt counted`);
      }
      assert.equal(receiver.deliveries.length, 2, 'nothing else was sent');
    });

    it("holds a killed worker's posts as unknown on a hold channel, never resends them, and lets an operator resolve them", async () => {
      const { db, store, receiver, ids } = await setup(4, () => ({ status: 200, delayMs: 1_500 }), 'hold');
      const env = testEnv(db.url, { MAX_WORKERS: '1', TIMEOUT_MS: '4000', WORKER_TIMEOUT_MS: '3500', LEASE_MS: '1000', KILL_GRACE_MS: '500' });
      const cycle = start(['cron'], env, 30_000);
      await waitFor('the worker to send all four', () => receiver.deliveries.length === 4);
      await killHolder(store, ids, cycle);
      assert.equal((await cycle.done).code, 1);
      await new Promise((r) => setTimeout(r, 1_100)); // past the lease
      const next = await run(['cron'], env, 30_000);
      assert.match(next.stdout, /Recovered 4 posts whose worker died \(lease expired\): 0 back to pending, 4 held as unknown/, next.stdout);
      assert.match(next.stdout, /Pending posts: 0/);
      assert.equal(receiver.deliveries.length, 4, 'not sent again');
      const status = await run(['status'], env);
      assert.match(status.stdout, /unknown outcome +4/);
      assert.match(status.stdout, new RegExp(`post ${ids[0] ?? 0} on hook \\(attempts 1\\): lease expired.*may have been published`));

      const [a, b, c, d] = ids.map(String);
      const marked = await run(['mark-published', a ?? '', b ?? ''], env);
      assert.equal(marked.code, 0, marked.stderr);
      assert.equal((await store.getPost(ids[0] ?? 0))?.status, 'published');
      const again = await run(['retry', c ?? ''], env);
      assert.equal(again.code, 0, again.stderr);
      const refused = await run(['mark-published', a ?? ''], env);
      assert.equal(refused.code, 1);
      assert.equal(refused.stderr, `post-scheduler: post ${a ?? ''} is published; only posts whose outcome is unknown can be marked published\n`);
      const cancelled = await run(['cancel', d ?? ''], env);
      assert.equal(cancelled.code, 0, cancelled.stderr);
      assert.equal((await run(['cron'], env, 30_000)).code, 0);
      assert.equal((await store.getPost(ids[2] ?? 0))?.status, 'published', 'sent again by the operator');
      assert.equal(receiver.deliveries.length, 5);
      assert.equal((await store.status(1)).counts.unknown, 0);
    });

    it('holds a post whose request timed out after it was sent on a hold channel, and retries it on a retry channel', async () => {
      const { db, store, receiver, ids } = await setup(2, () => ({ hang: true }), 'hold');
      const retrying = await store.addChannel({ name: 'keyed', platform: 'webhook', settings: { url: receiver.url }, onUnknown: 'retry' });
      const [k] = await store.schedulePosts([{ channelId: retrying.id, text: 'keyed', runAt: new Date(Date.now() - 1_000) }]);
      const env = testEnv(db.url, { PUBLISH_TIMEOUT_MS: '300', RETRY_BASE_MS: '60000', RETRY_MAX_MS: '60000' });
      const r = await run(['cron'], env, 30_000);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /Outcome unknown: +2\n/);
      for (const id of ids) {
        const post = await store.getPost(id);
        assert.equal(post?.status, 'unknown');
        assert.match(post?.lastError ?? '', /outcome unknown: webhook .*no answer within 300 ms after the request was sent/);
      }
      const keyed = await store.getPost(k ?? 0);
      assert.equal(keyed?.status, 'pending', 'retried later with the same idempotency key');
      assert.equal(keyed?.unconfirmed, true);
      assert.equal(receiver.deliveries.length, 3);
    });

    it('holds posts answered 502 or 503 on a hold channel instead of resending them, and retries a 503 where the channel trusts it', async () => {
      const { db, store, receiver, ids } = await setup(2, (d) => ({ status: d.text === 'post 0' ? 502 : 503 }), 'hold');
      const trusting = await store.addChannel({ name: 'trusting', platform: 'webhook', settings: { url: receiver.url, trust_503: true }, onUnknown: 'hold' });
      const [t] = await store.schedulePosts([{ channelId: trusting.id, text: 'trusted', runAt: new Date(Date.now() - 1_000) }]);
      const r = await run(['cron'], testEnv(db.url, { RETRY_BASE_MS: '60000', RETRY_MAX_MS: '60000' }), 30_000);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const gateway = await store.getPost(ids[0] ?? 0);
      assert.equal(gateway?.status, 'unknown', 'a 502 may come after the receiver acted');
      assert.match(gateway?.lastError ?? '', /outcome unknown: webhook .*HTTP 502/);
      const busy = await store.getPost(ids[1] ?? 0);
      assert.equal(busy?.status, 'unknown', 'so may a 503');
      assert.match(busy?.lastError ?? '', /outcome unknown: webhook .*HTTP 503/);
      const trusted = await store.getPost(t ?? 0);
      assert.deepEqual([trusted?.status, trusted?.unconfirmed], ['pending', false], "this receiver's 503 says it did not process it: a plain retry");
      assert.equal(receiver.deliveries.length, 3);
    });

    it('checks a file channel before resending a post whose worker died, and writes each post once', async () => {
      const { db, store } = await setup(0);
      const file = path.join(os.tmpdir(), `post-scheduler-check-${process.pid}-${Date.now()}.jsonl`);
      cleanups.push(async () => fs.promises.rm(file, { force: true }));
      const channel = await store.addChannel({ name: 'journal', platform: 'file', settings: { path: file }, onUnknown: 'check' });
      const [sent, unsent] = await store.schedulePosts(['sent before the crash', 'never sent'].map((text) => ({ channelId: channel.id, text, runAt: new Date(Date.now() - 1_000) })));
      // A worker claims both and dies after writing the first one.
      const claimed = await store.claim('worker-dead', 2, 1);
      const first = claimed.find((p) => p.id === sent);
      fs.writeFileSync(file, JSON.stringify({ id: sent, text: 'sent before the crash', idempotency_key: first?.idempotencyKey }) + '\n');
      await new Promise((r) => setTimeout(r, 20));
      const r = await run(['cron'], testEnv(db.url), 30_000);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /Recovered 2 posts whose worker died \(lease expired\): 2 back to pending/);
      assert.match(r.stdout, new RegExp(`Post ${sent ?? 0} was already published \\(found by lookup on journal\\); not sent again`));
      const lines = fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: number });
      assert.deepEqual(lines.map((l) => l.id).sort((x, y) => x - y), [sent, unsent], 'each post written once');
      assert.equal((await store.getPost(sent ?? 0))?.status, 'published');
      assert.equal((await store.getPost(unsent ?? 0))?.status, 'published');
    });

    it('renews the lease of a publish slower than the lease, so another host cannot take it', async () => {
      const { db, store, receiver, ids } = await setup(1, () => ({ status: 200, delayMs: 2_000 }));
      const env = testEnv(db.url, { LEASE_MS: '600' });
      const slow = start(['cron'], { ...env, SCHEDULER_HOST: 'host-a' }, 30_000);
      await waitFor('the slow publish to start', () => receiver.deliveries.length === 1);
      await new Promise((r) => setTimeout(r, 1_000)); // past the 600 ms lease of the claim
      const other = await run(['cron'], { ...env, SCHEDULER_HOST: 'host-b' }, 30_000);
      assert.doesNotMatch(other.stdout, /Recovered/, 'a live worker keeps its post');
      assert.equal((await slow.done).code, 0);
      assert.equal(receiver.deliveries.length, 1, 'published once');
      assert.equal((await store.getPost(ids[0] ?? 0))?.status, 'published');
    });

    it('keeps the workers of several hosts within GLOBAL_MAX_WORKERS, and publishes everything', async () => {
      const { db, store, receiver } = await setup(30, () => ({ status: 200, delayMs: 300 }));
      const env = testEnv(db.url, { MAX_WORKERS: '3', BATCH_SIZE: '5', GLOBAL_MAX_WORKERS: '2' });
      const results = await Promise.all(['host-a', 'host-b'].map((host) => run(['cron'], { ...env, SCHEDULER_HOST: host }, 60_000)));
      for (const r of results) assert.equal(r.code, 0, r.stdout + r.stderr);
      const spawned = results.map((r) => [...r.stdout.matchAll(/Spawning worker: /g)].length);
      // the first takes both slots; the second finds none free (or, if it came late, nothing due)
      assert.deepEqual([...spawned].sort(), [0, 2], `workers spawned per host: ${spawned.join(', ')}`);
      const second = results[spawned.indexOf(0)]?.stdout ?? '';
      assert.match(second, /Global worker cap 2: 0 of 3 slots free \(other hosts hold the rest\); due posts wait for the next cycle|Pending posts: 0/);
      assert.equal(receiver.accepted.size, 30);
      assert.equal((await store.status(1)).counts.published, 30);
    });

    it('runs one cycle at a time per host, and a killed dispatcher does not block the next', async () => {
      const { db, store } = await setup(4, () => ({ status: 200, delayMs: 1_500 }));
      const env = testEnv(db.url, { SCHEDULER_HOST: 'host-x', MAX_WORKERS: '1', TIMEOUT_MS: '4000', WORKER_TIMEOUT_MS: '3000', KILL_GRACE_MS: '500' });
      const first = start(['cron'], env, 30_000);
      await waitFor('the first cycle to claim', async () => (await store.status(1)).counts.processing > 0);
      const second = await run(['cron'], env, 30_000);
      assert.equal(second.code, 0, second.stdout + second.stderr);
      assert.match(second.stdout, /Previous cycle still running on host-x, exiting/);
      assert.doesNotMatch(second.stdout, /Spawning worker/);

      first.child.kill('SIGKILL');
      await first.done;
      const third = await run(['cron'], env, 30_000);
      assert.equal(third.code, 0, third.stdout + third.stderr);
      assert.doesNotMatch(third.stdout, /Previous cycle still running/, 'the killed dispatcher left no lock behind');
      assert.match(third.stdout, /Dispatch Summary/);
    });

    it('retries on 500 and 429, fails at once on 400, and gives up after MAX_ATTEMPTS', async () => {
      const answers = [500, 429, 400, 200];
      const { db, store, ids } = await setup(4, (d) => ({
        status: answers[Number(/post (\d+)/.exec(d.text)?.[1])] ?? 200,
        headers: answers[Number(/post (\d+)/.exec(d.text)?.[1])] === 429 ? { 'retry-after': '120' } : {},
      }));
      const [p500, p429, p400, p200] = ids;
      const env = testEnv(db.url, { RETRY_BASE_MS: '0', RETRY_MAX_MS: '0', MAX_ATTEMPTS: '2' });
      const first = await run(['cron'], env);
      assert.equal(first.code, 0, first.stdout + first.stderr);
      assert.match(first.stdout, /Posts published: +1\n/);
      assert.match(first.stdout, /Posts to retry: +2\n/);
      assert.match(first.stdout, /Posts failed: +1\n/);
      const after500 = await store.getPost(p500 ?? 0);
      assert.equal(after500?.status, 'pending');
      assert.equal(after500?.attempts, 1);
      assert.match(after500?.lastError ?? '', /HTTP 500/);
      const after429 = await store.getPost(p429 ?? 0);
      assert.equal(after429?.status, 'pending');
      assert.match(after429?.lastError ?? '', /HTTP 429/);
      assert.ok((after429?.runAt.getTime() ?? 0) > Date.now() + 100_000, 'Retry-After: 120 honoured');
      const after400 = await store.getPost(p400 ?? 0);
      assert.equal(after400?.status, 'failed');
      assert.match(after400?.lastError ?? '', /HTTP 400/);
      assert.equal((await store.getPost(p200 ?? 0))?.status, 'published');

      const second = await run(['cron'], env);
      assert.equal(second.code, 0);
      const final500 = await store.getPost(p500 ?? 0);
      assert.equal(final500?.status, 'failed');
      assert.equal(final500?.attempts, 2);
      assert.match(final500?.lastError ?? '', /gave up after 2 attempts: .*HTTP 500/);
    });

    it('fails a bad post alone, with its reason, and publishes the rest of the batch', async () => {
      const { db, store, receiver } = await setup(3);
      const pigeon = await store.addChannel({ name: 'pigeon', platform: 'carrier-pigeon', settings: {}, onUnknown: 'hold' });
      const broken = await store.addChannel({ name: 'broken', platform: 'webhook', settings: { url: 'not a url' }, onUnknown: 'hold' });
      const short = await store.addChannel({ name: 'short', platform: 'webhook', settings: { url: receiver.url, max_length: 3 }, onUnknown: 'hold' });
      const [a, b, c] = await store.schedulePosts([
        { channelId: pigeon.id, text: 'coo', runAt: new Date(Date.now() - 5_000) },
        { channelId: broken.id, text: 'x', runAt: new Date(Date.now() - 5_000) },
        { channelId: short.id, text: 'too long', runAt: new Date(Date.now() - 5_000) },
      ]);
      const r = await run(['cron'], testEnv(db.url));
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match((await store.getPost(a ?? 0))?.lastError ?? '', /unknown platform "carrier-pigeon"/);
      assert.equal((await store.getPost(a ?? 0))?.status, 'failed');
      assert.match((await store.getPost(b ?? 0))?.lastError ?? '', /webhook url must be an http/);
      assert.equal((await store.getPost(b ?? 0))?.status, 'failed');
      assert.match((await store.getPost(c ?? 0))?.lastError ?? '', /channel short: text is 8 characters; the channel takes at most 3/);
      assert.equal((await store.getPost(c ?? 0))?.status, 'failed');
      assert.equal(receiver.accepted.size, 3);
      assert.equal((await store.status(1)).counts.published, 3);
    });

    it('logs "No pending posts, skipping worker spawn" and exits 0 when nothing is due', async () => {
      const { db } = await setup(0);
      const r = await run(['cron'], testEnv(db.url));
      assert.equal(r.code, 0);
      assert.match(r.stdout, /\[DISPATCHER\] Pending posts: 0/);
      assert.match(r.stdout, /\[DISPATCHER\] No pending posts, skipping worker spawn/);
      assert.doesNotMatch(r.stdout, /Spawning worker/);
    });
  });
}
