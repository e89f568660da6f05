import type { AttemptReason } from './reasons.ts';

/**
 * Glossary: these words mean the same thing in files, tables, logs and docs.
 *
 * - post:       one scheduled publication, a row of `post_schedule` (when, where, state)
 *               pointing at its content, a row of `post_details`.
 * - channel:    where posts go: a named destination with a platform and its settings
 *               (`channels` table). One content may be scheduled on several channels.
 * - platform:   the kind of channel (`file`, `webhook`, later the social networks);
 *               each has one publisher module.
 * - publisher:  the module that sends a post to its channel's platform.
 * - due:        a post that is `pending` with `run_at <= now` (the database's now).
 * - cycle:      one run of the dispatcher, triggered by cron or the daemon:
 *               recover expired leases, count due posts, spawn workers, wait, summarise.
 * - dispatcher: the part that runs a cycle and spawns the worker processes.
 * - worker:     an ephemeral process that claims due posts, publishes them and exits.
 * - claim:      moving due posts to `processing` for one worker in one atomic statement.
 * - lease:      how long a claim stays valid (`lease_expires_at`); a post still
 *               processing after its lease belongs to a dead worker and is recovered.
 * - attempt:    one try at publishing a post; `attempts` counts them over the post's
 *               whole life (an operator's retry keeps counting; MAX_ATTEMPTS counts
 *               from `attempts_base`, the attempts made before the latest retry).
 * - claim token: a number on each post that goes up by one with every claim and never
 *               down; every later update of a claim is fenced by it (and by worker_id),
 *               so a late or repeated write of an old claim can never touch a newer one.
 * - coordination rows: the cycle lock (one per SCHEDULER_HOST) and the worker slots of
 *               GLOBAL_MAX_WORKERS: rows naming their holder, with an expiry on the
 *               database's clock, renewed while the holder lives (like a lease).
 * - outcome:    what an attempt ended with: published, retry later, failed, or unknown.
 * - reason:     why an attempt did not publish, one of a closed set (src/reasons.ts:
 *               rate-limited, timeout, auth, server, ...), recorded with the attempt.
 * - unknown outcome: an attempt that may or may not have reached the platform (the
 *               worker died, or the request timed out or broke after it was sent).
 *               The channel's policy (`on_unknown`) says what happens next:
 *               retry with the same idempotency key, check with the platform first,
 *               or hold the post in the `unknown` state for an operator.
 * - unconfirmed: a post whose earlier attempt may have been delivered; under the
 *               `check` policy its next attempt looks it up before sending.
 */

/** The states of a post. Transitions between them are listed in `states.ts`. */
export type PostStatus =
  /** waiting for its run_at; due once run_at <= now */
  | 'pending'
  /** claimed by a worker (worker_id, locked_at, lease_expires_at set) */
  | 'processing'
  /** accepted by its channel; final */
  | 'published'
  /** gave up: permanent error or MAX_ATTEMPTS reached; `retry` puts it back */
  | 'failed'
  /** withdrawn by an operator before it was published; final */
  | 'cancelled'
  /**
   * an attempt may have reached the platform and nobody knows: held for an operator,
   * who either publishes it again (`retry`) or confirms it went out (`mark-published`)
   */
  | 'unknown';

export const POST_STATUSES: readonly PostStatus[] = [
  'pending',
  'processing',
  'published',
  'failed',
  'cancelled',
  'unknown',
];

/**
 * What happens to a post whose attempt has an unknown outcome (per channel):
 * - retry: publish again with the same idempotency key (the platform must honour it)
 * - check: ask the platform whether it has the post (publisher lookup), publish only if not
 * - hold:  move it to `unknown` and let an operator decide (never republished by itself)
 */
export type OnUnknown = 'retry' | 'check' | 'hold';
export const ON_UNKNOWN: readonly OnUnknown[] = ['retry', 'check', 'hold'];

export type Platform = 'file' | 'webhook' | 'mastodon' | 'bluesky' | 'telegram' | 'discord' | 'slack' | 'x' | 'linkedin' | 'facebook' | 'module';
export const PLATFORMS: readonly Platform[] = ['file', 'webhook', 'mastodon', 'bluesky', 'telegram', 'discord', 'slack', 'x', 'linkedin', 'facebook', 'module'];

export interface Channel {
  readonly id: number;
  readonly name: string;
  readonly platform: string;
  /** platform settings, validated by the platform's publisher; may hold secrets */
  readonly settings: Record<string, unknown>;
  readonly enabled: boolean;
  /** what happens to a post of this channel whose outcome is unknown */
  readonly onUnknown: OnUnknown;
  /** the channel's credentials, sealed (see credentials/vault.ts); null when it has none */
  readonly credentials: string | null;
  /** why the channel needs an operator (credentials refused or unreadable); null when it does not */
  readonly attention: string | null;
  readonly createdAt: Date;
  /**
   * since when an operator paused it (`channels pause`): its posts wait, pending and
   * unclaimed, until `channels resume`; null (or absent) when not paused
   */
  readonly pausedAt?: Date | null;
  /** until when a network told it to wait (a 429): no send before; null (or absent) when never */
  readonly rateLimitedUntil?: Date | null;
}

