import type {
  Channel,
  ClaimedPost,
  CycleResult,
  NewChannel,
  NewPost,
  Outcome,
  Post,
  PostStatus,
  RecoveredPost,
  StatusReport,
  WorkerRun,
} from '../types.ts';

/**
 * The one storage interface. Each dialect (src/store/sqlite, src/store/postgres)
 * implements it, and test/store.conformance.ts runs the same suite against each.
 * Every method that changes a post's status is one transition of states.ts.
 */
export interface Store {
  readonly dialect: Dialect;

  /** creates or upgrades the schema; safe to call from many processes at once */
  migrate(): Promise<void>;
  /** a round trip to the database; throws when it cannot be reached */
  ping(): Promise<void>;
  close(): Promise<void>;

  addChannel(channel: NewChannel): Promise<Channel>;
  listChannels(): Promise<Channel[]>;
  findChannel(name: string): Promise<Channel | null>;

  /** inserts posts (content and schedule) in one transaction; returns their ids in order */
  schedulePosts(posts: readonly NewPost[]): Promise<number[]>;
  getPost(id: number): Promise<Post | null>;
  /** posts pending with run_at <= the database's now (served by the due index) */
  countDue(): Promise<number>;

  /**
   * claim: moves up to `limit` due posts, oldest run_at first, to processing for
   * `workerId` in one atomic statement, with attempts + 1 and a lease of `leaseMs`.
   * Two concurrent claims never return the same post.
   */
  claim(workerId: string, limit: number, leaseMs: number): Promise<ClaimedPost[]>;
  /**
   * publish / retryLater / fail: records outcomes in one transaction. Each update is
   * fenced: it applies only while the post is still processing under this worker and
   * attempt. Returns the ids that were applied; the others had been taken away.
   */
  recordOutcomes(workerId: string, outcomes: readonly Outcome[]): Promise<number[]>;
  /**
   * recordOutcomes and claim in one transaction and one round trip: what a busy
   * worker does each time publishes settle. A post that the outcomes return to
   * pending is not claimed again by the same call.
   */
  exchange(workerId: string, outcomes: readonly Outcome[], limit: number, leaseMs: number): Promise<Exchange>;
  /**
   * recover / recoverExhausted: returns posts whose lease expired to pending, or to
   * failed when they already had `maxAttempts` attempts.
   */
  recoverExpired(maxAttempts: number): Promise<RecoveredPost[]>;
  /**
   * heartbeat: extends to now + `leaseMs` the leases of posts this worker still holds
   * (fenced by worker and attempt). Returns the ids renewed; a missing one was taken away.
   */
  renewLeases(workerId: string, held: readonly { postId: number; attempt: number }[], leaseMs: number): Promise<number[]>;
  /** requeue: failed posts back to pending, due now, attempts reset. `all` = every failed post. */
  requeue(ids: readonly number[] | 'all'): Promise<number[]>;
  /** cancel: a pending post to cancelled. Returns the status it had (null when not found). */
  cancel(id: number): Promise<{ cancelled: boolean; status: PostStatus | null }>;

  /**
   * Takes the cycle lock of `host` for this process: false when a cycle of that host is
   * still running. A lock whose process died is free at once (PostgreSQL: a session
   * advisory lock, gone with its connection; SQLite: a row naming a pid that no longer
   * runs), and any lock is free after `ttlMs`.
   */
  tryLockCycle(host: string, ttlMs: number): Promise<boolean>;
  unlockCycle(host: string): Promise<void>;
  startCycle(startedAt: Date, host: string): Promise<number>;
  finishCycle(cycleId: number, result: CycleResult, runs: readonly WorkerRun[]): Promise<void>;
  status(cycles: number): Promise<StatusReport>;
}

export interface Exchange {
  /** ids of the outcomes that were applied (the rest were fenced out) */
  readonly applied: number[];
  readonly claimed: ClaimedPost[];
}

export type Dialect = 'sqlite' | 'postgres';

export class StoreError extends Error {
  override name = 'StoreError';
}

/** The message every store records when a lease runs out. */
export function leaseExpiredMessage(workerId: string | null, attempts: number): string {
  return `lease expired: worker ${workerId ?? '(unknown)'} stopped without recording an outcome (attempt ${attempts})`;
}
