import { TRANSITIONS } from '../states.ts';
import type {
  Channel,
  ClaimedPost,
  CycleRecord,
  CycleResult,
  HeldPost,
  NewChannel,
  NewPost,
  OnUnknown,
  Outcome,
  Post,
  PostPart,
  PostStatus,
  PublishedPart,
  RecoveredPost,
  StatusReport,
  WorkerRun,
  LatenessReport,
} from '../types.ts';

/**
 * The one storage interface. Each dialect (src/store/sqlite, src/store/postgres)
 * implements it, and test/store.conformance.ts runs the same suite against each.
 * Every method that changes a post's status is one transition of states.ts.
 */
export interface Store {
  readonly dialect: Dialect;
  /** opening it created the database (a new SQLite file): commands say so */
  readonly created: boolean;

  /** creates or upgrades the schema; safe to call from many processes at once */
  migrate(): Promise<void>;
  /** a round trip to the database; throws when it cannot be reached */
  ping(): Promise<void>;
  /**
   * Connections the server takes from ordinary clients, and how many are open now;
   * null where there is no such limit (SQLite).
   */
  connections(): Promise<{ max: number; used: number } | null>;
  close(): Promise<void>;

  addChannel(channel: NewChannel): Promise<Channel>;
  listChannels(): Promise<Channel[]>;
  findChannel(name: string): Promise<Channel | null>;
  /** changes a channel's policy or enabled flag; null when there is no such channel */
  updateChannel(name: string, changes: ChannelChanges): Promise<Channel | null>;
  /**
   * replaces a channel's sealed credentials (refreshed tokens, rekey, new ones); with
   * `expected`, only while they are still that value (a worker's refresh never undoes a
   * rekey or another worker's refresh). New credentials clear the channel's attention.
   * False when nothing was written.
   */
  saveCredentials(channelId: number, sealed: string | null, expected?: string | null): Promise<boolean>;
  /** marks (reason) or clears (null) that a channel needs an operator */
  setAttention(channelId: number, reason: string | null): Promise<void>;
  /** replaces a channel's settings (rekey moves a webhook's legacy url and secret out of them) */
  replaceSettings(channelId: number, settings: Record<string, unknown>): Promise<boolean>;

