import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Store } from '../src/store/store.ts';
import type { Outcome } from '../src/types.ts';
import { migratedStores } from './helpers/conformance.ts';

/** The status part of the storage conformance suite (Store.lateness), run by test/store.conformance.ts on every dialect. */
export function testStatusStore(dialect: 'sqlite' | 'postgres'): void {
  describe(`store conformance, status: ${dialect}`, () => {
    const migrated = migratedStores(dialect);
    const HOUR = 3_600_000;
    const DAY = 24 * HOUR;
    // a test's own run time adds to each lateness: at most this much (far below an hour)
    const SLACK = 60_000;

    async function fresh(): Promise<{ store: Store; channelId: number }> {
      const { store } = await migrated();
      const channel = await store.addChannel({ name: 'c', platform: 'file', settings: { path: '/tmp/x.jsonl' }, onUnknown: 'retry' });
      return { store, channelId: channel.id };
    }

    it('has no figures before anything is published', async () => {
      const { store, channelId } = await fresh();
      await store.schedulePosts([{ channelId, text: 'due', runAt: new Date(Date.now() - HOUR) }]);
      assert.deepEqual(await store.lateness(DAY, 1000), { windowMs: DAY, posts: 0, p50Ms: null, p90Ms: null, p99Ms: null, maxMs: null });
    });

    it('measures from the scheduled time to publication, nearest-rank percentiles, published posts only, the most recent `limit`', async () => {
      const { store, channelId } = await fresh();
      // ten posts scheduled 1 h .. 10 h ago, published now: lateness 1 h .. 10 h; and one that failed
      const ids = await store.schedulePosts(
        Array.from({ length: 11 }, (_, i) => ({ channelId, text: `p${i}`, runAt: new Date(Date.now() - (i + 1) * HOUR) })),
      );
      const claimed = await store.claim('w', 11, 60_000);
      assert.equal(claimed.length, 11);
      const outcomes: Outcome[] = claimed.map((c) =>
        c.id === ids[10]
          ? { kind: 'failed', postId: c.id, token: c.token, error: 'HTTP 400' }
          : { kind: 'published', postId: c.id, token: c.token, externalId: null, externalUrl: null },
      );
      assert.equal((await store.recordOutcomes('w', outcomes)).length, 11);

      const r = await store.lateness(DAY, 1000);
      assert.equal(r.posts, 10);
      const near = (value: number | null, hours: number, what: string) =>
        assert.ok(value !== null && value >= hours * HOUR && value < hours * HOUR + SLACK, `${what} ${value} is ${hours} h`);
      near(r.p50Ms, 5, 'p50'); // ceil(0.5 * 10) = 5th smallest
      near(r.p90Ms, 9, 'p90'); // ceil(0.9 * 10) = 9th
      near(r.p99Ms, 10, 'p99'); // ceil(0.99 * 10) = 10th
      near(r.maxMs, 10, 'max');

      const one = await store.lateness(DAY, 1);
      assert.equal(one.posts, 1);
    });

    it('leaves out posts published before the window', async () => {
      const { store, channelId } = await fresh();
      await store.schedulePosts([{ channelId, text: 'x', runAt: new Date(Date.now() - HOUR) }]);
      const [c] = await store.claim('w', 1, 60_000);
      assert.ok(c !== undefined);
      await store.recordOutcomes('w', [{ kind: 'published', postId: c.id, token: c.token, externalId: null, externalUrl: null }]);
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal((await store.lateness(DAY, 1000)).posts, 1);
      // a window of 10 ms ends after the publication 50 ms ago
      assert.equal((await store.lateness(10, 1000)).posts, 0);
    });
  });
}
