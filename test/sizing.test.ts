import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deadlineSizing, describeSizing, type DeadlineLimits, type DueChannel } from '../src/sizing/deadline.ts';

// Defaults: MAX_WORKERS 5, WORKER_CONCURRENCY 5 (25 in flight), WORKER_TIMEOUT_MS 50 s
// (a 36 s budget), PUBLISH_TIMEOUT_MS 10 s (2.5 s assumed without history).
const LIMITS: DeadlineLimits = { maxWorkers: 5, minWorkers: 1, workerConcurrency: 5, globalMaxWorkers: null, workerTimeoutMs: 50_000, publishTimeoutMs: 10_000, defaultLatencyMs: 2_500 };
const channel = (channelId: number, due: number, latencyMs: number | null, rate: DueChannel['rate'] = null): DueChannel => ({ channelId, due, latencyMs, rate });

describe('deadline-aware sizing', () => {
  it('nothing due: no workers', () => {
    const s = deadlineSizing([], LIMITS);
    assert.equal(s.workers, 0);
    assert.equal(describeSizing(s, 2_500), '0 due -> no workers');
  });

  it('200 posts at 200 ms: one worker of 25 in flight, not five of five (issue 10)', () => {
    const s = deadlineSizing([channel(1, 200, 200)], LIMITS);
    assert.equal(s.workers, 1);
    assert.equal(s.inFlight, 25);
    assert.equal(s.saturated, false);
    assert.equal(
      describeSizing(s, 2_500),
      '200 due, est. 40.0 s of publishing at 200 ms/post -> 1 worker x 25 in flight (clears in ~1.6 s of the 36 s budget)',
    );
  });

  it('2,000 posts at 2 s: the maximum, five workers of five (issue 10)', () => {
    const s = deadlineSizing([channel(1, 2_000, 2_000)], LIMITS);
    assert.equal(s.workers, 5);
    assert.equal(s.inFlight, 5);
    assert.equal(s.saturated, true);
    assert.match(describeSizing(s, 2_500), /^2000 due, est\. 4000\.0 s of publishing at 2000 ms\/post -> 5 workers x 5 in flight \(does not clear: ~160\.0 s against the 36 s budget, the maximum\)$/);
  });

  it('few posts: one worker with as many in flight as there are posts', () => {
    const s = deadlineSizing([channel(1, 7, 300)], LIMITS);
    assert.deepEqual([s.workers, s.inFlight], [1, 7]);
  });

  it('a mix of fast and slow channels is weighed by each one latency', () => {
    // 300 x 100 ms + 100 x 5 s = 530 s of publishing: 21.2 s at 25 in flight, inside 36 s
    const mixed = deadlineSizing([channel(1, 300, 100), channel(2, 100, 5_000)], LIMITS);
    assert.deepEqual([mixed.workers, mixed.inFlight, mixed.publishMs], [1, 25, 530_000]);
    // three times the slow posts: 1,530 s, 61 s at 25 in flight: the maximum
    const slow = deadlineSizing([channel(1, 300, 100), channel(2, 300, 5_000)], LIMITS);
    assert.deepEqual([slow.workers, slow.inFlight, slow.saturated], [5, 5, true]);
    // the same 600 posts, all fast: one worker
    const fast = deadlineSizing([channel(1, 300, 100), channel(2, 300, 100)], LIMITS);
    assert.equal(fast.workers, 1);
  });

  it('a channel without history is assumed at the default latency, and the log says so', () => {
    // 300 x 2.5 s = 750 s: 30 s at 25 in flight, inside the 36 s budget
    const inside = deadlineSizing([channel(1, 300, null)], LIMITS);
    assert.equal(inside.workers, 1);
    assert.equal(inside.unmeasured, 1);
    assert.match(describeSizing(inside, 2_500), /\(1 channel without history taken at 2500 ms\/post\)/);
    // 400: 40 s, over the budget
    assert.equal(deadlineSizing([channel(1, 400, null)], LIMITS).workers, 5);
    // measured fast, the same 500 need one worker
    assert.equal(deadlineSizing([channel(1, 500, 150)], LIMITS).workers, 1);
  });

  it('caps: MAX_WORKERS x WORKER_CONCURRENCY in flight, GLOBAL_MAX_WORKERS processes, MIN_WORKERS', () => {
    const wide = deadlineSizing([channel(1, 5_000, 200)], { ...LIMITS, maxWorkers: 10, workerConcurrency: 10 });
    assert.deepEqual([wide.workers, wide.inFlight], [1, 100], '1,000 s at 100 in flight: 10 s, one worker of 100');
    const global = deadlineSizing([channel(1, 2_000, 2_000)], { ...LIMITS, globalMaxWorkers: 2 });
    assert.deepEqual([global.workers, global.inFlight], [2, 5], 'two slots of WORKER_CONCURRENCY: the global bound is slots x 5');
    assert.equal(global.saturated, true);
    // under GLOBAL_MAX_WORKERS a backlog one worker clears is one worker of WORKER_CONCURRENCY, not 25 in flight
    const light = deadlineSizing([channel(1, 100, 200)], { ...LIMITS, globalMaxWorkers: 4 });
    assert.deepEqual([light.workers, light.inFlight], [1, 5]);
    // 1,200 at 200 ms = 240 s: one worker of 5 would take 48 s, over the 36 s budget; two take 24 s
    const some = deadlineSizing([channel(1, 1_200, 200)], { ...LIMITS, globalMaxWorkers: 4 });
    assert.deepEqual([some.workers, some.inFlight, some.saturated], [2, 5, false]);
    const min = deadlineSizing([channel(1, 200, 200)], { ...LIMITS, minWorkers: 2 });
    assert.deepEqual([min.workers, min.inFlight], [2, 12]);
    // each case within its own MAX_WORKERS x WORKER_CONCURRENCY (and under the global cap, WORKER_CONCURRENCY each)
    const cases: [ReturnType<typeof deadlineSizing>, { maxWorkers: number; workerConcurrency: number; globalMaxWorkers: number | null }][] = [
      [wide, { ...LIMITS, maxWorkers: 10, workerConcurrency: 10 }],
      [global, { ...LIMITS, globalMaxWorkers: 2 }],
      [light, { ...LIMITS, globalMaxWorkers: 4 }],
      [some, { ...LIMITS, globalMaxWorkers: 4 }],
      [min, LIMITS],
    ];
    for (const [s, l] of cases) {
      assert.ok(s.workers * s.inFlight <= l.maxWorkers * l.workerConcurrency, `${s.workers} x ${s.inFlight} within ${l.maxWorkers} x ${l.workerConcurrency}`);
      if (l.globalMaxWorkers !== null) assert.ok(s.inFlight <= l.workerConcurrency && s.workers <= l.globalMaxWorkers);
    }
  });

  it('a rate window: posts it holds back are not counted, and it sets a floor on the time', () => {
    // 20 per minute for 100 due: 20 x (floor(36 s / 60 s) + 1) = 20 go this cycle
    const s = deadlineSizing([channel(1, 100, 200, { limit: 20, windowMs: 60_000 })], LIMITS);
    assert.deepEqual([s.counted, s.workers, s.inFlight], [20, 1, 20]);
    assert.match(describeSizing(s, 2_500), /^100 due, est\. 4\.0 s of publishing at 200 ms\/post \(80 held back by rate limits\) -> 1 worker x 20 in flight/);
    // 5 per second for 100 due: all fit in 36 s, but not faster than 19 windows
    const paced = deadlineSizing([channel(1, 100, 200, { limit: 5, windowMs: 1_000 })], LIMITS);
    assert.equal(paced.counted, 100);
    assert.equal(paced.clearsInMs, 19_200);
    assert.equal(paced.workers, 1, 'more processes would not go faster than the window');
  });
});