  /** inserts posts (content and schedule) in one transaction; returns their ids in order */
  schedulePosts(posts: readonly NewPost[]): Promise<number[]>;
  getPost(id: number): Promise<Post | null>;
  /**
   * posts pending with run_at <= the database's now (served by the due index); with
   * `aheadMs`, also those falling due within that many ms from now (`daemon --precise`
   * sizes its workers before the due time)
   */
  countDue(aheadMs?: number): Promise<number>;
  /**
   * The earliest run_at of a pending post of a channel not paused, on the database's
   * clock (served by the due index; past when posts are already due), with how far it is
   * from the database's now (`inMs`, negative when already due): `daemon --precise`
   * sleeps that long, never comparing run_at to its own clock. null when no post is
   * pending. With `after`, the earliest later than it (the daemon has handed out the due
   * times up to `after` already).
   */
  nextDue(after?: Date): Promise<NextDue | null>;
  /**
   * Calls `onChange` soon after another connection schedules, edits, cancels, retries or
   * recovers a post (anything that may move the next due time), and once each time the
   * watch (re)connects, since changes may have been missed meanwhile. PostgreSQL: LISTEN
   * on post_scheduler_due (a trigger notifies); SQLite: the file's data_version read
   * every DUE_POLL_MS. A hint only: the daemon re-checks nextDue every few seconds too.
   */
  watchDue(onChange: () => void): Promise<DueWatch>;

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
   * claim token (publishLate: a `published` also applies to a post that recovery took
   * back, as long as nobody claimed it since: same token). Returns the ids applied.
   */
  recordOutcomes(workerId: string, outcomes: readonly Outcome[]): Promise<number[]>;
  /**
   * recordOutcomes and claim in one transaction and one round trip: what a busy
   * worker does each time publishes settle. A post that the outcomes return to
   * pending is not claimed again by the same call.
   */
  exchange(workerId: string, outcomes: readonly Outcome[], limit: number, leaseMs: number, claim?: ClaimOptions): Promise<Exchange>;
  /**
   * recordPart: one part of a thread went out; its external id is put on record at once,
   * before the next part is sent. Fenced like an outcome (still processing under this
   * worker and claim token), and applied only when `index` is the number of parts
   * already recorded: a part is appended, never rewritten. False when not applied.
   * Not a transition: the post stays processing.
   */
  recordPart(workerId: string, postId: number, token: number, index: number, part: PublishedPart): Promise<boolean>;
  /**
   * recover / recoverUnknown: a post whose lease expired may have been sent. It goes
   * back to pending, unconfirmed, when its channel's policy is retry or check and it had
   * fewer than `maxAttempts` attempts; otherwise (hold, no channel, attempts used up)
   * it is held as unknown.
   */
  recoverExpired(maxAttempts: number): Promise<RecoveredPost[]>;
  /**
   * heartbeat: extends to now + `leaseMs` the leases of posts this worker still holds
   * (fenced by worker and claim token). Returns the ids renewed; a missing one was taken away.
   */
  renewLeases(workerId: string, held: readonly { postId: number; token: number }[], leaseMs: number): Promise<number[]>;
  /**
   * After a round trip whose answer was lost (it may have committed): the posts still
   * processing under this worker, and the posts `ids` whatever their state, as the
   * database has them now. The worker then releases claims it never saw and drops
   * outcomes that were in fact recorded.
   */
  reconcile(workerId: string, ids: readonly number[]): Promise<HeldPost[]>;
  /**
   * requeue: failed or unknown posts back to pending, due now; attempts keep counting,
   * and MAX_ATTEMPTS counts afresh from here (attempts_base = attempts).
   * `allFailed` = every failed post (unknown ones are only ever requeued by id). The operator
   * chose to send again: the post is no longer unconfirmed, so it is sent without a check.
   */
  requeue(ids: readonly number[] | 'allFailed'): Promise<number[]>;
  /** confirm: unknown posts to published (an operator saw them on the platform). */
  confirmPublished(ids: readonly number[]): Promise<number[]>;
  /** cancel: a pending or unknown post to cancelled. Returns the status it had (null when not found). */
  cancel(id: number): Promise<{ cancelled: boolean; status: PostStatus | null }>;

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
  /** records a cycle's start on the database's clock (so that one clock dates it) */
  startCycle(host: string): Promise<number>;
  finishCycle(cycleId: number, result: CycleResult, runs: readonly WorkerRun[]): Promise<void>;
  status(cycles: number): Promise<StatusReport>;
  // ---- status: lateness (src/cli/status.ts) ----
  /**
   * How late posts went out: published_at minus the time each was scheduled for
   * (scheduled_at; a retry's delay counts as lateness), over the posts published in the
   * last `windowMs`, at most the `limit` most recent (read through the index of final
   * states by updated_at). Percentiles are nearest-rank, in whole milliseconds.
   */
  lateness(windowMs: number, limit: number): Promise<LatenessReport>;
  // ---- metrics (src/server/metrics.ts): what /metrics adds to status ----
  /**
   * The posts that wait (pending, processing, unknown) by state and channel, each
   * state counted through its partial index, and the run_at of the oldest due post.
   * `attempts`: the attempts, by outcome, channel platform and reason, that ended within the
   * last `windowMs` of the posts that ended (or went unknown) in that window, at most
   * the `limit` most recent such posts (read through the indexes of final and unknown
   * states by updated_at, then post_attempts by post): a retry of a post still pending
   * is counted once the post ends.
   */
  metrics(windowMs: number, limit: number): Promise<MetricsSnapshot>;
  // ---- tune (src/tune): the history its recommendations are computed from ----
  /**
   * What this installation did in the last `windowMs` (on the database's clock), each list
   * the `limit` most recent, read through indexes: the cycles that started in it (cycles
   * by started_at) and their worker runs (by cycle), the attempts that ended in it
   * (post_attempts by finished_at) with their channel, the posts published in it (the
   * index of final states by updated_at) with their lateness, and the channels a
   * network's 429 paused until later.
   */
  tuneHistory(windowMs: number, limit: number): Promise<TuneHistory>;
  // ---- deadline-aware sizing (src/sizing, WORKER_SIZING=deadline) ----
  /**
   * The due posts (as countDue counts them) by channel, read through the due index, each
   * channel with its measured publish latency: the median of finished_at - started_at
   * over the published attempts of its `samples` most recently published posts (read
   * through the index of published posts by channel and updated_at, then post_attempts
   * by post). latencyMs null: the channel has no such attempt yet.
   */
  dueByChannel(samples: number): Promise<DueChannelLoad[]>;
  // ---- rate limits (src/ratelimits): windows and pauses shared by every worker ----
  /**
   * Takes one slot of each window `keys` names for one send of channel `channelId`, all
   * or none, in one transaction on the database's clock: a window grants a slot while
   * fewer than `limit` of its slots were taken in the last `windowMs` (a sliding window),
   * and no window grants one while the channel is paused. Refused: how long until every
   * window could grant one (and the pause is over).
   */
  takeRateSlot(channelId: number, keys: readonly RateKey[]): Promise<RateGrant>;
  /**
   * After the send of a slot taken `at` (RateGrant.at): its time in each of `keys` becomes
   * the database's now. The network saw the request somewhere between the two, so the
   * windows count it at the latest moment it can have arrived: a send slow to leave (a
   * cold connection, a busy machine) never lets the network see N+1 in its window.
   */
  settleRateSlot(keys: readonly string[], at: number): Promise<void>;
  /**
   * The concurrency cap of a channel: takes one of the `cap` send slots of `key` for
   * `holder` (one send), expiring `ttlMs` from the database's now (a worker that dies
   * mid-send frees it then). False when all are held.
   */
  acquireSendSlot(key: string, cap: number, holder: string, ttlMs: number): Promise<boolean>;
  releaseSendSlot(key: string, holder: string): Promise<void>;
  /**
   * Pauses a channel for `delayMs` from the database's now (a network's 429): no slot is
   * taken for it until then. A pause never shortens a longer one.
   */
  pauseChannel(channelId: number, delayMs: number, reason: string): Promise<void>;

