import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CredentialsRejectedError, PermanentPublishError, RetryablePublishError } from '../src/publishers/publisher.ts';
import { reasonOf } from '../src/reasons.ts';
import type { TuneHistory } from '../src/store/store.ts';
import { peakWithin, percentile } from '../src/tune/figures.ts';
import type { TuneSettings } from '../src/tune/recommend.ts';
import { reportLines, tuneReport } from '../src/tune/report.ts';
import { parseWindow } from '../src/tune/window.ts';

const NOW = new Date('2026-12-01T12:00:00Z');
const DEFAULTS: TuneSettings = {
  timeoutMs: 55_000,
  workerTimeoutMs: 50_000,
  batchSize: 5,
  minWorkers: 1,
  maxWorkers: 5,
  globalMaxWorkers: null,
  workerConcurrency: 5,
  publishTimeoutMs: 10_000,
  maxAttempts: 5,
  rateLimits: {},
};

type Cycle = TuneHistory['cycles'][number];
type Run = TuneHistory['workerRuns'][number];
type Attempt = TuneHistory['attempts'][number];

/** A history of `n` cycles a minute apart, each with the given shape. */
function history(parts: { cycles?: Partial<Cycle>[]; runs?: Partial<Run>[]; attempts?: Partial<Attempt>[]; paused?: TuneHistory['paused'] } = {}): TuneHistory {
  return {
    windowMs: 86_400_000,
    now: NOW,
    cycles: (parts.cycles ?? []).map((c, i) => ({ id: i + 1, startedAt: new Date(NOW.getTime() - (i + 1) * 60_000), durationMs: 1_000, pending: 0, workersSpawned: 0, exitCode: 0, ...c })),
    workerRuns: (parts.runs ?? []).map((r) => ({ cycleId: 1, durationMs: 500, published: 1, retried: 0, failed: 0, exitCode: 0, ...r })),
    attempts: (parts.attempts ?? []).map((a, i) => ({ channel: 'news', finishedAt: new Date(NOW.getTime() - i * 1000), outcome: 'published', reason: null, publishMs: 200, ...a })),
    published: [],
    paused: parts.paused ?? [],
  };
}

const times = <T>(n: number, x: T): T[] => Array.from({ length: n }, () => x);
const settingsOf = (h: TuneHistory, s: TuneSettings = DEFAULTS) => tuneReport(h, s, '24h', 10_000).recommendations.map((r) => [r.setting, r.from, r.to]);

