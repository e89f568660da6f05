import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { migratedStores } from './helpers/conformance.ts';

/** The metrics part of the storage conformance suite (Store.metrics), run by test/store.conformance.ts on every dialect. */
export function testMetricsStore(dialect: 'sqlite' | 'postgres'): void {
  describe(`store conformance, metrics: ${dialect}`, () => {
    const migrated = migratedStores(dialect);
    const HOUR = 3_600_000;

    it('counts waiting posts by state and channel, and finds the oldest due post', async () => {
      const { store } = await migrated();
      let m = await store.metrics(HOUR, 1000);
      assert.deepEqual(m.waiting, []);
      assert.equal(m.oldestDueAt, null);

      const a = await store.addChannel({ name: 'a', platform: 'file', settings: { path: '/tmp/a.jsonl' }, onUnknown: 'retry' });
      const b = await store.addChannel({ name: 'b', platform: 'file', settings: { path: '/tmp/b.jsonl' }, onUnknown: 'retry' });
      const oldest = new Date(Date.now() - 2 * HOUR);
      await store.schedulePosts([
        { channelId: a.id, text: 'a1', runAt: oldest },
        { channelId: a.id, text: 'a2', runAt: new Date(Date.now() - HOUR) },
        { channelId: a.id, text: 'a3', runAt: new Date(Date.now() + HOUR) },
        { channelId: b.id, text: 'b1', runAt: new Date(Date.now() - 30 * 60_000) },
      ]);
      // the oldest (a1) is claimed: processing; the oldest still due is a2
      const claimed = await store.claim('w', 1, 60_000);
      assert.equal(claimed.length, 1);
      m = await store.metrics(HOUR, 1000);
      const by = (state: string, channel: string) => m.waiting.find((w) => w.state === state && w.channel === channel)?.posts;
      assert.equal(by('pending', 'a'), 2, 'due and later alike');
      assert.equal(by('pending', 'b'), 1);
      assert.equal(by('processing', 'a'), 1);
      assert.equal(by('unknown', 'a'), undefined);
      assert.equal(m.waiting.reduce((n, w) => n + w.posts, 0), 4);
      assert.ok(m.oldestDueAt !== null);
      const age = m.now.getTime() - m.oldestDueAt.getTime();
      assert.ok(age >= HOUR && age < HOUR + 60_000, `the oldest due waited ${age} ms, a2's hour`);

      const [first] = claimed;
      assert.ok(first !== undefined);
      await store.recordOutcomes('w', [{ kind: 'unknown', postId: first.id, token: first.token, error: 'timed out' }]);
      m = await store.metrics(HOUR, 1000);
      assert.equal(m.waiting.find((w) => w.state === 'unknown' && w.channel === 'a')?.posts, 1);
      assert.equal(m.waiting.find((w) => w.state === 'processing'), undefined);
      assert.deepEqual(
        m.attempts.map((x) => ({ outcome: x.outcome, platform: x.platform, reason: x.reason, attempts: x.attempts, publishTimed: x.publishTimed })),
        [{ outcome: 'unknown', platform: 'file', reason: 'other', attempts: 1, publishTimed: 1 }],
        'an outcome recorded without a reason counts as other',
      );
      // b1 and a2 go out (claimed oldest first); one fails for good
      const two = await store.claim('w', 2, 60_000);
      assert.equal(two.length, 2);
      const [p1, p2] = two;
      assert.ok(p1 !== undefined && p2 !== undefined);
      await store.recordOutcomes('w', [
        { kind: 'published', postId: p1.id, token: p1.token, externalId: null, externalUrl: null },
        { kind: 'failed', postId: p2.id, token: p2.token, error: 'HTTP 400', reason: 'rejected' },
      ]);
      m = await store.metrics(HOUR, 1000);
      const outcomes = Object.fromEntries(m.attempts.map((x) => [x.outcome, x.attempts]));
      assert.deepEqual(outcomes, { unknown: 1, published: 1, failed: 1 });
      assert.ok(m.attempts.every((x) => x.publishMs >= 0 && x.publishMs < 60_000));
      assert.deepEqual(
        m.attempts.map((x) => [x.outcome, x.reason]).sort(),
        [['failed', 'rejected'], ['published', null], ['unknown', 'other']],
      );
    });

    it('records each attempt with its reason: counted retries, uncounted waits, lease expiry; posts show and metrics agree', async () => {
      const { store } = await migrated();
      const ch = await store.addChannel({ name: 'r', platform: 'webhook', settings: {}, onUnknown: 'retry' });
      const [id] = await store.schedulePosts([{ channelId: ch.id, text: 'x', runAt: new Date(Date.now() - 1000) }]);
      assert.ok(id !== undefined);
      const claimOne = async () => {
        const [c] = await store.claim('w', 1, 60_000);
        assert.ok(c !== undefined && c.id === id);
        return c;
      };
      // a 5xx (counted), a 429 (a wait: not counted), a timeout (counted), then the lease runs out
      let c = await claimOne();
      await store.recordOutcomes('w', [{ kind: 'retry', postId: id, token: c.token, error: 'HTTP 500', delayMs: 0, unconfirmed: true, reason: 'server' }]);
      c = await claimOne();
      await store.recordOutcomes('w', [{ kind: 'retry', postId: id, token: c.token, error: 'HTTP 429', delayMs: 0, unconfirmed: true, uncounted: true, reason: 'rate-limited' }]);
      c = await claimOne();
      await store.recordOutcomes('w', [{ kind: 'retry', postId: id, token: c.token, error: 'no answer', delayMs: 0, unconfirmed: true, reason: 'timeout' }]);
      c = await claimOne();
      // released: nothing was tried, no row
      await store.recordOutcomes('w', [{ kind: 'released', postId: id, token: c.token }]);
      await store.claim('w', 1, 1);
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual((await store.recoverExpired(3)).map((r) => r.status), ['unknown'], 'the 429 and the release did not count: this was the third attempt, the last');
      const shown = await store.postAttempts(id);
      assert.deepEqual(
        shown.map((a) => [a.attempt, a.outcome, a.reason]),
        [
          [1, 'retry', 'server'],
          [2, 'waited', 'rate-limited'],
          [2, 'retry', 'timeout'],
          [3, 'expired', 'lease-expired'],
        ],
      );
      const m = await store.metrics(HOUR, 1000);
      assert.deepEqual(
        m.attempts.map((x) => [x.outcome, x.platform, x.reason, x.attempts]).sort(),
        [
          ['expired', 'webhook', 'lease-expired', 1],
          ['retry', 'webhook', 'server', 1],
          ['retry', 'webhook', 'timeout', 1],
          ['waited', 'webhook', 'rate-limited', 1],
        ],
      );
    });

    it('counts the attempts of a post still pending (a 429 wait, refused credentials) at once, at most the limit most recent', async () => {
      const { store } = await migrated();
      const ch = await store.addChannel({ name: 'w', platform: 'webhook', settings: {}, onUnknown: 'retry' });
      const [id] = await store.schedulePosts([{ channelId: ch.id, text: 'x', runAt: new Date(Date.now() - 1000) }]);
      assert.ok(id !== undefined);
      for (const reason of ['rate-limited', 'auth'] as const) {
        const [c] = await store.claim('w', 1, 60_000);
        assert.ok(c !== undefined && c.id === id);
        await store.recordOutcomes('w', [{ kind: 'retry', postId: id, token: c.token, error: 'wait', delayMs: 0, unconfirmed: false, uncounted: true, reason }]);
        await new Promise((r) => setTimeout(r, 5)); // the second ends later: "the most recent" is one
      }
      assert.equal((await store.getPost(id))?.status, 'pending');
      const m = await store.metrics(HOUR, 1000);
      assert.deepEqual(
        m.attempts.map((x) => [x.outcome, x.platform, x.reason, x.attempts]).sort(),
        [
          ['waited', 'webhook', 'auth', 1],
          ['waited', 'webhook', 'rate-limited', 1],
        ],
        'an alert on reason="auth" sees the wait while the post still waits',
      );
      const one = await store.metrics(HOUR, 1);
      assert.deepEqual(one.attempts.map((x) => [x.reason, x.attempts]), [['auth', 1]], 'the most recent one only');
    });
  });
}
