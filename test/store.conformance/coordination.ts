import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Dialect, Store } from '../../src/store/store.ts';
import { migratedStores, storesWithChannel } from '../helpers/conformance.ts';

/**
 * The coordination part of the storage conformance suite (CoordinationStore: the cycle
 * lock, GLOBAL_MAX_WORKERS slots, the watch of the due posts), run by
 * test/store.conformance.ts on every dialect.
 */
export function testCoordinationStore(dialect: Dialect): void {
  describe(`store conformance, coordination: ${dialect}`, () => {
    const fresh = storesWithChannel(dialect);
    const ago = (ms: number) => new Date(Date.now() - ms);

    it('shares GLOBAL_MAX_WORKERS slots between dispatchers, held by worker ids, freed on release or expiry', async () => {
      const { store, connect } = await fresh();
      const other = await connect();
      assert.deepEqual(await store.acquireWorkerSlots('host-a', ['a1', 'a2'], 3, 60_000), ['a1', 'a2']);
      assert.deepEqual(await other.acquireWorkerSlots('host-b', ['b1', 'b2'], 3, 60_000), ['b1'], 'one slot left');
      assert.deepEqual(await other.acquireWorkerSlots('host-b', ['b3'], 3, 60_000), [], 'none left');
      await store.releaseWorkerSlots(['a1', 'a2']);
      const third = await connect();
      assert.deepEqual(await third.acquireWorkerSlots('host-c', ['c1', 'c2', 'c3'], 3, 60_000), ['c1', 'c2']);
      // a worker renews its own slot from its own connection; a released one is gone
      assert.deepEqual(await other.renewWorkerSlots(['b1', 'a1'], 60_000), ['b1']);
      await other.releaseWorkerSlots(['b1']);
      await third.releaseWorkerSlots(['c1', 'c2']);
      assert.deepEqual(await store.acquireWorkerSlots('host-a', ['a3', 'a4', 'a5'], 3, 300), ['a3', 'a4', 'a5']);

      // A holder that stops renewing (frozen, cut off) loses its slots at their expiry,
      // and its late renewal says so.
      await new Promise((r) => setTimeout(r, 400));
      assert.deepEqual(await other.acquireWorkerSlots('host-b', ['b4', 'b5'], 3, 60_000), ['b4', 'b5'], 'expired slots are free');
      assert.deepEqual(await store.renewWorkerSlots(['a3', 'a4', 'a5'], 60_000), [], 'expired slots are not renewed: the worker stops claiming');
      assert.deepEqual(await third.acquireWorkerSlots('host-c', ['c4', 'c5'], 3, 60_000), ['c4']);
      assert.deepEqual(await store.acquireWorkerSlots('host-a', ['a6'], 3, 60_000), [], 'the cap holds');
    });

    it('never grants more than GLOBAL_MAX_WORKERS slots when dispatchers on several connections acquire at once', async () => {
      const { store, connect } = await fresh();
      const stores = [store, ...(await Promise.all([1, 2, 3, 4, 5].map(() => connect())))];
      const cap = 5;
      for (let round = 0; round < 4; round++) {
        // six dispatchers of three workers each, at once, for five slots
        const got = await Promise.all(
          stores.map((s, i) => s.acquireWorkerSlots(`host-${i}`, [0, 1, 2].map((w) => `r${round}-d${i}-w${w}`), cap, 60_000)),
        );
        const granted = got.flat();
        assert.ok(granted.length >= 1 && granted.length <= cap, `round ${round}: ${granted.length} slots granted of ${cap}`);
        assert.equal(new Set(granted).size, granted.length);
        // the slots left are exactly the ones not granted
        const rest = await store.acquireWorkerSlots('host-late', Array.from({ length: cap }, (_, w) => `r${round}-late-${w}`), cap, 60_000);
        assert.equal(granted.length + rest.length, cap, `round ${round}: ${granted.length} granted + ${rest.length} late`);
        assert.deepEqual((await store.renewWorkerSlots([...granted, ...rest], 60_000)).sort(), [...granted, ...rest].sort(), 'every one granted is held');
        await Promise.all(stores.map((s, i) => s.releaseWorkerSlots(got[i] ?? [])));
        await store.releaseWorkerSlots(rest);
      }
    });

    it('lets a worker with a slot claim only while the slot is its own, and extends the slot with the claim', async () => {
      const { store, channel } = await fresh();
      await store.schedulePosts(['a', 'b'].map((text, i) => ({ channelId: channel.id, text, runAt: ago(1000 - i) })));
      assert.deepEqual((await store.exchange('w-no-slot', [], 1, 60_000, { slot: true })).claimed, [], 'no slot: no claim');
      assert.deepEqual(await store.acquireWorkerSlots('host-a', ['w'], 2, 200), ['w']);
      assert.equal((await store.exchange('w', [], 1, 60_000, { slot: true })).claimed.length, 1);
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual(await store.renewWorkerSlots(['w'], 60_000), ['w'], 'the claim extended the slot past its first expiry');
      await store.releaseWorkerSlots(['w']);
      assert.deepEqual((await store.exchange('w', [], 1, 60_000, { slot: true })).claimed, [], 'slot gone: no claim');
      assert.equal((await store.exchange('w', [], 1, 60_000)).claimed.length, 1, 'without a cap a worker claims freely');
    });

    it('lets one cycle per host hold the cycle lock, renewed while it lives, lost at its expiry', async () => {
      const { store, connect } = await fresh();
      const other = await connect();
      assert.equal(await store.tryLockCycle('host-a', 60_000), true);
      assert.equal(await other.tryLockCycle('host-a', 60_000), false, 'a second dispatcher on the same host');
      assert.equal(await other.tryLockCycle('host-b', 60_000), true, 'another host');
      await store.unlockCycle('host-a');
      assert.equal(await other.tryLockCycle('host-a', 300), true, 'free once unlocked');
      assert.equal(await other.renewCycleLock('host-a', 300), true);
      assert.equal(await store.renewCycleLock('host-a', 300), false, 'not ours');
      await new Promise((r) => setTimeout(r, 400));
      // the holder stopped renewing (frozen, cut off): the lock is free, and its holder is told
      assert.equal(await store.tryLockCycle('host-a', 60_000), true, 'expired: free');
      assert.equal(await other.renewCycleLock('host-a', 60_000), false, 'the old holder finds it taken');
      await store.unlockCycle('host-a');
      await other.unlockCycle('host-b');
    });

    it('gives a cycle lock to exactly one of several dispatchers that race for it, free or expired', async () => {
      const { store, connect } = await fresh();
      const stores = [store, ...(await Promise.all([1, 2, 3, 4, 5].map(() => connect())))];
      const race = async (racers: Store[]) => (await Promise.all(racers.map((s) => s.tryLockCycle('host-r', 300)))).filter(Boolean).length;
      const winners = async () => (await Promise.all(stores.map((s) => s.renewCycleLock('host-r', 300)))).filter(Boolean).length;
      assert.equal(await race(stores), 1, 'a lock no one held');
      assert.equal(await winners(), 1);
      const holder = stores[(await Promise.all(stores.map((s) => s.renewCycleLock('host-r', 300)))).indexOf(true)];
      assert.equal(await race(stores.filter((s) => s !== holder)), 0, 'held: no one else');
      await new Promise((r) => setTimeout(r, 400));
      assert.equal(await race(stores), 1, 'an expired lock');
      assert.equal(await winners(), 1);
    });
  });

  describe(`store conformance, watching the due times: ${dialect}`, () => {
    const migrated = migratedStores(dialect);

    it('tells a watcher when another connection schedules, edits or retries a post', async () => {
      const { store, connect } = await migrated();
      const other = await connect();
      const channel = await other.addChannel({ name: 'a', platform: 'file', settings: { path: '/tmp/a.jsonl' }, onUnknown: 'retry' });
      let changes = 0;
      let waiter: (() => void) | null = null;
      const watch = await store.watchDue(() => {
        changes++;
        waiter?.();
      });
      const changed = async (what: string, act: () => Promise<unknown>) => {
        const before = changes;
        const seen = new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no change seen within 5 s after ${what}`)), 5_000);
          waiter = () => {
            if (changes > before) {
              clearTimeout(timer);
              resolve();
            }
          };
        });
        await act();
        await seen;
      };
      try {
        // the watch says so once when it starts (changes may have been missed before)
        await new Promise((resolve) => setTimeout(resolve, 200));
        assert.ok(changes >= 1, 'told once at the start');
        const [id] = await (async () => {
          let ids: number[] = [];
          await changed('scheduling', async () => (ids = await other.schedulePosts([{ channelId: channel.id, text: 'x', runAt: new Date(Date.now() + 60_000) }])));
          return ids;
        })();
        assert.ok(id !== undefined);
        await changed('an edit of run_at', () => other.editPost(id, { runAt: new Date(Date.now() + 1_000) }));
        await changed('an edit to an earlier run_at', () => other.editPost(id, { runAt: new Date(Date.now() - 1_000) }));
        // the worker's paths: on PostgreSQL a claim and a retry never notify (NOTIFY takes a
        // database-wide lock at commit; the daemon's safety re-check finds a retry). SQLite's
        // data_version changes with any commit, and MySQL's polled fingerprint with a pending
        // post leaving or coming back, so there they may.
        const quiet = async (what: string, act: () => Promise<unknown>) => {
          const before = changes;
          await act();
          await new Promise((resolve) => setTimeout(resolve, 500));
          if (dialect === 'postgres') assert.equal(changes, before, `no notification after ${what}`);
        };
        let claimed: Awaited<ReturnType<Store['claim']>>[number] | undefined;
        await quiet('a claim', async () => ([claimed] = await other.claim('w', 1, 60_000)));
        assert.ok(claimed !== undefined);
        const held = claimed;
        await quiet('a retry', () => other.recordOutcomes('w', [{ kind: 'retry', postId: held.id, token: held.token, delayMs: 5_000, error: 'HTTP 503', unconfirmed: false }]));
        // an operator's change does: a channel resumed
        await other.setChannelPaused('a', true);
        await changed('a channel resumed', () => other.setChannelPaused('a', false));
      } finally {
        await watch.close();
      }
      // closed: no more calls
      const after = changes;
      await other.schedulePosts([{ channelId: channel.id, text: 'y', runAt: new Date(Date.now() + 60_000) }]);
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(changes, after, 'no call after close');
    });
  });
}
