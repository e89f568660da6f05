import type { CycleRecord, CycleResult, WorkerRun } from '../../types.ts';

/**
 * History: the record of cycles and their worker runs (src/server/api/history.ts shows
 * them), and the pruning of what is old.
 */
export interface HistoryStore {
  /** records a cycle's start on the database's clock (so that one clock dates it) */
  startCycle(host: string): Promise<number>;
  finishCycle(cycleId: number, result: CycleResult, runs: readonly WorkerRun[]): Promise<void>;
  /**
   * The last `limit` cycles, newest first (as `status` has them), each with its worker
   * runs (read through worker_runs' primary key, cycle_id first).
   */
  recentCycles(limit: number): Promise<CycleHistory[]>;
  /**
   * Deletes posts published, failed or cancelled more than `olderThanMs` ago (with their
   * content), and cycle records (with their worker runs) that old; in batches.
   */
  prune(olderThanMs: number): Promise<{ posts: number; cycles: number }>;
}

/** Store.recentCycles: a cycle and the runs of its workers. */
export interface CycleHistory extends CycleRecord {
  readonly runs: readonly WorkerRun[];
}