describe('tune: recommendations from a history', () => {
  it('a quiet history: nothing to change, with the figures', () => {
    const h = history({ cycles: times(10, {}), runs: times(10, {}), attempts: times(10, {}) });
    const report = tuneReport(h, DEFAULTS, '24h', 10_000);
    assert.deepEqual(report.recommendations, []);
    const lines = reportLines(report);
    assert.match(lines[0] ?? '', /^nothing to change over the last 24h: 10 cycles, 10 worker runs, 10 attempts/);
    assert.match(lines.join('\n'), /0 of 10 hit the guard, 0 left posts due/);
  });

  it('cycles that hit the guard while capped at MAX_WORKERS: more workers, by the backlog', () => {
    // 4 of 10 cycles ran out of time with 5 workers and 60 due posts, of which 20 were handled
    const cycles = [...times(4, { durationMs: 55_000, exitCode: 2, workersSpawned: 5, pending: 60 }), ...times(6, {})];
    const runs = [1, 2, 3, 4].map((cycleId) => ({ cycleId, published: 5 }));
    assert.deepEqual(settingsOf(history({ cycles, runs })), [['MAX_WORKERS', '5', '20']], 'x4 at most at once (backlog 240/20 = 12)');
    const lines = reportLines(tuneReport(history({ cycles, runs }), DEFAULTS, '24h', 10_000));
    assert.match(lines[1] ?? '', /^MAX_WORKERS 5 -> 20 \(x4\): 4 of 10 cycles \(40%\) fell short: 4 hit the guard .*240 due posts and handled 20/);
  });

  it('cycles that ended with posts due (the workers ran out of time before the guard): short too', () => {
    // every cycle quick, but 2 workers (MAX_WORKERS 2) handled 4 of 20 due posts each time
    const cycles = times(5, { durationMs: 2_300, workersSpawned: 2, pending: 20 });
    const runs = [1, 2, 3, 4, 5].flatMap((cycleId) => times(2, { cycleId, published: 2 }));
    const report = tuneReport(history({ cycles, runs }), { ...DEFAULTS, maxWorkers: 2, timeoutMs: 3_000, workerTimeoutMs: 2_900 }, '1h', 10_000);
    assert.deepEqual([report.figures.cycles.guardHits, report.figures.cycles.leftDue], [0, 5]);
    assert.deepEqual(report.recommendations.map((r) => [r.setting, r.from, r.to]), [['MAX_WORKERS', '2', '8']]);
  });

  it('cycles that hit the guard with workers to spare: more sends at once per worker', () => {
    // near the guard (over 90% of TIMEOUT_MS), 1 worker of 5, everything handled: slow sends
    const cycles = [...times(3, { durationMs: 52_000, exitCode: 0, workersSpawned: 1, pending: 4 }), ...times(3, {})];
    const runs = [1, 2, 3].map((cycleId) => ({ cycleId, published: 4 }));
    assert.deepEqual(settingsOf(history({ cycles, runs })), [['WORKER_CONCURRENCY', '5', '10']], 'x2: the slowest cycles to half the guard');
  });

  it('a guard hit now and then (under 10% of cycles) is no reason', () => {
    const cycles = [{ durationMs: 55_000, exitCode: 2, workersSpawned: 5, pending: 60 }, ...times(19, {})];
    assert.deepEqual(settingsOf(history({ cycles })), []);
  });

  it('idle worker runs: a larger BATCH_SIZE; not while cycles are short of workers', () => {
    const runs = [...times(3, { published: 6 }), ...times(3, { published: 0 })];
    assert.deepEqual(settingsOf(history({ cycles: times(6, {}), runs })), [['BATCH_SIZE', '5', '10']]);
    const busy = [...times(3, { durationMs: 55_000, exitCode: 2, workersSpawned: 5, pending: 60 }), ...times(3, {})];
    assert.deepEqual(
      settingsOf(history({ cycles: busy, runs })).map(([s]) => s),
      ['MAX_WORKERS'],
    );
  });

  it('timeouts on a channel: PUBLISH_TIMEOUT_MS up, within WORKER_TIMEOUT_MS', () => {
    const attempts = [...times(8, { publishMs: 9_000 }), ...times(2, { outcome: 'retry', reason: 'timeout', publishMs: 10_000 })];
    assert.deepEqual(settingsOf(history({ attempts })), [['PUBLISH_TIMEOUT_MS', '10000', '20000']]);
    assert.deepEqual(settingsOf(history({ attempts }), { ...DEFAULTS, publishTimeoutMs: 40_000 }), [['PUBLISH_TIMEOUT_MS', '40000', '50000']]);
    assert.deepEqual(settingsOf(history({ attempts }), { ...DEFAULTS, publishTimeoutMs: 50_000 }), [], 'already at WORKER_TIMEOUT_MS');
  });

  it('a channel where every attempt timed out (none published): down, not slow, so no PUBLISH_TIMEOUT_MS raise', () => {
    const attempts = times(5, { outcome: 'retry', reason: 'timeout', publishMs: 10_000 });
    assert.deepEqual(settingsOf(history({ attempts })), []);
  });

  it("an image host's 429s (recorded as content) call for no rate limit on the channel", () => {
    const attempts = [...times(10, {}), ...times(3, { outcome: 'retry', reason: 'content', publishMs: 5 })];
    assert.deepEqual(settingsOf(history({ attempts })), []);
  });

  it('429s on a channel: a rate limit below what the network took in its busiest minute, or below the current one', () => {
    const attempts = [...times(10, {}), ...times(3, { outcome: 'waited', reason: 'rate-limited', publishMs: 5 })];
    assert.deepEqual(settingsOf(history({ attempts })), [['rate_limit', 'default', '8/1m']], '10 went through within a minute: 80% of them');
    assert.deepEqual(settingsOf(history({ attempts }), { ...DEFAULTS, rateLimits: { news: '10/60s' } }), [['rate_limit', '10/60s', '8/1m']]);
    const report = tuneReport(history({ attempts }), DEFAULTS, '24h', 10_000);
    assert.equal(report.recommendations[0]?.channel, 'news');
    assert.match(reportLines(report)[1] ?? '', /^channel news: rate_limit default -> 8\/1m .*3 answers of channel news were 429/);
    // a pause alone (the 429 was answered before the window) calls for it too
    const paused = history({ attempts: times(3, {}), paused: [{ channel: 'news', until: new Date(NOW.getTime() + 60_000), reason: 'HTTP 429' }] });
    assert.deepEqual(settingsOf(paused), [['rate_limit', 'default', '2/1m']]);
  });

  it('posts that failed after MAX_ATTEMPTS on errors that pass: more attempts; a 4xx is no reason', () => {
    const gaveUp = [...times(10, {}), ...times(2, { outcome: 'failed', reason: 'server' })];
    const h = { ...history({ attempts: gaveUp }), published: times(10, { channel: 'news', publishedAt: NOW, latenessMs: 1000 }) };
    assert.deepEqual(settingsOf(h), [['MAX_ATTEMPTS', '5', '7']]);
    const rejected = { ...history({ attempts: [...times(10, {}), ...times(2, { outcome: 'failed', reason: 'rejected' })] }), published: h.published };
    assert.deepEqual(settingsOf(rejected), []);
  });

  it('says when a list reached the read limit', () => {
    const report = tuneReport(history({ attempts: times(3, {}) }), DEFAULTS, '24h', 3);
    assert.equal(report.truncated, true);
    assert.match(reportLines(report)[0] ?? '', /\(the most recent 3 of each\)$/);
  });
});

