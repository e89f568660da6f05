import { TRANSITIONS } from '../states.ts';
import type {
  Channel,
  ClaimedPost,
  CycleResult,
  NewChannel,
  NewPost,
  OnUnknown,
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
  /** changes a channel's policy or enabled flag; null when there is no such channel */
  updateChannel(name: string, changes: ChannelChanges): Promise<Channel | null>;

  /** inserts posts (content and schedule) in one transaction; returns their ids in order */
  schedulePosts(posts: readonly NewPost[]): Promise<number[]>;
  getPost(id: number): Promise<Post | null>;
  /** posts pending with run_at <= the database's now (served by the due index) */
  countDue(): Promise<number>;

  /**
   * claim: moves up to `limit` due posts, oldest run_at first, to processing for
   * `workerId` in one atomic statement, with attempts + 1 and a lease of `leaseMs`.
   * Two concurrent claims never return the same post. A worker claims only what it
   * starts at once, so the claim is the record of the attempt, made before the call.
   */
  claim(workerId: string, limit: number, leaseMs: number): Promise<ClaimedPost[]>;
  /**
   * publish / retryLater / fail / holdUnknown / release: records outcomes in one transaction. Each update is
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
   * recover / recoverUnknown: a post whose lease expired may have been sent. It goes
   * back to pending, unconfirmed, when its channel's policy is retry or check and it had
   * fewer than `maxAttempts` attempts; otherwise (hold, no channel, attempts used up)
   * it is held as unknown.
   */
  recoverExpired(maxAttempts: number): Promise<RecoveredPost[]>;
  /**
   * heartbeat: extends to now + `leaseMs` the leases of posts this worker still holds
   * (fenced by worker and attempt). Returns the ids renewed; a missing one was taken away.
   */
  renewLeases(workerId: string, held: readonly { postId: number; attempt: number }[], leaseMs: number): Promise<number[]>;
  /**
   * requeue: failed or unknown posts back to pending, due now, attempts reset.
   * `allFailed` = every failed post (unknown ones are only ever requeued by id). The operator
   * chose to send again: the post is no longer unconfirmed, so it is sent without a check.
   */
  requeue(ids: readonly number[] | 'allFailed'): Promise<number[]>;
  /** confirm: unknown posts to published (an operator saw them on the platform). */
  confirmPublished(ids: readonly number[]): Promise<number[]>;
  /** cancel: a pending or unknown post to cancelled. Returns the status it had (null when not found). */
  cancel(id: number): Promise<{ cancelled: boolean; status: PostStatus | null }>;

  /**
   * Takes the cycle lock of `host` for this process: false when a cycle of that host is
   * still running. A lock whose process died is free at once (PostgreSQL: a session
   * advisory lock, gone with its connection; SQLite: a row naming a pid that no longer
   * runs), and any lock is free after `ttlMs`.
   */
  tryLockCycle(host: string, ttlMs: number): Promise<boolean>;
  unlockCycle(host: string): Promise<void>;
  /**
   * The global worker cap: takes up to `wanted` of the `cap` worker slots shared by
   * every dispatcher on this database, for this store's connection, and returns how
   * many it got (0 when all are in use). Slots are given back by releaseWorkerSlots,
   * and are free at once when their dispatcher dies (PostgreSQL: session advisory
   * locks; SQLite: rows naming a pid that no longer runs), or after `ttlMs`.
   */
  acquireWorkerSlots(host: string, wanted: number, cap: number, ttlMs: number): Promise<number>;
  releaseWorkerSlots(): Promise<void>;
  startCycle(startedAt: Date, host: string): Promise<number>;
  finishCycle(cycleId: number, result: CycleResult, runs: readonly WorkerRun[]): Promise<void>;
  status(cycles: number): Promise<StatusReport>;
}

export interface ChannelChanges {
  readonly onUnknown?: OnUnknown;
  readonly enabled?: boolean;
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
export function leaseExpiredMessage(workerId: string | null, attempts: number, held: boolean): string {
  const what = `lease expired: worker ${workerId ?? '(unknown)'} stopped without recording an outcome (attempt ${attempts})`;
  return held ? `${what}; it may have been published: check the channel, then retry or mark-published` : what;
}

/** The status a post whose lease expired moves to, by its channel's policy (null: no channel). */
export function recoveredStatus(onUnknown: OnUnknown | null, attempts: number, maxAttempts: number): PostStatus {
  const held = onUnknown === null || onUnknown === 'hold' || attempts >= maxAttempts;
  return held ? TRANSITIONS.recoverUnknown.to : TRANSITIONS.recover.to;
}
