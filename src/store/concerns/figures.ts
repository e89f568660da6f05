import type { StatusReport, LatenessReport } from '../../types.ts';
import type { Histogram } from '../histograms.ts';

/**
 * Figures read from the queue and the history: `status` and its lateness
 * (src/cli/status.ts), /metrics (src/server/metrics.ts), the activity of `serve`, the
 * history `tune` recommends from (src/tune) and deadline-aware sizing (src/sizing,
 * WORKER_SIZING=deadline).
 */
export interface FiguresStore {
  status(cycles: number): Promise<StatusReport>;
  /**
   * How late posts went out: published_at minus the time each was scheduled for
   * (scheduled_at; a retry's delay counts as lateness), over the posts published in the
   * last `windowMs`, at most the `limit` most recent (read through the index of final
   * states by updated_at). Percentiles are nearest-rank, in whole milliseconds.
   */
  lateness(windowMs: number, limit: number): Promise<LatenessReport>;
  /**
   * The posts that wait (pending, processing, unknown) by state and channel, each
   * state counted through its partial index, and the run_at of the oldest due post.
   * `attempts`: the attempts, by outcome, channel platform and reason, that ended within the
   * last `windowMs`, at most the `limit` most recent (read through post_attempts by
   * finished_at), whatever their post's state: a wait or a retry of a post still pending
   * counts as soon as it ends.
   */
  metrics(windowMs: number, limit: number): Promise<MetricsSnapshot>;
  /**
   * The windowed histograms of /metrics, counted in SQL into the buckets of
   * src/store/histograms.ts: `publish`, finished_at - started_at of the attempts that ended
   * within the last `windowMs` (the same `limit` most recent as Store.metrics reads, through
   * post_attempts by finished_at; those without a start are left out) by channel platform;
   * `lateness`, published_at - scheduled_at as Store.lateness has it, over the posts
   * published in the last `windowMs` (at most the `limit` most recent, through the index of
   * final states by updated_at).
   */
  histograms(windowMs: number, limit: number): Promise<HistogramSnapshot>;
  /**
   * What happened in the last `windowMs` (database's clock), in buckets of `bucketMs`:
   * posts that ended published or failed per bucket of their updated_at (non-empty
   * buckets only; at most the `limit` most recent such posts, read through the index of
   * final states by updated_at), and the due count each cycle started with (the `limit`
   * most recent cycles by started_at), oldest first.
   */
  activity(windowMs: number, bucketMs: number, limit: number): Promise<ActivityReport>;
  /**
   * What this installation did in the last `windowMs` (on the database's clock), each list
   * the `limit` most recent, read through indexes: the cycles that started in it (cycles
   * by started_at) and their worker runs (by cycle), the attempts that ended in it
   * (post_attempts by finished_at) with their channel, the posts published in it (the
   * index of final states by updated_at) with their lateness, and the channels a
   * network's 429 paused until later.
   */
  tuneHistory(windowMs: number, limit: number): Promise<TuneHistory>;
  /**
   * The due posts (as countDue counts them) by channel, read through the due index, each
   * channel with its measured publish latency: the median of finished_at - started_at
   * over the published attempts of its `samples` most recently published posts (read
   * through the index of published posts by channel and updated_at, then post_attempts
   * by post). latencyMs null: the channel has no such attempt yet. `aheadMs`: posts due
   * that long after the database's now count too (countDue(aheadMs)), as `daemon
   * --precise` sizes a batch before its due time.
   */
  dueByChannel(samples: number, aheadMs?: number): Promise<DueChannelLoad[]>;
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

/** Store.histograms; platform: null when the post's channel row is gone. */
export interface HistogramSnapshot {
  readonly publish: readonly { readonly platform: string | null; readonly histogram: Histogram }[];
  readonly lateness: Histogram;
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
