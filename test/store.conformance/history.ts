import type { Dialect } from '../../src/store/store.ts';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { migratedStores, storesWithChannel } from '../helpers/conformance.ts';

/**
 * The history part of the storage conformance suite (HistoryStore: cycles and their
 * worker runs, prune), run by test/store.conformance.ts on every dialect.
 */
export function testHistoryStore(dialect: Dialect): void {
  describe(`store conformance, history, cycles and pruning: ${dialect}`, () => {
    const fresh = storesWithChannel(dialect);
    const ago = (ms: number) => new Date(Date.now() - ms);
    const later = (ms: number) => new Date(Date.now() + ms);

    it('records cycles and worker runs, and reports status', async () => {
      const { store, channel } = await fresh();
      await store.schedulePosts([
        { channelId: channel.id, text: 'due', runAt: ago(10) },
        { channelId: channel.id, text: 'later', runAt: later(3_600_000) },
      ]);
      const started = new Date();
      const cycleId = await store.startCycle('host-a');
      await store.finishCycle(
        cycleId,
        { cycleId, pending: 1, workersSpawned: 1, workersSucceeded: 1, workersFailed: 0, recovered: 0, durationMs: 42, exitCode: 0, stopped: false, posts: { published: 0, retried: 0, failed: 0, held: 0 } },
        [{ workerId: 'worker-1-1', startedAt: started, finishedAt: new Date(), exitCode: 0, signal: null, published: 1, retried: 0, failed: 0 }],
      );
      const status = await store.status(10);
      assert.deepEqual(status.counts, { duePending: 1, scheduledLater: 1, processing: 0, published: 0, failed: 0, cancelled: 0, unknown: 0 });
      assert.equal(status.cycles.length, 1);
      assert.equal(status.cycles[0]?.id, cycleId);
      assert.equal(status.cycles[0]?.durationMs, 42);
      assert.equal(status.cycles[0]?.exitCode, 0);
      assert.equal(status.cycles[0]?.workersSpawned, 1);
      assert.equal(status.cycles[0]?.state, 'finished');
    });

    it('shows an unfinished cycle as running while its lock is held, and dead once it expired', async () => {
      const { store } = await fresh();
      assert.equal(await store.tryLockCycle('host-a', 300), true);
      const cycle = await store.startCycle('host-a');
      assert.deepEqual(
        (await store.status(1)).cycles.map((c) => [c.id, c.host, c.state]),
        [[cycle, 'host-a', 'running']],
      );
      await new Promise((r) => setTimeout(r, 400));
      assert.equal((await store.status(1)).cycles[0]?.state, 'dead', 'its dispatcher stopped renewing the lock');
    });

    it('prunes finished posts and old cycle records, and nothing else', async () => {
      const { store, channel } = await fresh();
      const ids = await store.schedulePosts(['pub', 'fail', 'cancel', 'pending', 'unknown'].map((text, i) => ({ channelId: channel.id, text, runAt: ago(1000 - i) })));
      const [pub, fail, cancel, pending, unknown] = ids;
      const claimed = await store.claim('w', 5, 60_000);
      const t = (id: number | undefined) => claimed.find((c) => c.id === id)?.token ?? 0;
      await store.recordOutcomes('w', [
        { kind: 'published', postId: pub ?? 0, token: t(pub), externalId: null, externalUrl: null },
        { kind: 'failed', postId: fail ?? 0, token: t(fail), error: 'x' },
        { kind: 'released', postId: cancel ?? 0, token: t(cancel) },
        { kind: 'released', postId: pending ?? 0, token: t(pending) },
        { kind: 'unknown', postId: unknown ?? 0, token: t(unknown), error: 'maybe' },
      ]);
      await store.cancel(cancel ?? 0);
      const cycle = await store.startCycle('host-a');
      await store.finishCycle(
        cycle,
        { cycleId: cycle, pending: 1, workersSpawned: 0, workersSucceeded: 0, workersFailed: 0, recovered: 0, durationMs: 1, exitCode: 0, stopped: false, posts: { published: 0, retried: 0, failed: 0, held: 0 } },
        [],
      );
      assert.deepEqual(await store.prune(3_600_000), { posts: 0, cycles: 0 }, 'nothing is an hour old');
      await new Promise((r) => setTimeout(r, 30));
      assert.deepEqual(await store.prune(10), { posts: 3, cycles: 1 });
      for (const id of [pub, fail, cancel]) assert.equal(await store.getPost(id ?? 0), null);
      assert.equal((await store.getPost(pending ?? 0))?.status, 'pending');
      assert.equal((await store.getPost(unknown ?? 0))?.status, 'unknown');
      assert.equal((await store.status(5)).cycles.length, 0);
    });

    it('prunes more than one batch (5,000 posts) in one call, and nothing it should keep', async () => {
      const { store, channel } = await fresh();
      const total = 5_001;
      const ids = await store.schedulePosts(Array.from({ length: total }, (_, i) => ({ channelId: channel.id, text: `p${i}`, runAt: ago(10_000) })));
      for (;;) {
        const claimed = await store.claim('w', 1_000, 60_000);
        if (claimed.length === 0) break;
        await store.recordOutcomes(
          'w',
          claimed.map((c) => ({ kind: 'published' as const, postId: c.id, token: c.token, externalId: null, externalUrl: null })),
        );
      }
      const [kept] = await store.schedulePosts([{ channelId: channel.id, text: 'kept', runAt: later(3_600_000) }]);
      await new Promise((r) => setTimeout(r, 30));
      assert.deepEqual(await store.prune(10), { posts: total, cycles: 0 });
      for (const id of [ids[0], ids[total - 1]]) assert.equal(await store.getPost(id ?? 0), null);
      assert.equal((await store.getPost(kept ?? 0))?.text, 'kept', 'a waiting post and its content stay');
      assert.deepEqual(await store.prune(10), { posts: 0, cycles: 0 });
    });
  });

  describe(`store conformance, history: ${dialect}`, () => {
    const migrated = migratedStores(dialect);

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
  });
}
