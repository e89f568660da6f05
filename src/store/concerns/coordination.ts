/**
 * Coordination between dispatchers, workers and hosts on one database: the cycle lock of
 * each host, the GLOBAL_MAX_WORKERS slots, and the watch of the due posts.
 */
export interface CoordinationStore {
  /**
   * Coordination rows. Each names its holder and expires at a time on the database's
   * clock; the holder renews it every third of its ttl while it lives, and a renewal
   * that finds the row gone or taken says so (the holder then stops spawning or
   * claiming). A row whose holder process is known dead (same machine, pid gone) is
   * free at once; any other is free when it expires. Nothing lives in a database
   * session, so a lost connection, a restarted server or a pooler changes nothing.
   *
   * The cycle lock of `host` for this store: false when a live cycle of that host holds it.
   */
  tryLockCycle(host: string, ttlMs: number): Promise<boolean>;
  /** extends this store's cycle lock of `host`; false when it is no longer ours */
  renewCycleLock(host: string, ttlMs: number): Promise<boolean>;
  unlockCycle(host: string): Promise<void>;
  /**
   * The global worker cap: takes one of the `cap` slots shared by every dispatcher on
   * this database for each of `workers` (worker ids, which become the holders), as
   * many as are free, in order. Returns the workers that got one.
   */
  acquireWorkerSlots(host: string, workers: readonly string[], cap: number, ttlMs: number): Promise<string[]>;
  /** extends the slots these workers hold (a worker renews its own, its dispatcher all of them); returns those still held */
  renewWorkerSlots(workers: readonly string[], ttlMs: number): Promise<string[]>;
  releaseWorkerSlots(workers: readonly string[]): Promise<void>;
  /**
   * Calls `onChange` soon after another connection schedules, edits, cancels, retries or
   * recovers a post (anything that may move the next due time), and once each time the
   * watch (re)connects, since changes may have been missed meanwhile. PostgreSQL: LISTEN
   * on post_scheduler_due (a trigger notifies); SQLite: the file's data_version read
   * every DUE_POLL_MS; MySQL: an index-only fingerprint of the pending posts and paused
   * channels read every DUE_POLL_MS on a connection of the watch's own. A hint only: the daemon re-checks nextDue every few seconds too.
   */
  watchDue(onChange: () => void): Promise<DueWatch>;
}

/** A watch of changes to the due posts (Store.watchDue); close() ends it. */
export interface DueWatch {
  close(): Promise<void>;
}
