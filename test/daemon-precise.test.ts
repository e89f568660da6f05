import assert from 'node:assert/strict';
import { after, afterEach, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import type { Store } from '../src/store/store.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './helpers/databases.ts';
import { childPids, killAll, run, start, testEnv, waitFor, type Running } from './helpers/processes.ts';
import { startReceiver, type Answer, type Receiver } from './helpers/receiver.ts';
import { startTcpProxy } from './helpers/tcp-proxy.ts';
import Database from 'better-sqlite3';
import postgres from 'postgres';

/**
 * `daemon --precise` as a user runs it: a real daemon process, its resident workers,
 * a webhook receiver on 127.0.0.1 that notes when each post arrives. Correctness, not
 * speed: each post once, never before its run_at, and within a generous bound after it.
 */
/** The two clocks are the same machine's; a post's run_at is stored to the millisecond. */
const EARLY_TOLERANCE_MS = 20;
/** "on time" for a test on a loaded 2-core machine (the bench measures the real lateness) */
const LATE_BOUND_MS = 2_000;

for (const dialect of DIALECTS) {
  describe(`daemon --precise (${dialect})`, () => {
    const cleanups: (() => Promise<void>)[] = [];
    afterEach(async () => {
      killAll();
      for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
    });
    after(() => killAll());

    async function setup(answer: (d: { postId: number }) => Answer = () => ({ status: 200 })) {
      const db: TestDatabase = await createTestDatabase(dialect);
      cleanups.push(() => db.drop());
      const store: Store = await openStore(parseDatabaseUrl(db.url));
      cleanups.push(() => store.close());
      await store.migrate();
      const arrivals = new Map<number, number[]>();
      const receiver: Receiver = await startReceiver((d) => {
        arrivals.set(d.postId, [...(arrivals.get(d.postId) ?? []), Date.now()]);
        return answer(d);
      });
      cleanups.push(() => receiver.close());
      const channel = await store.addChannel({ name: 'hook', platform: 'webhook', settings: { url: receiver.url }, onUnknown: 'retry' });
      const schedule = async (runAt: number): Promise<number> => {
        const [id] = await store.schedulePosts([{ channelId: channel.id, text: `at ${runAt}`, runAt: new Date(runAt) }]);
        assert.ok(id !== undefined);
        return id;
      };
      return { db, store, receiver, arrivals, schedule };
    }

    function daemon(url: string, extra: Record<string, string> = {}): Running {
      const env = testEnv(url, { WORKER_IDLE_MS: '1000', MAX_WORKERS: '2', BATCH_SIZE: '5', LEASE_MS: '3000', KILL_GRACE_MS: '3000', ...extra });
      return start(['daemon', '--precise'], env, 90_000);
    }

    it('sends each post once at its time: scheduled while it sleeps on a later one, moved earlier by an edit; idle, it holds no worker', async () => {
      const { db, store, arrivals, schedule } = await setup();
      const d = daemon(db.url);
      await waitFor('the daemon to sleep', () => d.output().includes('No post pending'), 20_000);

      // it sleeps on a post a minute away...
      const far = await schedule(Date.now() + 60_000);
      await waitFor('the far post to be seen', () => d.output().includes('(in 5') || d.output().includes('(in 6'), 10_000);
      // ...when posts are scheduled for the next seconds (random milliseconds)
      const base = Date.now();
      const due = new Map<number, number>();
      for (let i = 0; i < 5; i++) {
        const at = base + 1_500 + i * 600 + Math.floor(Math.random() * 400);
        due.set(await schedule(at), at);
      }
      // and one scheduled late, moved earlier by an edit
      const moved = await schedule(Date.now() + 45_000);
      const movedAt = Date.now() + 2_700 + Math.floor(Math.random() * 300);
      assert.equal((await store.editPost(moved, { runAt: new Date(movedAt) })).edited, true);
      due.set(moved, movedAt);

      await waitFor('every post due to be received', () => [...due.keys()].every((id) => arrivals.has(id)), 30_000);
      for (const [id, at] of due) {
        const got = arrivals.get(id) ?? [];
        assert.equal(got.length, 1, `post ${id} received once`);
        const lateness = (got[0] ?? 0) - at;
        assert.ok(lateness >= -EARLY_TOLERANCE_MS, `post ${id} not before its run_at (${lateness} ms)`);
        assert.ok(lateness <= LATE_BOUND_MS, `post ${id} within ${LATE_BOUND_MS} ms of its run_at (${lateness} ms)`);
      }
      assert.equal(arrivals.has(far), false, 'the far post waits for its time');

      // idle: the workers leave after WORKER_IDLE_MS; the daemon alone remains
      const pid = d.child.pid ?? 0;
      await waitFor('no worker process left', () => childPids(pid).length === 0, 15_000);
      assert.equal(d.child.exitCode, null, 'the daemon stays');

      // status shows the batches as cycles, their posts published
      const s = await store.status(20);
      assert.equal(s.counts.published, due.size);
      assert.ok(s.cycles.length >= 1);
      assert.equal(
        s.cycles.reduce((n, c) => n + c.workersSpawned, 0) >= 1,
        true,
      );

      d.child.kill('SIGTERM');
      const r = await d.done;
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /\[CRON\] Precise scheduler stopped/);
      assert.match(r.stdout, /\[DISPATCHER\] Dispatch cycle started at .+ \(precise: posts due at /);
      assert.match(r.stdout, /\[WORKER worker-\d+-[0-9a-f]+-\d\] Ready, waiting for the due time/);
    });

    it('SIGTERM mid-batch: posts in flight finish, the rest stay pending; nothing lost or sent twice', async () => {
      const { db, store, receiver, schedule } = await setup(() => ({ status: 200, delayMs: 400 }));
      const at = Date.now() + 2_000;
      const ids: number[] = [];
      for (let i = 0; i < 20; i++) ids.push(await schedule(at + i));
      const d = daemon(db.url);
      await waitFor('the first posts in flight', () => receiver.deliveries.length >= 2, 20_000);
      d.child.kill('SIGTERM');
      const r = await d.done;
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /Stop requested, stopping \d workers/);
      const s = await store.status(5);
      assert.equal(s.counts.processing, 0, 'nothing left processing');
      assert.equal(s.counts.published + s.counts.duePending + s.counts.scheduledLater, ids.length);
      assert.ok(s.counts.duePending > 0, 'the rest were not claimed');

      // a new daemon sends the rest
      const again = daemon(db.url);
      await waitFor('every post published', async () => (await store.status(1)).counts.published === ids.length, 30_000);
      again.child.kill('SIGTERM');
      assert.equal((await again.done).code, 0);
      assert.deepEqual([...receiver.accepted.keys()].sort((a, b) => a - b), ids, 'every post delivered');
      assert.deepEqual([...receiver.accepted.values()].filter((n) => n > 1), [], 'none twice');
    });

    it('GLOBAL_MAX_WORKERS with resident workers: waiting residents keep their slots, never more than the cap', async () => {
      const { db, arrivals, schedule } = await setup();
      // a long WORKER_IDLE_MS: the residents wait, their slots renewed by the daemon past LEASE_MS
      const d = daemon(db.url, { GLOBAL_MAX_WORKERS: '1', MAX_WORKERS: '2', WORKER_IDLE_MS: '60000' });
      await waitFor('the daemon to sleep', () => d.output().includes('No post pending'), 20_000);
      const at = Date.now() + 1_500;
      const ids: number[] = [];
      for (let i = 0; i < 10; i++) ids.push(await schedule(at + i));
      await waitFor('every post received', () => ids.every((id) => arrivals.has(id)), 30_000);
      const pid = d.child.pid ?? 0;
      // past twice LEASE_MS (3 s): a slot not renewed would have expired
      const until = Date.now() + 7_000;
      let samples = 0;
      while (Date.now() < until) {
        const before = childPids(pid).length;
        const slots = await liveSlots(db.url);
        const after = childPids(pid).length;
        assert.ok(slots <= 1, `${slots} live slots: at most GLOBAL_MAX_WORKERS=1`);
        assert.ok(Math.max(before, after) <= 1, `${Math.max(before, after)} worker processes: at most GLOBAL_MAX_WORKERS=1`);
        if (before === 1 && after === 1) {
          assert.equal(slots, 1, 'the waiting resident holds a live slot');
          samples++;
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      assert.ok(samples > 0, 'a resident was seen waiting');
      d.child.kill('SIGTERM');
      assert.equal((await d.done).code, 0);
    });

    it('a resident worker keeps its publishers across batches: one keep-alive connection for several batches', async () => {
      const { db, receiver, arrivals, schedule } = await setup();
      // one worker, staying: every batch is its
      const d = daemon(db.url, { MAX_WORKERS: '1', WORKER_IDLE_MS: '20000' });
      await waitFor('the daemon to sleep', () => d.output().includes('No post pending'), 20_000);
      // due 300 ms apart: a batch each (an idle pooled socket stays IDLE_SOCKET_MS, 1 s)
      const base = Date.now() + 2_000;
      const ids: number[] = [];
      for (let i = 0; i < 5; i++) ids.push(await schedule(base + i * 300));
      await waitFor('every post received', () => ids.every((id) => arrivals.has(id)), 30_000);
      const count = (re: RegExp) => (d.output().match(re) ?? []).length;
      await waitFor('their batches reported', () => count(/Dispatch Summary:/g) === count(/Dispatch cycle started at/g), 10_000);
      assert.ok(count(/Dispatch cycle started at/g) >= 3, `several batches: ${count(/Dispatch cycle started at/g)}`);
      assert.equal(count(/Spawning worker: /g), 1, 'one resident worker');
      assert.equal(receiver.connections, 1, `${receiver.connections} connections for ${ids.length} posts in several batches`);
      assert.deepEqual(ids.filter((id) => arrivals.get(id)?.length !== 1), [], 'each post once');
      d.child.kill('SIGTERM');
      assert.equal((await d.done).code, 0);
    });

    it('a resident whose heap is over WORKER_MAX_HEAP_MB after a batch is told to exit, and a fresh one takes the next batch', async () => {
      const { db, arrivals, schedule } = await setup();
      // 1 MB: every worker's heap is over it after its first batch
      const d = daemon(db.url, { MAX_WORKERS: '1', WORKER_IDLE_MS: '20000', WORKER_MAX_HEAP_MB: '1' });
      await waitFor('the daemon to sleep', () => d.output().includes('No post pending'), 20_000);
      const base = Date.now() + 2_000;
      const ids = [await schedule(base), await schedule(base + 4_000)];
      await waitFor('both posts received', () => ids.every((id) => arrivals.has(id)), 30_000);
      await waitFor('two workers spawned and one told to exit', () => /MB of heap after its batch \(WORKER_MAX_HEAP_MB 1\): a fresh one next time/.test(d.output()) && (d.output().match(/Spawning worker: /g) ?? []).length === 2, 10_000);
      assert.match(d.output(), /Worker \S+ after its batch, told to exit/);
      assert.doesNotMatch(d.output(), /No worker available/, 'the second batch waited for no worker');
      assert.deepEqual(ids.filter((id) => arrivals.get(id)?.length !== 1), [], 'each post once');
      d.child.kill('SIGTERM');
      assert.equal((await d.done).code, 0);
    });

    it("a channel whose webhook URL is changed between batches: the resident's publisher is built anew and the next post goes to the new URL", async () => {
      const { db, receiver, arrivals, schedule } = await setup();
      const moved = await startReceiver();
      cleanups.push(() => moved.close());
      // the URL sealed as a credential, as `channels add` stores it today
      const rekey = await run(['channels', 'rekey'], testEnv(db.url));
      assert.equal(rekey.code, 0, rekey.stdout + rekey.stderr);
      const d = daemon(db.url, { MAX_WORKERS: '1', WORKER_IDLE_MS: '30000' });
      await waitFor('the daemon to sleep', () => d.output().includes('No post pending'), 20_000);
      const first = await schedule(Date.now() + 1_500);
      await waitFor('the first post received', () => arrivals.has(first), 30_000);
      await waitFor('its batch reported', () => /Dispatch Summary:/.test(d.output()), 10_000);

      // the operator rotates the URL (sealed as a credential)
      const r = await run(['channels', 'update', '--name', 'hook', '--url-from', 'env:NEW_HOOK_URL'], { ...testEnv(db.url), NEW_HOOK_URL: moved.url });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const second = await schedule(Date.now() + 1_000);
      await waitFor('the second post at the new URL', () => moved.deliveries.some((x) => x.postId === second), 30_000);
      assert.equal(arrivals.has(second), false, 'not sent to the old URL');
      assert.equal(receiver.deliveries.length, 1, 'the old URL got the first post only');
      assert.equal((d.output().match(/Spawning worker: /g) ?? []).length, 1, 'the same resident sent both');
      assert.match(d.output(), /Channel hook changed since its last batch: a new webhook publisher/);
      d.child.kill('SIGTERM');
      assert.equal((await d.done).code, 0);
    });

    it('a resident killed with a second batch queued behind its first: its death is recorded in one cycle, not both', async () => {
      const { db, store, arrivals, schedule } = await setup((p) => ({ status: 200, delayMs: p.postId === 1 ? 4_000 : 0 }));
      const d = daemon(db.url, { MAX_WORKERS: '1' });
      await waitFor('the daemon to sleep', () => d.output().includes('No post pending'), 20_000);
      const slow = await schedule(Date.now() + 1_500);
      assert.equal(slow, 1, 'the first post is the slow one');
      await waitFor('the slow post in flight', () => arrivals.has(slow), 20_000);
      // the next post falls due while the only worker publishes the slow one: queued behind it
      const next = await schedule(Date.now() + 1_000);
      await waitFor('a second batch queued on the busy worker', () => /takes part after its batch/.test(d.output()), 10_000);
      const pid = d.child.pid ?? 0;
      const [worker] = childPids(pid);
      assert.ok(worker !== undefined);
      process.kill(worker, 'SIGKILL');
      await waitFor('both cycles recorded', async () => {
        const cycles = (await store.status(20)).cycles;
        return cycles.length >= 2 && cycles.every((c) => c.finishedAt !== null);
      }, 20_000);
      const cycles = (await store.status(20)).cycles;
      assert.equal(cycles.reduce((n, c) => n + c.workersFailed, 0), 1, `one failed worker over the cycles: ${JSON.stringify(cycles)}`);
      // the next post still goes out (a new worker), once
      await waitFor('the next post sent', () => arrivals.has(next), 30_000);
      assert.equal(arrivals.get(next)?.length, 1);
      d.child.kill('SIGTERM');
      assert.equal((await d.done).code, 0);
    });

    if (dialect === 'postgres') {
      it('a cron on the same host while the daemon cannot reach the database: never more than MAX_WORKERS worker processes', async () => {
        const { db, arrivals, schedule } = await setup();
        const target = new URL(db.url);
        const proxy = await startTcpProxy(Number(target.port || 5432), target.hostname);
        cleanups.push(() => proxy.close());
        target.port = String(proxy.port);
        const d = daemon(target.toString(), { DB_TIMEOUT_MS: '1000', WORKER_IDLE_MS: '60000', LOG_TIMESTAMPS: 'true' });
        await waitFor('the daemon to sleep', () => d.output().includes('No post pending'), 20_000);
        const first: number[] = [];
        for (let i = 0; i < 10; i++) first.push(await schedule(Date.now() + 1_500 + i));
        await waitFor('the first posts received', () => first.every((id) => arrivals.has(id)), 30_000);
        const count = (re: RegExp) => (d.output().match(re) ?? []).length;
        await waitFor('their batches reported', () => count(/Dispatch Summary:/g) === count(/Dispatch cycle started at/g), 20_000);
        const pid = d.child.pid ?? 0;
        await waitFor('the resident workers waiting', () => childPids(pid).length === 2, 10_000);

        // the daemon's database goes silent: its lock lapses after LEASE_MS, and a cron takes it
        proxy.freeze();
        const second: number[] = [];
        for (let i = 0; i < 10; i++) second.push(await schedule(Date.now() - 1_000 + i));
        let cronPid = 0;
        const host = sampleMax(() => childPids(pid).length + (cronPid === 0 ? 0 : childPids(cronPid).length));
        const env = testEnv(db.url, { MAX_WORKERS: '2', BATCH_SIZE: '5', LEASE_MS: '3000' });
        await waitFor(
          'a cron cycle to take the lock and send the posts',
          async () => {
            const c = start(['cron'], env, 60_000);
            cronPid = c.child.pid ?? 0;
            const r = await c.done;
            assert.equal(r.code, 0, r.stdout + r.stderr);
            return second.every((id) => arrivals.has(id));
          },
          30_000,
        );
        const most = host.stop();
        assert.ok(most <= 2, `${most} worker processes on the host at once: at most MAX_WORKERS=2`);
        assert.match(d.output(), /Cycle lock of .+ not renewed for \d+ms: idle workers told to exit/);

        proxy.thaw();
        // the daemon takes the lock again and goes on
        const late = await schedule(Date.now() + 1_500);
        await waitFor('a post after the database answers', () => arrivals.has(late), 30_000);
        assert.deepEqual([...first, ...second, late].filter((id) => arrivals.get(id)?.length !== 1), [], 'each post once');
        d.child.kill('SIGTERM');
        const r = await d.done;
        assert.equal(r.code, 0, r.stdout.slice(-6000) + r.stderr);
      });

      it('an outage past LEASE_MS with a resident of GLOBAL_MAX_WORKERS=1: its slot went to another host, a new worker sends the next posts', async () => {
        const { db, arrivals, schedule } = await setup();
        const target = new URL(db.url);
        const proxy = await startTcpProxy(Number(target.port || 5432), target.hostname);
        cleanups.push(() => proxy.close());
        target.port = String(proxy.port);
        const d = daemon(target.toString(), { DB_TIMEOUT_MS: '1000', WORKER_IDLE_MS: '60000', GLOBAL_MAX_WORKERS: '1', MAX_WORKERS: '1' });
        await waitFor('the daemon to sleep', () => d.output().includes('No post pending'), 20_000);
        const first = await schedule(Date.now() + 1_500);
        await waitFor('the first post received', () => arrivals.has(first), 30_000);
        const pid = d.child.pid ?? 0;
        await waitFor('the resident waiting', () => childPids(pid).length === 1 && /Dispatch Summary:/.test(d.output()), 10_000);

        proxy.freeze();
        // another host's cron takes the slot once it expired (LEASE_MS 3 s) and sends a post
        const other = await schedule(Date.now() - 500);
        const env = testEnv(db.url, { SCHEDULER_HOST: 'other-host', GLOBAL_MAX_WORKERS: '1', MAX_WORKERS: '1', LEASE_MS: '3000' });
        await waitFor(
          "the other host's cron to send its post",
          async () => {
            const r = await run(['cron'], env, 30_000);
            assert.equal(r.code, 0, r.stdout + r.stderr);
            return arrivals.has(other);
          },
          30_000,
        );
        proxy.thaw();
        const next = await schedule(Date.now() + 1_000);
        await waitFor('the next post sent by the daemon', () => arrivals.has(next), 30_000);
        assert.equal(arrivals.get(next)?.length, 1);
        d.child.kill('SIGTERM');
        assert.equal((await d.done).code, 0);
      });

      it('a silent database: the daemon logs, keeps running and catches up', async () => {
        const { db, arrivals, schedule } = await setup();
        const target = new URL(db.url);
        const proxy = await startTcpProxy(Number(target.port || 5432), target.hostname);
        cleanups.push(() => proxy.close());
        target.port = String(proxy.port);
        const d = daemon(target.toString(), { DB_TIMEOUT_MS: '1000' });
        await waitFor('the daemon to sleep', () => d.output().includes('No post pending'), 20_000);
        proxy.freeze();
        const id = await schedule(Date.now() + 1_000);
        await waitFor('the daemon to see the database fail', () => /✗ Database error while/.test(d.output()), 20_000);
        assert.equal(arrivals.has(id), false);
        proxy.thaw();
        await waitFor('the post sent after the database answers', () => arrivals.has(id), 30_000);
        assert.equal(arrivals.get(id)?.length, 1);
        assert.equal(d.child.exitCode, null, 'the daemon stayed');
        assert.match(d.output(), /✓ Database answers again/);
        d.child.kill('SIGTERM');
        assert.equal((await d.done).code, 0);
      });
    }
  });
}

/** The GLOBAL_MAX_WORKERS slots not expired, read from the database as an operator would. */
async function liveSlots(url: string): Promise<number> {
  const target = parseDatabaseUrl(url);
  if (target.dialect === 'sqlite') {
    const raw = new Database(target.path, { readonly: true });
    try {
      return (raw.prepare('SELECT count(*) AS n FROM worker_slots WHERE expires_at > ?').get(Date.now()) as { n: number }).n;
    } finally {
      raw.close();
    }
  }
  if (target.dialect === 'mysql') throw new Error('this test runs on SQLite and PostgreSQL');
  const sql = postgres(target.url, { max: 1, onnotice: () => undefined, connection: { search_path: target.schema } });
  try {
    const [row] = await sql.unsafe<{ n: number }[]>('SELECT count(*)::int AS n FROM worker_slots WHERE expires_at > now()');
    return row?.n ?? 0;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** Samples `count` every 20 ms until stopped; returns the largest value seen. */
function sampleMax(count: () => number): { stop: () => number } {
  let max = 0;
  const timer = setInterval(() => (max = Math.max(max, count())), 20);
  return {
    stop: () => {
      clearInterval(timer);
      return Math.max(max, count());
    },
  };
}
