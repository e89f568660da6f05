import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Store } from '../src/store/store.ts';
import { migratedStores } from './helpers/conformance.ts';

/**
 * The due-time part of the storage conformance suite (Store.nextDue, countDue ahead,
 * watchDue: what `daemon --precise` sleeps on), run by test/store.conformance.ts on every dialect.
 */
export function testDueStore(dialect: 'sqlite' | 'postgres'): void {
  describe(`store conformance, due times: ${dialect}`, () => {
    const migrated = migratedStores(dialect);

    it('finds the earliest pending run_at of a channel not paused, and counts what falls due ahead', async () => {
      const { store } = await migrated();
      assert.equal(await store.nextDue(), null, 'nothing pending');
      const a = await store.addChannel({ name: 'a', platform: 'file', settings: { path: '/tmp/a.jsonl' }, onUnknown: 'retry' });
      const b = await store.addChannel({ name: 'b', platform: 'file', settings: { path: '/tmp/b.jsonl' }, onUnknown: 'retry' });
      const now = Date.now();
      const [past, soon, later] = await store.schedulePosts([
        { channelId: a.id, text: 'past', runAt: new Date(now - 60_000) },
        { channelId: b.id, text: 'soon', runAt: new Date(now + 30_000) },
        { channelId: a.id, text: 'later', runAt: new Date(now + 120_000) },
      ]);
      assert.ok(past !== undefined && soon !== undefined && later !== undefined);
      const first = await store.nextDue();
      assert.equal(first?.runAt.getTime(), now - 60_000, 'a post already due: its (past) run_at');
      // how far from the database's now (its clock is this machine's): about a minute ago
      assert.ok(first !== null && first.inMs <= -60_000 + 1_000 && first.inMs > -60_000 - 30_000, `inMs ${first?.inMs}`);
      const next = await store.nextDue(new Date(now - 60_000));
      assert.ok(next !== null && next.inMs > 0 && next.inMs <= 30_000, `inMs ${next?.inMs}: in the future, within 30 s`);
      assert.equal((await store.nextDue(new Date(now - 60_000)))?.runAt.getTime(), now + 30_000, 'the next after a time already handed out');
      assert.equal(await store.nextDue(new Date(now + 120_000)), null);
      assert.equal(await store.countDue(), 1);
      assert.equal(await store.countDue(60_000), 2, 'soon falls due within a minute');
      assert.equal(await store.countDue(600_000), 3);

      // claimed: no longer pending
      const [claimed] = await store.claim('w', 1, 60_000);
      assert.equal(claimed?.id, past);
      assert.equal((await store.nextDue())?.runAt.getTime(), now + 30_000);
      // a paused channel's posts wait: not due for the daemon either
      await store.setChannelPaused('b', true);
      assert.equal((await store.nextDue())?.runAt.getTime(), now + 120_000);
      assert.equal(await store.countDue(600_000), 1);
      await store.setChannelPaused('b', false);
      // an edit moves it
      await store.editPost(later, { runAt: new Date(now + 10_000) });
      assert.equal((await store.nextDue())?.runAt.getTime(), now + 10_000);
      await store.cancel(later);
      await store.cancel(soon);
      assert.equal(await store.nextDue(), null, 'cancelled and processing posts are not due');
    });

    it('tells a watcher when another connection schedules, moves a post earlier or resumes a channel; on PostgreSQL not for a claim or a retry', async () => {
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
        // data_version changes with any commit, so there they do.
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