export interface NewChannel {
  readonly name: string;
  /** validated against the known platforms by the CLI; a store keeps whatever it is given */
  readonly platform: string;
  readonly settings: Record<string, unknown>;
  readonly onUnknown: OnUnknown;
  /** sealed credentials (see credentials/vault.ts) */
  readonly credentials?: string | null;
}

/**
 * An image a post carries: where it is read from when the post is published (an
 * absolute file path, fixed when it was scheduled, or an http(s) URL) and its alt text
 * (the description read to those who cannot see it; may be empty).
 */
export interface PostImage {
  readonly source: string;
  readonly alt: string;
}

/**
 * One part of a post's content. A post has one part, or several: a thread, whose parts
 * are published in order, each replying to the one before.
 */
export interface PostPart {
  readonly text: string;
  readonly images: readonly PostImage[];
}

/** What the platform made of one published part of a post. */
export interface PublishedPart {
  readonly externalId: string | null;
  readonly externalUrl: string | null;
  /**
   * what a reply to this part needs beyond its id (Bluesky: its record's `uri` and
   * `cid`); absent when the id is enough
   */
  readonly replyRef?: Readonly<Record<string, string>>;
}

export interface NewPost {
  readonly channelId: number;
  /** the first part's text */
  readonly text: string;
  readonly runAt: Date;
  /**
   * the whole content when it is more than one text: images, or a thread (parts[0].text
   * is `text`); absent: one part, `text`, without images
   */
  readonly parts?: readonly PostPart[];
}

export interface Post {
  readonly id: number;
  readonly postDetailId: number;
  readonly channelId: number;
  readonly text: string;
  readonly runAt: Date;
  readonly status: PostStatus;
  readonly attempts: number;
  readonly workerId: string | null;
  readonly lockedAt: Date | null;
  readonly leaseExpiresAt: Date | null;
  readonly lastError: string | null;
  readonly publishedAt: Date | null;
  readonly externalId: string | null;
  readonly externalUrl: string | null;
  readonly idempotencyKey: string;
  /** an earlier attempt may have been delivered */
  readonly unconfirmed: boolean;
  /** the time it was scheduled for (run_at moves with retries; this does not) */
  readonly scheduledAt: Date;
  /** goes up with every claim; the fence of the current claim */
  readonly claimToken: number;
  /** attempts made before the latest operator retry (MAX_ATTEMPTS counts from here) */
  readonly attemptsBase: number;
  /** the content: one part (`text`, no images) or more (always at least one) */
  readonly parts: readonly PostPart[];
  /** the parts of a thread already published, in order (empty for a post of one part) */
  readonly publishedParts: readonly PublishedPart[];
  /** the caller's key it was scheduled with (`schedule --key`), if any */
  readonly scheduleKey?: string | null;
  /** its channel's name (a removed channel's ends in "(removed #id)"); null when gone */
  readonly channelName?: string | null;
  /** when it was scheduled, and its row last changed (absent where not read) */
  readonly createdAt?: Date;
  readonly updatedAt?: Date;
}

/** A post as a worker holds it after a claim: everything needed to publish it. */
export interface ClaimedPost {
  readonly id: number;
  readonly runAt: Date;
  /** the time it was scheduled for, whatever retries did to run_at */
  readonly scheduledAt: Date;
  /** this claim's attempt number over the post's life (1 for the first) */
  readonly attempt: number;
  /** attempts made before the latest operator retry: this is attempt `attempt - attemptsBase` of MAX_ATTEMPTS */
  readonly attemptsBase: number;
  /** the claim token: every update of this claim is fenced by it */
  readonly token: number;
  readonly idempotencyKey: string;
  /** an earlier attempt may have been delivered (see the channel's onUnknown) */
  readonly unconfirmed: boolean;
  /** null when the content row is missing */
  readonly text: string | null;
  /** the content's parts (at least one); null when the content row is missing */
  readonly parts: readonly PostPart[] | null;
  /**
   * the parts of a thread already published, in order: the next attempt resumes after
   * them (empty for a post of one part, and for a thread nothing of which went out)
   */
  readonly publishedParts: readonly PublishedPart[];
  /** null when the channel row is missing */
  readonly channel: Channel | null;
}

