import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { migratedStores } from './helpers/conformance.ts';

/** The tune part of the storage conformance suite (Store.tuneHistory), run by test/store.conformance.ts on every dialect. */
export function testTuneStore(dialect: 'sqlite' | 'postgres'): void {
  describe(`store conformance, tune history: ${dialect}`, () => {
    const migrated = migratedStores(dialect);
    const HOUR = 3_600_000;
    const idle = { published: 0, retried: 0, failed: 0, held: 0 };

    it('reads the cycles, worker runs, attempts, published posts and paused channels of a window, newest first, at most the limit', async () => {
      const { store } = await migrated();
      let h = await store.tuneHistory(HOUR, 100);
      assert.deepEqual([h.cycles, h.workerRuns, h.attempts, h.published, h.paused], [[], [], [], [], []]);
      assert.equal(h.windowMs, HOUR);

      const news = await store.addChannel({ name: 'news', platform: 'webhook', settings: {}, onUnknown: 'hold' });
      const late = 10 * 60_000;
      const ids = await store.schedulePosts([0, 1, 2].map((i) => ({ channelId: news.id, text: `p${i}`, runAt: new Date(Date.now() - late - i) })));
      const claimed = await store.claim('w1', 3, 60_000);
      assert.equal(claimed.length, 3);
      const token = (id: number | undefined) => claimed.find((c) => c.id === id)?.token ?? -1;
      const [a, b, c] = ids as [number, number, number];
      await store.recordOutcomes('w1', [
        { kind: 'published', postId: a, token: token(a), externalId: null, externalUrl: null },
        { kind: 'failed', postId: b, token: token(b), error: 'HTTP 401', reason: 'auth' },
        { kind: 'retry', postId: c, token: token(c), error: 'HTTP 429', delayMs: 0, unconfirmed: false, uncounted: true, reason: 'rate-limited' },
      ]);
      await store.pauseChannel(news.id, 60_000, 'HTTP 429');

      const first = await store.startCycle('host-a');
      await store.finishCycle(
        first,
        { cycleId: first, pending: 3, workersSpawned: 2, workersSucceeded: 2, workersFailed: 0, recovered: 0, durationMs: 900, exitCode: 2, stopped: false, posts: idle },
        [
          { workerId: 'w1', startedAt: new Date(Date.now() - 800), finishedAt: new Date(Date.now() - 300), exitCode: 0, signal: null, published: 1, retried: 1, failed: 1 },
          { workerId: 'w2', startedAt: new Date(Date.now() - 800), finishedAt: new Date(Date.now() - 700), exitCode: 0, signal: null, published: 0, retried: 0, failed: 0 },
        ],
      );
      await new Promise((r) => setTimeout(r, 20));
      const running = await store.startCycle('host-a');

      h = await store.tuneHistory(HOUR, 100);
      assert.deepEqual(
        h.cycles.map((x) => [x.id, x.durationMs, x.pending, x.workersSpawned, x.exitCode]),
        [
          [running, null, null, null, null],
          [first, 900, 3, 2, 2],
        ],
        'newest first; the running one without figures',
      );
      assert.deepEqual(
        h.workerRuns.map((r) => [r.cycleId, r.durationMs, r.published, r.retried, r.failed]).sort(),
        [
          [first, 100, 0, 0, 0],
          [first, 500, 1, 1, 1],
        ].sort(),
      );
      assert.deepEqual(
        h.attempts.map((x) => [x.channel, x.outcome, x.reason]).sort(),
        [
          ['news', 'failed', 'auth'],
          ['news', 'published', null],
          ['news', 'waited', 'rate-limited'],
        ],
      );
      assert.ok(h.attempts.every((x) => x.publishMs !== null && x.publishMs >= 0 && x.publishMs < 60_000));
      assert.equal(h.published.length, 1);
      const [published] = h.published;
      assert.ok(published !== undefined);
      assert.equal(published.channel, 'news');
      assert.ok(published.latenessMs >= late && published.latenessMs < late + 60_000, `lateness ${published.latenessMs}`);
      assert.deepEqual(
        h.paused.map((p) => [p.channel, p.reason]),
        [['news', 'HTTP 429']],
      );
      const [pause] = h.paused;
      assert.ok(pause !== undefined && pause.until.getTime() > h.now.getTime());

      // the limit keeps the most recent; a window that ended before is empty
      h = await store.tuneHistory(HOUR, 1);
      assert.deepEqual([h.cycles.map((x) => x.id), h.attempts.length, h.published.length], [[running], 1, 1]);
      await new Promise((r) => setTimeout(r, 50));
      h = await store.tuneHistory(10, 100);
      assert.deepEqual([h.cycles, h.workerRuns, h.attempts, h.published], [[], [], [], []]);
      assert.equal(h.paused.length, 1, 'a pause is read as it is now, whatever the window');
    });
  });
}
