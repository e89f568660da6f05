import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { migratedStores } from './helpers/conformance.ts';

/** The history part of the storage conformance suite (Store.recentCycles, Store.activity), run by test/store.conformance.ts on every dialect. */
export function testHistoryStore(dialect: 'sqlite' | 'postgres'): void {
  describe(`store conformance, history: ${dialect}`, () => {
    const migrated = migratedStores(dialect);
    const HOUR = 3_600_000;
    const MINUTE = 60_000;

    it('returns the last cycles newest first, each with its worker runs', async () => {
      const { store } = await migrated();
      assert.deepEqual(await store.recentCycles(5), []);
      const first = await store.startCycle('host-a');
      const t = new Date();
      await store.finishCycle(
        first,
        { cycleId: first, pending: 7, workersSpawned: 2, workersSucceeded: 1, workersFailed: 1, recovered: 0, durationMs: 120, exitCode: 1, stopped: false, posts: { published: 3, retried: 1, failed: 1, held: 0 } },
        [
          { workerId: 'w-1', startedAt: t, finishedAt: new Date(t.getTime() + 50), exitCode: 0, signal: null, published: 3, retried: 1, failed: 0 },
          { workerId: 'w-2', startedAt: t, finishedAt: new Date(t.getTime() + 80), exitCode: null, signal: 'SIGKILL', published: 0, retried: 0, failed: 1 },
        ],
      );
      // the second one runs: its host's cycle lock, taken before it started, is held
      assert.equal(await store.tryLockCycle('host-a', 60_000), true);
      const second = await store.startCycle('host-a');
      const cycles = await store.recentCycles(5);
      assert.deepEqual(
        cycles.map((c) => c.id),
        [second, first],
      );
      const [newest, older] = cycles;
      assert.ok(newest !== undefined && older !== undefined);
      assert.equal(newest.state, 'running');
      assert.deepEqual(newest.runs, []);
      assert.equal(older.state, 'finished');
      assert.equal(older.pending, 7);
      assert.deepEqual(
        older.runs.map((r) => ({ workerId: r.workerId, exitCode: r.exitCode, signal: r.signal, published: r.published, failed: r.failed, ms: r.finishedAt.getTime() - r.startedAt.getTime() })),
        [
          { workerId: 'w-1', exitCode: 0, signal: null, published: 3, failed: 0, ms: 50 },
          { workerId: 'w-2', exitCode: null, signal: 'SIGKILL', published: 0, failed: 1, ms: 80 },
        ],
      );
      assert.deepEqual(
        (await store.recentCycles(1)).map((c) => c.id),
        [second],
      );
      await store.unlockCycle('host-a');
    });

    it('counts posts that ended published or failed per minute, and the due count of each cycle', async () => {
      const { store } = await migrated();
      const empty = await store.activity(HOUR, MINUTE, 1000);
      assert.deepEqual([empty.published, empty.failed, empty.backlog], [[], [], []]);
      assert.equal(empty.to.getTime() - empty.from.getTime(), HOUR);

      const ch = await store.addChannel({ name: 'a', platform: 'file', settings: { path: '/tmp/a.jsonl' }, onUnknown: 'retry' });
      await store.schedulePosts([1, 2, 3, 4].map((i) => ({ channelId: ch.id, text: `p${i}`, runAt: new Date(Date.now() - MINUTE) })));
      const cycle = await store.startCycle('host-a');
      await store.finishCycle(cycle, { cycleId: cycle, pending: 4, workersSpawned: 1, workersSucceeded: 1, workersFailed: 0, recovered: 0, durationMs: 10, exitCode: 0, stopped: false, posts: { published: 2, retried: 0, failed: 1, held: 0 } }, []);
      const claimed = await store.claim('w', 4, MINUTE);
      const [a, b, c, d] = claimed;
      assert.ok(a !== undefined && b !== undefined && c !== undefined && d !== undefined);
      await store.recordOutcomes('w', [
        { kind: 'published', postId: a.id, token: a.token, externalId: null, externalUrl: null },
        { kind: 'published', postId: b.id, token: b.token, externalId: null, externalUrl: null },
        { kind: 'failed', postId: c.id, token: c.token, error: 'HTTP 400' },
        // still to come: not counted
        { kind: 'retry', postId: d.id, token: d.token, error: 'HTTP 503', delayMs: MINUTE, unconfirmed: false },
      ]);
      const act = await store.activity(HOUR, MINUTE, 1000);
      assert.equal(act.published.reduce((n, x) => n + x.posts, 0), 2);
      assert.equal(act.failed.reduce((n, x) => n + x.posts, 0), 1);
      for (const x of [...act.published, ...act.failed]) {
        assert.equal(x.at.getTime() % MINUTE, 0, 'a bucket starts on a minute');
        assert.ok(x.at.getTime() >= act.from.getTime() - MINUTE && x.at.getTime() <= act.to.getTime());
      }
      assert.deepEqual(
        act.backlog.map((x) => x.due),
        [4],
      );
      // the limit bounds the posts read: the most recent one only
      const one = await store.activity(HOUR, MINUTE, 1);
      assert.equal(one.published.reduce((n, x) => n + x.posts, 0) + one.failed.reduce((n, x) => n + x.posts, 0), 1);
      // and the cycles read: the newest ones, still oldest first
      const later = await store.startCycle('host-a');
      await store.finishCycle(later, { cycleId: later, pending: 7, workersSpawned: 1, workersSucceeded: 1, workersFailed: 0, recovered: 0, durationMs: 10, exitCode: 0, stopped: false, posts: { published: 0, retried: 0, failed: 0, held: 0 } }, []);
      assert.deepEqual((await store.activity(HOUR, MINUTE, 1000)).backlog.map((x) => x.due), [4, 7]);
      assert.deepEqual((await store.activity(HOUR, MINUTE, 1)).backlog.map((x) => x.due), [7], 'the newest cycle, not the oldest');
    });
  });
}