/** What a worker records for a post it claimed; `token` is the claim's (the fence). */
export type Outcome = OutcomeOfKind & {
  /**
   * how long the post waited in its worker between its claim and its publish (claimed
   * ahead of a slot, src/workers/post-scheduler.worker.ts): the attempt started that much
   * after its claim; absent: at once
   */
  readonly waitedMs?: number;
};
type OutcomeOfKind =
  | {
      readonly kind: 'published';
      readonly postId: number;
      readonly token: number;
      readonly externalId: string | null;
      readonly externalUrl: string | null;
    }
  | {
      readonly kind: 'retry';
      readonly postId: number;
      readonly token: number;
      readonly error: string;
      /** run again this long after the database's now */
      readonly delayMs: number;
      /** this attempt may have been delivered: the post stays unconfirmed */
      readonly unconfirmed: boolean;
      /** the attempt does not count against MAX_ATTEMPTS (the channel, not the post, must be fixed) */
      readonly uncounted?: boolean;
      /** why (src/reasons.ts); absent: other */
      readonly reason?: AttemptReason;
    }
  | {
      readonly kind: 'failed';
      readonly postId: number;
      readonly token: number;
      readonly error: string;
      /** why (src/reasons.ts); absent: other */
      readonly reason?: AttemptReason;
    }
  | {
      /** the attempt may have been delivered and the channel's policy is hold */
      readonly kind: 'unknown';
      readonly postId: number;
      readonly token: number;
      readonly error: string;
      /** why (src/reasons.ts); absent: other */
      readonly reason?: AttemptReason;
    }
  | {
      /** claimed but never started (the worker is stopping): back to pending as it was */
      readonly kind: 'released';
      readonly postId: number;
      readonly token: number;
    };

/** A post whose lease expired while processing: back to pending (retry, check) or held as unknown. */
export interface RecoveredPost {
  readonly id: number;
  readonly workerId: string | null;
  readonly attempts: number;
  readonly status: PostStatus;
}

/** What the database says of a post a worker held or recorded, after a lost round trip. */
export interface HeldPost {
  readonly id: number;
  readonly status: PostStatus;
  readonly workerId: string | null;
  readonly token: number;
}

export interface WorkerRun {
  readonly workerId: string;
  readonly startedAt: Date;
  readonly finishedAt: Date;
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly published: number;
  readonly retried: number;
  readonly failed: number;
}

/**
 * A cycle as `status` shows it: running (its host's cycle lock is still held since it
 * started), finished, or dead (unfinished, and its lock expired or passed to a later
 * cycle: its dispatcher was killed).
 */
export type CycleState = 'running' | 'finished' | 'dead';

export interface CycleRecord {
  readonly id: number;
  readonly host: string;
  readonly state: CycleState;
  readonly startedAt: Date;
  readonly finishedAt: Date | null;
  readonly pending: number;
  readonly workersSpawned: number;
  readonly workersSucceeded: number;
  readonly workersFailed: number;
  readonly exitCode: number | null;
  readonly durationMs: number | null;
  readonly recovered: number;
}

export interface CycleResult {
  /** the cycle's record (null when it ended before one was made) */
  readonly cycleId: number | null;
  readonly pending: number;
  readonly workersSpawned: number;
  readonly workersSucceeded: number;
  readonly workersFailed: number;
  readonly recovered: number;
  readonly durationMs: number;
  readonly exitCode: 0 | 1 | 2;
  /** a signal stopped the cycle (its workers were told to stop) */
  readonly stopped: boolean;
  /** what the cycle's workers did with the posts they claimed (as they reported it) */
  readonly posts: CyclePosts;
}

/** The outcomes of a cycle's attempts, summed over its workers' reports. */
export interface CyclePosts {
  readonly published: number;
  /** back to pending, to be tried again later */
  readonly retried: number;
  readonly failed: number;
  /** held as unknown for an operator */
  readonly held: number;
}

export interface StatusReport {
  readonly counts: {
    readonly duePending: number;
    readonly scheduledLater: number;
    readonly processing: number;
    readonly published: number;
    readonly failed: number;
    readonly cancelled: number;
    readonly unknown: number;
  };
  readonly cycles: readonly CycleRecord[];
  readonly recentFailures: readonly { id: number; lastError: string | null; attempts: number }[];
  /** posts waiting for an operator (oldest first, at most 20) */
  readonly unknownPosts: readonly { id: number; channel: string | null; lastError: string | null; attempts: number }[];
  /** channels a network told to wait (a 429), until when (their posts keep their attempts) */
  readonly pausedChannels: readonly { channel: string; until: Date; reason: string | null }[];
  /** channels an operator paused (`channels pause`), since when: their posts wait until `channels resume` */
  readonly operatorPaused: readonly { channel: string; since: Date }[];
  /**
   * published, failed and cancelled are estimates (a PostgreSQL table of more than
   * 200,000 rows: from the planner's statistics); the other counts are always exact
   */
  readonly estimated: boolean;
}

/** Store.lateness: how late published posts went out (null figures: none published in the window). */
export interface LatenessReport {
  readonly windowMs: number;
  readonly posts: number;
  readonly p50Ms: number | null;
  readonly p90Ms: number | null;
  readonly p99Ms: number | null;
  readonly maxMs: number | null;
}

/** Process exit codes shared by the cron trigger, the dispatcher and workers (the seed's). */
export const EXIT = { ok: 0, error: 1, timeout: 2 } as const;
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];
