import Database from 'better-sqlite3';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import postgres from 'postgres';
import { parseDatabaseUrl } from '../../src/config.ts';
import type { Dialect, Store } from '../../src/store/store.ts';
import { DUE_BY_CHANNEL } from '../../src/store/postgres/figures.ts';
import { RECENT_PUBLISH_TIMES } from '../../src/store/sqlite/figures.ts';
import { MYSQL_RECENT_PUBLISH_TIMES } from '../../src/store/mysql/figures.ts';
import { LATENESS_SECONDS_BOUNDS, PUBLISH_SECONDS_BOUNDS } from '../../src/store/histograms.ts';
import type { Outcome } from '../../src/types.ts';
import { migratedStores } from '../helpers/conformance.ts';
import { rawQuery, type TestDatabase } from '../helpers/databases.ts';

/**
 * The figures part of the storage conformance suite (FiguresStore: status and lateness,
 * metrics, activity, tune history, deadline-aware sizing), run by
 * test/store.conformance.ts on every dialect.
 */
export function testFiguresStore(dialect: Dialect): void {
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

  describe(`store conformance, histograms: ${dialect}`, () => {
    const migrated = migratedStores(dialect);
    const HOUR = 3_600_000;

    it('has an empty lateness histogram and no publish histogram before anything ended', async () => {
      const { store } = await migrated();
      const h = await store.histograms(HOUR, 1000);
      assert.deepEqual(h.publish, []);
      assert.deepEqual(h.lateness, { bounds: LATENESS_SECONDS_BOUNDS, buckets: LATENESS_SECONDS_BOUNDS.map(() => 0), count: 0, sumSeconds: 0 });
    });

    it('counts publish times by platform and lateness into cumulative buckets (a value on a bound is in it), over the window, at most the limit most recent', async () => {
      const { db, store } = await migrated();
      const web = await store.addChannel({ name: 'web', platform: 'webhook', settings: {}, onUnknown: 'retry' });
      const file = await store.addChannel({ name: 'file', platform: 'file', settings: { path: '/tmp/h.jsonl' }, onUnknown: 'retry' });
      const runAt = new Date(Date.now() - 1000);
      const ids = await store.schedulePosts([
        ...[1, 2, 3, 4, 5, 6].map((i) => ({ channelId: web.id, text: `w${i}`, runAt })),
        { channelId: file.id, text: 'f', runAt },
      ]);
      const claimed = await store.claim('w', 10, 60_000);
      assert.equal(claimed.length, 7);
      await store.recordOutcomes(
        'w',
        claimed.map((c) => ({ kind: 'published' as const, postId: c.id, token: c.token, externalId: null, externalUrl: null })),
      );
      const [w1, w2, w3, w4, w5, w6, f] = ids as [number, number, number, number, number, number, number];
      // publish times (ms): webhook 50 (on the 0.05 s bound), 300, 700, 400 000 (above 300 s: +Inf only),
      // one without a start (left out), one that ended two hours ago (out of the window); file 20
      // lateness (ms) of the posts published within the hour: 0, 100 (on the 0.1 s bound), 600, 2000, 20 000, 7 200 000
      await rawUpdates(db, [
        ...([[w1, 50], [w2, 300], [w3, 700], [w4, 400_000], [w6, 10], [f, 20]] as const).map(([id, ms]) => setStart(id, ms)),
        {
          sqlite: 'UPDATE post_attempts SET started_at = NULL WHERE post_id = ?',
          postgres: 'UPDATE post_attempts SET started_at = NULL WHERE post_id = $1',
          mysql: 'UPDATE post_attempts SET started_at = NULL WHERE post_id = ?',
          params: [w5],
        },
        ...([[w1, 0], [w2, 100], [w3, 600], [w4, 2000], [w5, 20_000], [f, 7_200_000], [w6, 50]] as const).map(([id, ms]) => setLateness(id, ms)),
        // w6 ended two hours ago; f is the most recent attempt and post (the limit's one)
        ...shift(w6, -2 * HOUR),
        ...shift(f, 1000),
      ]);

      const h = await store.histograms(HOUR, 1000);
      const byPlatform = new Map(h.publish.map((p) => [p.platform, p.histogram]));
      assert.deepEqual([...byPlatform.keys()].sort(), ['file', 'webhook']);
      assert.deepEqual(byPlatform.get('webhook'), {
        bounds: PUBLISH_SECONDS_BOUNDS,
        //        0.05 0.1 0.25 0.5 1  2.5 5  10 30 60 300
        buckets: [1, 1, 1, 2, 3, 3, 3, 3, 3, 3, 3],
        count: 4,
        sumSeconds: 401.05,
      });
      assert.deepEqual(byPlatform.get('file'), { bounds: PUBLISH_SECONDS_BOUNDS, buckets: PUBLISH_SECONDS_BOUNDS.map(() => 1), count: 1, sumSeconds: 0.02 });
      assert.deepEqual(h.lateness, {
        bounds: LATENESS_SECONDS_BOUNDS,
        //        0.1 0.5 1  5  15 30 60 120 300 900 3600
        buckets: [2, 2, 3, 4, 4, 5, 5, 5, 5, 5, 5],
        count: 6,
        sumSeconds: 7222.7,
      });
      // +Inf agrees with Store.metrics (attempts with a start) and Store.lateness (posts)
      const m = await store.metrics(HOUR, 1000);
      assert.equal(m.attempts.filter((a) => a.platform === 'webhook').reduce((n, a) => n + a.publishTimed, 0), 4);
      assert.equal((await store.lateness(HOUR, 1000)).posts, h.lateness.count);

      const one = await store.histograms(HOUR, 1);
      assert.deepEqual(
        one.publish.map((p) => [p.platform, p.histogram.count]),
        [['file', 1]],
        'the most recent attempt only',
      );
      assert.deepEqual([one.lateness.count, one.lateness.buckets.at(-1), one.lateness.sumSeconds], [1, 0, 7200], 'the most recent post only (7200 s: +Inf only)');
    });
  });

  describe(`store conformance, activity: ${dialect}`, () => {
    const migrated = migratedStores(dialect);
    const HOUR = 3_600_000;
    const MINUTE = 60_000;

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

  describe(`store conformance, sizing: ${dialect}`, () => {
    const migrated = migratedStores(dialect);
    const ago = (s: number) => new Date(Date.now() - s * 1000);

    /** Claims `n` due posts and records them published `afterMs` later; returns their ids. */
    async function publish(store: Store, n: number, afterMs: number): Promise<number[]> {
      const claimed = await store.claim('w', n, 60_000);
      await sleep(afterMs);
      await store.recordOutcomes('w', claimed.map((p) => ({ kind: 'published' as const, postId: p.id, token: p.token, externalId: null, externalUrl: null })));
      return claimed.map((p) => p.id);
    }

    it('counts due posts by channel as countDue does, without history at first', async () => {
      const { store } = await migrated();
      assert.deepEqual(await store.dueByChannel(20), []);
      const a = await store.addChannel({ name: 'a', platform: 'file', settings: { path: '/tmp/a.jsonl' }, onUnknown: 'retry' });
      const b = await store.addChannel({ name: 'b', platform: 'file', settings: { path: '/tmp/b.jsonl' }, onUnknown: 'retry' });
      const c = await store.addChannel({ name: 'c', platform: 'file', settings: { path: '/tmp/c.jsonl' }, onUnknown: 'retry' });
      await store.schedulePosts([
        ...Array.from({ length: 3 }, (_, i) => ({ channelId: a.id, text: `a${i}`, runAt: ago(10) })),
        { channelId: a.id, text: 'later', runAt: new Date(Date.now() + 3_600_000) },
        { channelId: b.id, text: 'b', runAt: ago(5) },
        { channelId: c.id, text: 'c', runAt: ago(5) },
      ]);
      await store.setChannelPaused('c', true);
      const loads = await store.dueByChannel(20);
      assert.deepEqual(loads, [
        { channelId: a.id, due: 3, latencyMs: null, samples: 0 },
        { channelId: b.id, due: 1, latencyMs: null, samples: 0 },
      ]);
      assert.equal(loads.reduce((n, l) => n + l.due, 0), await store.countDue(), 'the paused channel is left out, as countDue leaves it');
    });

    it('counts posts due within `aheadMs` as countDue(aheadMs) does (daemon --precise sizes a batch before its time)', async () => {
      const { store } = await migrated();
      const a = await store.addChannel({ name: 'a', platform: 'file', settings: { path: '/tmp/a.jsonl' }, onUnknown: 'retry' });
      const b = await store.addChannel({ name: 'b', platform: 'file', settings: { path: '/tmp/b.jsonl' }, onUnknown: 'retry' });
      const soon = new Date(Date.now() + 30_000);
      await store.schedulePosts([
        { channelId: a.id, text: 'now', runAt: ago(5) },
        { channelId: a.id, text: 'soon', runAt: soon },
        { channelId: b.id, text: 'soon', runAt: soon },
        { channelId: b.id, text: 'later', runAt: new Date(Date.now() + 3_600_000) },
      ]);
      assert.deepEqual(await store.dueByChannel(20), [{ channelId: a.id, due: 1, latencyMs: null, samples: 0 }]);
      const ahead = await store.dueByChannel(20, 60_000);
      assert.deepEqual(ahead, [
        { channelId: a.id, due: 2, latencyMs: null, samples: 0 },
        { channelId: b.id, due: 1, latencyMs: null, samples: 0 },
      ]);
      assert.equal(ahead.reduce((n, l) => n + l.due, 0), await store.countDue(60_000));
    });

    it("measures each channel's publish time from its recent published attempts, at most `samples` of them", async () => {
      const { store } = await migrated();
      const fast = await store.addChannel({ name: 'fast', platform: 'file', settings: { path: '/tmp/f.jsonl' }, onUnknown: 'retry' });
      const slow = await store.addChannel({ name: 'slow', platform: 'file', settings: { path: '/tmp/s.jsonl' }, onUnknown: 'retry' });
      // history: 4 fast posts (published at once), 2 slow ones (published after 300 ms), one slow failure
      await store.schedulePosts(Array.from({ length: 4 }, (_, i) => ({ channelId: fast.id, text: `f${i}`, runAt: ago(60) })));
      await publish(store, 4, 0);
      await store.schedulePosts(Array.from({ length: 2 }, (_, i) => ({ channelId: slow.id, text: `s${i}`, runAt: ago(60) })));
      await publish(store, 2, 300);
      await store.schedulePosts([{ channelId: slow.id, text: 'bad', runAt: ago(60) }]);
      const [bad] = await store.claim('w', 1, 60_000);
      assert.ok(bad !== undefined);
      await sleep(1_000);
      await store.recordOutcomes('w', [{ kind: 'failed', postId: bad.id, token: bad.token, error: 'HTTP 400' }]);
      // now due: 5 on each channel
      await store.schedulePosts([
        ...Array.from({ length: 5 }, (_, i) => ({ channelId: fast.id, text: `F${i}`, runAt: ago(1) })),
        ...Array.from({ length: 5 }, (_, i) => ({ channelId: slow.id, text: `S${i}`, runAt: ago(1) })),
      ]);
      const loads = await store.dueByChannel(20);
      const byId = new Map(loads.map((l) => [l.channelId, l]));
      const f = byId.get(fast.id);
      const s = byId.get(slow.id);
      assert.ok(f !== undefined && s !== undefined, JSON.stringify(loads));
      assert.deepEqual([f.due, f.samples, s.due, s.samples], [5, 4, 5, 2], 'the failed attempt is no publish time');
      assert.ok(f.latencyMs !== null && f.latencyMs < 250, `fast: ${f.latencyMs} ms`);
      assert.ok(s.latencyMs !== null && s.latencyMs >= 290 && s.latencyMs < 950, `slow: ${s.latencyMs} ms`);
      const few = await store.dueByChannel(3);
      assert.equal(few.find((l) => l.channelId === fast.id)?.samples, 3, 'at most `samples` posts per channel');
    });

    it('reads published posts through their index by channel', async () => {
      const { db, store } = await migrated();
      // 20 channels with 100 published posts each: one channel's are a twentieth of them
      const channels = [];
      for (let c = 0; c < 20; c++) channels.push(await store.addChannel({ name: `c${c}`, platform: 'file', settings: { path: '/tmp/m.jsonl' }, onUnknown: 'retry' }));
      await store.schedulePosts(channels.flatMap((ch) => Array.from({ length: 100 }, (_, i) => ({ channelId: ch.id, text: `p${i}`, runAt: ago(60) }))));
      while ((await publish(store, 500, 0)).length > 0);
      const channel = channels[7];
      assert.ok(channel !== undefined);
      const plan = await explainRecent(db, channel.id);
      assert.match(plan, /post_schedule_published/, `plan: ${plan}`);
    });
  });
}

/** One raw UPDATE, written for each dialect (the store has no way to craft a known duration). */
interface RawUpdate {
  readonly sqlite: string;
  readonly postgres: string;
  /** times are DATETIME(3): milliseconds as an INTERVAL of microseconds */
  readonly mysql: string;
  readonly params: readonly number[];
}

/** The attempt of post `id` started `ms` before it ended. */
function setStart(id: number, ms: number): RawUpdate {
  return {
    sqlite: 'UPDATE post_attempts SET started_at = finished_at - ? WHERE post_id = ?',
    postgres: "UPDATE post_attempts SET started_at = finished_at - $1 * interval '1 millisecond' WHERE post_id = $2",
    mysql: 'UPDATE post_attempts SET started_at = finished_at - INTERVAL ? * 1000 MICROSECOND WHERE post_id = ?',
    params: [ms, id],
  };
}

/** Post `id` was scheduled `ms` before it was published. */
function setLateness(id: number, ms: number): RawUpdate {
  return {
    sqlite: 'UPDATE post_schedule SET scheduled_at = published_at - ? WHERE id = ?',
    postgres: "UPDATE post_schedule SET scheduled_at = published_at - $1 * interval '1 millisecond' WHERE id = $2",
    mysql: 'UPDATE post_schedule SET scheduled_at = published_at - INTERVAL ? * 1000 MICROSECOND WHERE id = ?',
    params: [ms, id],
  };
}

/** Post `id`'s attempt and last update moved by `ms` (its publish time and lateness kept). */
function shift(id: number, ms: number): RawUpdate[] {
  return [
    {
      sqlite: 'UPDATE post_attempts SET started_at = started_at + ?, finished_at = finished_at + ? WHERE post_id = ?',
      postgres: "UPDATE post_attempts SET started_at = started_at + $1 * interval '1 millisecond', finished_at = finished_at + $2 * interval '1 millisecond' WHERE post_id = $3",
      mysql: 'UPDATE post_attempts SET started_at = started_at + INTERVAL ? * 1000 MICROSECOND, finished_at = finished_at + INTERVAL ? * 1000 MICROSECOND WHERE post_id = ?',
      params: [ms, ms, id],
    },
    {
      sqlite: 'UPDATE post_schedule SET updated_at = updated_at + ? WHERE id = ?',
      postgres: "UPDATE post_schedule SET updated_at = updated_at + $1 * interval '1 millisecond' WHERE id = $2",
      mysql: 'UPDATE post_schedule SET updated_at = updated_at + INTERVAL ? * 1000 MICROSECOND WHERE id = ?',
      params: [ms, id],
    },
  ];
}

/** Runs the updates in order through a separate connection. */
async function rawUpdates(db: TestDatabase, updates: readonly RawUpdate[]): Promise<void> {
  const target = parseDatabaseUrl(db.url);
  if (target.dialect === 'sqlite') {
    const raw = new Database(target.path);
    try {
      for (const u of updates) raw.prepare(u.sqlite).run(...u.params);
    } finally {
      raw.close();
    }
    return;
  }
  if (target.dialect === 'mysql') {
    for (const u of updates) await rawQuery(db.url, u.mysql, u.params);
    return;
  }
  const sql = postgres(target.url, { max: 1, onnotice: () => undefined, connection: { search_path: target.schema } });
  try {
    for (const u of updates) await sql.unsafe(u.postgres, [...u.params]);
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** The database's plan for the store's own statement reading one channel's most recently published posts, through a separate connection. */
async function explainRecent(db: TestDatabase, channelId: number): Promise<string> {
  const target = parseDatabaseUrl(db.url);
  if (target.dialect === 'sqlite') {
    const raw = new Database(target.path);
    try {
      raw.exec('ANALYZE');
      return (raw.prepare(`EXPLAIN QUERY PLAN ${RECENT_PUBLISH_TIMES}`).all(channelId, 20) as { detail: string }[]).map((r) => r.detail).join(' | ');
    } finally {
      raw.close();
    }
  }
  if (target.dialect === 'mysql') {
    // EXPLAIN has one row per table read, each with the index (`key`) it reads: the
    // post_schedule row of one due channel's branch of Store.dueByChannel
    await rawQuery(db.url, 'ANALYZE TABLE post_schedule');
    const rows = await rawQuery<{ table: string; key: string | null }>(db.url, `EXPLAIN ${MYSQL_RECENT_PUBLISH_TIMES}`, [channelId, 20]);
    return rows
      .filter((r) => r.table === 'post_schedule')
      .map((r) => `post_schedule: ${r.key ?? 'no index'}`)
      .join(' | ');
  }
  const sql = postgres(target.url, { max: 1, onnotice: () => undefined, connection: { search_path: target.schema } });
  try {
    await sql.unsafe('ANALYZE post_schedule');
    // Store.dueByChannel's whole statement: the published index is read inside its lateral join
    const rows = await sql.unsafe(`EXPLAIN ${DUE_BY_CHANNEL}`, [20, 0]);
    return rows.map((r) => String(Object.values(r)[0])).join(' | ');
  } finally {
    await sql.end({ timeout: 1 });
  }
}
