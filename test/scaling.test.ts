import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { workerCount } from '../src/scaling.ts';

// The seed's "Scaling Logic" table, with BATCH_SIZE = 5, MIN_WORKERS = 1, MAX_WORKERS = 5.
const SEED_TABLE: [pending: number, workers: number][] = [
  [0, 0],
  [1, 1],
  [5, 1],
  [6, 2],
  [10, 2],
  [11, 3],
  [15, 3],
  [16, 4],
  [20, 4],
  [21, 5],
  [23, 5],
  [25, 5],
  [50, 5],
  [10_000, 5],
];

describe('worker count', () => {
  const defaults = { batchSize: 5, minWorkers: 1, maxWorkers: 5 };
  for (const [pending, workers] of SEED_TABLE) {
    it(`${pending} pending -> ${workers} workers`, () => {
      assert.equal(workerCount(pending, defaults), workers);
    });
  }

  it('follows the tuning table: heavy load (BATCH_SIZE 10, MAX_WORKERS 10)', () => {
    const heavy = { batchSize: 10, minWorkers: 1, maxWorkers: 10 };
    assert.equal(workerCount(55, heavy), 6);
    assert.equal(workerCount(100, heavy), 10);
    assert.equal(workerCount(1_000, heavy), 10);
  });

  it('applies MIN_WORKERS only when something is due', () => {
    const atLeast3 = { batchSize: 5, minWorkers: 3, maxWorkers: 5 };
    assert.equal(workerCount(0, atLeast3), 0);
    assert.equal(workerCount(1, atLeast3), 3);
    assert.equal(workerCount(20, atLeast3), 4);
  });
});