  // ---- alerts (src/alerts): outcomes reported to ALERT_CHANNEL, once each ----
  /**
   * Posts that ended failed or unknown within the last `withinMs` (by updated_at) and
   * whose outcome under their latest claim (id, claim token) has no alert yet, oldest
   * first, at most `limit`. Never the alert channel's own posts (`alertChannelId`).
   */
  unalertedOutcomes(alertChannelId: number, withinMs: number, limit: number): Promise<AlertCandidate[]>;
  /**
   * Schedules each alert as a post of `text` on `alertChannelId`, due now, unless that
   * outcome (post id, claim token) already has one: one atomic statement per alert, so
   * dispatchers that look at the same time report it once. Returns the ids of the alert
   * posts scheduled.
   */
  scheduleAlerts(alertChannelId: number, alerts: readonly NewAlert[]): Promise<number[]>;
  // ---- managing posts and channels (src/operations): what operators and callers ask ----
  /**
   * schedules one post under the caller's key (`schedule --key`, Idempotency-Key): when a
   * post already has that key (of any channel) nothing is written and its id comes back
   * with created = false. Two calls racing with one key make one post.
   */
  scheduleWithKey(post: NewPost, key: string): Promise<{ id: number; created: boolean }>;
  /** posts matching `query`, in its order, at most `limit`, after its cursor (keyset) */
  listPosts(query: PostQuery): Promise<PostListItem[]>;
  /** the attempts of a post that ended (oldest first): outcome, error, times */
  postAttempts(postId: number): Promise<PostAttempt[]>;
  /**
   * edit: a pending post's content and/or time, only while it is pending (a claim in
   * between wins). Returns the status it had (null when not found).
   */
  editPost(id: number, changes: PostEdit): Promise<{ edited: boolean; status: PostStatus | null }>;
  /** an operator's pause (true) or resume (false) of a channel; null when there is no such channel */
  setChannelPaused(name: string, paused: boolean): Promise<Channel | null>;
  /**
   * removes a channel (its row stays, renamed, so its posts can still be shown), only when
   * none of its posts is pending, processing or unknown; with `cancelPosts`, its pending
   * and unknown posts are cancelled in the same transaction (processing ones still refuse).
   */
  removeChannel(name: string, cancelPosts: boolean): Promise<ChannelRemoval | null>;
  // ---- history (src/server/api/history.ts): the cycles and activity of `serve` ----
  /**
   * The last `limit` cycles, newest first (as `status` has them), each with its worker
   * runs (read through worker_runs' primary key, cycle_id first).
   */
  recentCycles(limit: number): Promise<CycleHistory[]>;
  /**
   * What happened in the last `windowMs` (database's clock), in buckets of `bucketMs`:
   * posts that ended published or failed per bucket of their updated_at (non-empty
   * buckets only; at most the `limit` most recent such posts, read through the index of
   * final states by updated_at), and the due count each cycle started with (cycles by
   * started_at), oldest first.
   */
  activity(windowMs: number, bucketMs: number, limit: number): Promise<ActivityReport>;

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

/** Store.activity: `at` is a bucket's start (or a cycle's start, for backlog). */
export interface ActivityReport {
  readonly from: Date;
  readonly to: Date;
  readonly published: readonly { readonly at: Date; readonly posts: number }[];
  readonly failed: readonly { readonly at: Date; readonly posts: number }[];
  readonly backlog: readonly { readonly at: Date; readonly due: number }[];
}

/** Store.metrics. */
export interface MetricsSnapshot {
  /** channel: its name, null when the post's channel row is gone */
  readonly waiting: readonly { readonly state: 'pending' | 'processing' | 'unknown'; readonly channel: string | null; readonly posts: number }[];
  /** the oldest due post's run_at (null: nothing due), and the database's now it was read at */
  readonly oldestDueAt: Date | null;
  readonly now: Date;
  /**
   * publishMs: the sum of finished_at - started_at over those with both (publishTimed of
   * them); reason: why they did not publish (src/reasons.ts), null for published ones
   * (and for attempts recorded before reasons were)
   */
  readonly attempts: readonly {
    readonly outcome: string;
    readonly platform: string | null;
    readonly reason: string | null;
    readonly attempts: number;
    readonly publishTimed: number;
    readonly publishMs: number;
  }[];
}

/** Store.tuneHistory; every list newest first. Channels by name (null: the channel row is gone). */
export interface TuneHistory {
  readonly windowMs: number;
  /** the database's now, the end of the window */
  readonly now: Date;
  /** durationMs, pending, workersSpawned, exitCode: null while the cycle runs (or when it died) */
  readonly cycles: readonly {
    readonly id: number;
    readonly startedAt: Date;
    readonly durationMs: number | null;
    readonly pending: number | null;
    readonly workersSpawned: number | null;
    readonly exitCode: number | null;
  }[];
  readonly workerRuns: readonly {
    readonly cycleId: number;
    readonly durationMs: number;
    readonly published: number;
    readonly retried: number;
    readonly failed: number;
    readonly exitCode: number | null;
  }[];
  /** publishMs: finished_at - started_at (null when its start is not known) */
  readonly attempts: readonly {
    readonly channel: string | null;
    readonly finishedAt: Date;
    readonly outcome: string;
    readonly reason: string | null;
    readonly publishMs: number | null;
  }[];
  /** latenessMs: published_at - scheduled_at */
  readonly published: readonly { readonly channel: string | null; readonly publishedAt: Date; readonly latenessMs: number }[];
  readonly paused: readonly { readonly channel: string; readonly until: Date; readonly reason: string | null }[];
}

/** Store.dueByChannel: one channel with due posts. */
export interface DueChannelLoad {
  readonly channelId: number;
  readonly due: number;
  /** the median publish time of its recent published attempts, whole ms; null: none */
  readonly latencyMs: number | null;
  /** how many attempts the median is taken over */
  readonly samples: number;
}

/** A post whose failed or unknown outcome has not been reported yet. */
export interface AlertCandidate {
  readonly postId: number;
  readonly token: number;
  readonly outcome: 'failed' | 'unknown';
  /** null when the post's channel is gone */
  readonly channelName: string | null;
  readonly error: string | null;
}

export interface NewAlert {
  readonly postId: number;
  readonly token: number;
  readonly outcome: 'failed' | 'unknown';
  readonly text: string;
}

/** One sliding window of the database: at most `limit` slots taken in any `windowMs`. */
export interface RateKey {
  readonly key: string;
  readonly limit: number;
  readonly windowMs: number;
}

export type RateGrant =
  /** `at`: the slot's time (epoch ms on the database's clock), for settleRateSlot */
  | { readonly granted: true; readonly at: number }
  /** `paused`: the channel was paused (a 429), not only full */
  | { readonly granted: false; readonly waitMs: number; readonly paused: boolean };

/** What `posts list` asks for. */
export interface PostQuery {
  readonly statuses?: readonly PostStatus[];
  readonly channelId?: number;
  /** run_at >= from */
  readonly from?: Date;
  /** run_at < to */
  readonly to?: Date;
  /** next: the soonest run_at first; newest: the latest run_at first */
  readonly order: 'next' | 'newest';
  readonly limit: number;
  /** the last row of the page before (keyset pagination) */
  readonly after?: { readonly runAt: Date; readonly id: number };
}

/** One row of `posts list`. */
export interface PostListItem {
  readonly id: number;
  readonly status: PostStatus;
  /** null when the channel row is gone */
  readonly channel: string | null;
  readonly runAt: Date;
  readonly attempts: number;
  /** the first part's text, at most LIST_TEXT characters */
  readonly text: string;
  readonly externalUrl: string | null;
  readonly lastError: string | null;
}

/** The longest text `listPosts` returns per post. */
export const LIST_TEXT = 200;

/** One attempt of a post that ended, as `posts show` lists it. */
export interface PostAttempt {
  readonly attempt: number;
  readonly workerId: string | null;
  /** its claim (null when not known) */
  readonly startedAt: Date | null;
  readonly finishedAt: Date;
  /**
   * published, retry, failed, unknown (the outcome kinds), expired (its lease ran out), or
   * waited (a rate limit or the channel's credentials held it back; not counted against
   * MAX_ATTEMPTS, and listed under the number of the attempt that follows it)
   */
  readonly outcome: string;
  /** why it did not publish (src/reasons.ts); null when it published, or when recorded before reasons were */
  readonly reason: string | null;
  readonly error: string | null;
  readonly externalId: string | null;
  readonly externalUrl: string | null;
}

export interface PostEdit {
  /** the first part's text, and the whole content (parts) it belongs to */
  readonly content?: { readonly text: string; readonly parts: readonly PostPart[] };
  readonly runAt?: Date;
}

/** What removeChannel did: removed, or the posts that kept it (cancelled: how many it cancelled). */
export interface ChannelRemoval {
  readonly removed: boolean;
  readonly cancelled: number;
  /** the channel's posts that kept it, by status (pending, processing, unknown) */
  readonly blocking: Readonly<Partial<Record<PostStatus, number>>>;
}

export interface ChannelChanges {
  readonly onUnknown?: OnUnknown;
  readonly enabled?: boolean;
}

export interface ClaimOptions {
  /**
   * The worker holds a GLOBAL_MAX_WORKERS slot in its name: it claims only while that
   * slot is still its own and unexpired, and the claim extends the slot as long as the
   * leases it takes (so no claim outlives the slot, and a worker resumed after its slot
   * was taken claims nothing).
   */
  readonly slot?: boolean;
}

/** The next due time (Store.nextDue): run_at, and run_at less the database's now, in ms. */
export interface NextDue {
  readonly runAt: Date;
  readonly inMs: number;
}

/** A watch of changes to the due posts (Store.watchDue); close() ends it. */
export interface DueWatch {
  close(): Promise<void>;
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

/**
 * The one-line refusal of a database (a SQLite file, a PostgreSQL schema) that holds
 * another application's tables and none of post-scheduler's: its tables (`channels`,
 * `cycles`, `schema_migrations`) would meet the application's.
 */
export function foreignTablesMessage(where: string, tables: readonly string[], fix: string): string {
  const shown = tables.slice(0, 5).join(', ') + (tables.length > 5 ? `, ... (${tables.length})` : '');
  return `${where} already holds another application's tables (${shown}) and none of post-scheduler's: ${fix}`;
}

/** The one-line refusal of a database migrated by a newer post-scheduler. */
export function newerSchemaMessage(found: number, known: number, where: string): string {
  return `the database ${where} has schema version ${found}, newer than this post-scheduler knows (${known}): upgrade post-scheduler (migrations are never undone)`;
}

/** The message every store records when a lease runs out. */
export function leaseExpiredMessage(workerId: string | null, attempts: number, held: boolean): string {
  const what = `lease expired: worker ${workerId ?? '(unknown)'} stopped without recording an outcome (attempt ${attempts})`;
  return held ? `${what}; it may have been published: check the channel, then retry or mark-published` : what;
}

/**
 * The status a post whose lease expired moves to, by its channel's policy (null: no
 * channel); `attempts` counts from the latest operator retry.
 */
export function recoveredStatus(onUnknown: OnUnknown | null, attempts: number, maxAttempts: number): PostStatus {
  const held = onUnknown === null || onUnknown === 'hold' || attempts >= maxAttempts;
  return held ? TRANSITIONS.recoverUnknown.to : TRANSITIONS.recover.to;
}
