import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Dialect, Store } from '../../src/store/store.ts';
import type { Channel } from '../../src/types.ts';
import { migratedStores } from '../helpers/conformance.ts';

/**
 * The alerts part of the storage conformance suite (Store.unalertedOutcomes,
 * scheduleAlerts), run by test/store.conformance.ts on every dialect.
 */
export function testAlertStore(dialect: Dialect): void {
  describe(`store conformance, alerts: ${dialect}`, () => {
    const migrated = migratedStores(dialect);
    const DAY = 24 * 60 * 60 * 1000;

    async function fresh(): Promise<{ store: Store; main: Channel; ops: Channel; connect: () => Promise<Store> }> {
      const { store, connect } = await migrated();
      const main = await store.addChannel({ name: 'main', platform: 'file', settings: { path: '/tmp/x.jsonl' }, onUnknown: 'hold' });
      const ops = await store.addChannel({ name: 'ops', platform: 'file', settings: { path: '/tmp/ops.jsonl' }, onUnknown: 'hold' });
      return { store, main, ops, connect };
    }

    /** Four posts on `channel`, claimed and recorded: published, failed, unknown, retry (pending). */
    async function outcomes(store: Store, channel: Channel, worker: string) {
      const ids = await store.schedulePosts([1, 2, 3, 4].map((i) => ({ channelId: channel.id, text: `p${i}`, runAt: new Date(Date.now() - 1_000) })));
      const claimed = await store.claim(worker, 4, 60_000);
      const token = (id: number | undefined) => claimed.find((c) => c.id === id)?.token ?? -1;
      const [published, failed, unknown, retry] = ids as [number, number, number, number];
      const applied = await store.recordOutcomes(worker, [
        { kind: 'published', postId: published, token: token(published), externalId: null, externalUrl: null },
        { kind: 'failed', postId: failed, token: token(failed), error: 'HTTP 500' },
        { kind: 'unknown', postId: unknown, token: token(unknown), error: 'outcome unknown: timeout' },
        { kind: 'retry', postId: retry, token: token(retry), error: 'HTTP 503', delayMs: 60_000, unconfirmed: false },
      ]);
      assert.equal(applied.length, 4);
      return { published, failed, unknown, retry, token };
    }

    it('lists failed and unknown outcomes not yet reported, never published, pending or the alert channel own', async () => {
      const { store, main, ops } = await fresh();
      const m = await outcomes(store, main, 'w1');
      // the alert channel's own failures are never reported (no loops)
      await outcomes(store, ops, 'w2');
      const found = await store.unalertedOutcomes(ops.id, DAY, 100);
      assert.deepEqual(
        found.map((f) => [f.postId, f.outcome, f.channelName, f.error]).sort(),
        [
          [m.failed, 'failed', 'main', 'HTTP 500'],
          [m.unknown, 'unknown', 'main', 'outcome unknown: timeout'],
        ].sort(),
      );
      assert.equal(found.find((f) => f.postId === m.failed)?.token, m.token(m.failed));
      assert.equal((await store.unalertedOutcomes(ops.id, DAY, 1)).length, 1, 'limit');
    });

    it('schedules one alert post per outcome, due now on the alert channel, however often it is asked', async () => {
      const { store, main, ops, connect } = await fresh();
      const m = await outcomes(store, main, 'w1');
      const found = await store.unalertedOutcomes(ops.id, DAY, 100);
      const alerts = found.map((f) => ({ postId: f.postId, token: f.token, outcome: f.outcome, text: `alert ${f.postId}` }));
      // two dispatchers at once, on two connections, then once more
      const other = await connect();
      const [a, b] = await Promise.all([store.scheduleAlerts(ops.id, alerts), other.scheduleAlerts(ops.id, alerts)]);
      const again = await store.scheduleAlerts(ops.id, alerts);
      assert.equal(a.length + b.length + again.length, 2, `one alert each: ${JSON.stringify([a, b, again])}`);
      const posts = await Promise.all([...a, ...b].map((id) => store.getPost(id)));
      assert.deepEqual(posts.map((p) => [p?.channelId, p?.status, p?.text]).sort(), [
        [ops.id, 'pending', `alert ${m.failed}`],
        [ops.id, 'pending', `alert ${m.unknown}`],
      ].sort());
      for (const p of posts) assert.ok((p?.runAt.getTime() ?? Infinity) <= Date.now() + 1_000, 'due now');
      assert.deepEqual(await store.unalertedOutcomes(ops.id, DAY, 100), []);
      // the alert posts are due: a cycle counts and sends them
      assert.equal(await store.countDue(), 2);
    });

    it('reports a post again after an operator retry ends in a new failure (a new claim), and not outcomes older than asked', async () => {
      const { store, main, ops } = await fresh();
      const m = await outcomes(store, main, 'w1');
      const first = await store.unalertedOutcomes(ops.id, DAY, 100);
      await store.scheduleAlerts(ops.id, first.map((f) => ({ postId: f.postId, token: f.token, outcome: f.outcome, text: 'x' })));
      assert.deepEqual(await store.requeue([m.failed]), [m.failed]);
      const [claimed] = (await store.claim('w3', 10, 60_000)).filter((c) => c.id === m.failed);
      assert.ok(claimed !== undefined);
      await store.recordOutcomes('w3', [{ kind: 'failed', postId: m.failed, token: claimed.token, error: 'HTTP 500 again' }]);
      const again = await store.unalertedOutcomes(ops.id, DAY, 100);
      assert.deepEqual(again.map((f) => [f.postId, f.token, f.error]), [[m.failed, claimed.token, 'HTTP 500 again']]);
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.deepEqual(await store.unalertedOutcomes(ops.id, 20, 100), [], 'outside the window');
    });

    it('prune takes a reported post and its alert record together', async () => {
      const { store, main, ops } = await fresh();
      await outcomes(store, main, 'w1');
      const found = await store.unalertedOutcomes(ops.id, DAY, 100);
      await store.scheduleAlerts(ops.id, found.map((f) => ({ postId: f.postId, token: f.token, outcome: f.outcome, text: 'x' })));
      await new Promise((resolve) => setTimeout(resolve, 20));
      const pruned = await store.prune(1);
      assert.ok(pruned.posts >= 2, `published and failed posts pruned: ${JSON.stringify(pruned)}`);
    });
  });
}