describe('tune: figures and window', () => {
  it('nearest-rank percentiles and the busiest span', () => {
    assert.equal(percentile([], 90), null);
    assert.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90), 9);
    assert.equal(percentile([5], 50), 5);
    assert.equal(peakWithin([0, 10, 59_999, 60_000, 120_000], 60_000), 3);
    assert.equal(peakWithin([], 60_000), 0);
  });

  it('--window: minutes, hours or days from 1m to 30d', () => {
    assert.equal(parseWindow('24h'), 86_400_000);
    assert.equal(parseWindow('30m'), 1_800_000);
    assert.equal(parseWindow('7d'), 604_800_000);
    for (const bad of ['0m', '31d', '1s', 'h', '24 hours', '']) assert.equal(parseWindow(bad), null, bad);
  });
});

describe('attempt reasons', () => {
  it('from the error a publisher threw', () => {
    const cases: [unknown, string][] = [
      [new RetryablePublishError('webhook x: HTTP 429', 1000, false, true), 'rate-limited'],
      [new RetryablePublishError('webhook x: no answer within 500 ms after the request was sent', null, true, false, 'timeout'), 'timeout'],
      [new RetryablePublishError('webhook x: ECONNREFUSED', null, false, false, 'network'), 'network'],
      [new RetryablePublishError('webhook x: HTTP 502', null, true), 'server'],
      [new PermanentPublishError('webhook x: HTTP 401'), 'auth'],
      [new PermanentPublishError('webhook x: HTTP 422: too long'), 'rejected'],
      [new PermanentPublishError('slack x: chat.postMessage refused the message (msg_too_long)'), 'rejected'],
      [new PermanentPublishError('webhook x: refused to connect to a loopback, private or link-local address (SSRF protection); ...'), 'channel'],
      [new CredentialsRejectedError('mastodon x refused the access token'), 'auth'],
      [new Error('boom'), 'other'],
    ];
    for (const [e, reason] of cases) assert.equal(reasonOf(e), reason, (e as Error).message);
  });
});
