import type { TuneHistory } from '../store/store.ts';
import { REASONS, type AttemptReason } from '../reasons.ts';

/**
 * The figures `tune` reads from a history snapshot (Store.tuneHistory): what its
 * recommendations rest on, and what it prints behind each. Pure: no clock, no database.
 */

/** A cycle "hit the guard": it was stopped by TIMEOUT_MS (exit 2), or used at least this share of it. */
export const GUARD_SHARE = 0.9;

export interface CycleFigures {
  /** cycles in the window, and those that finished (the rest: running or dead) */
  readonly cycles: number;
  readonly finished: number;
  /** finished cycles stopped by TIMEOUT_MS (exit 2) or within GUARD_SHARE of it */
  readonly guardHits: number;
  /**
   * finished cycles whose workers handled fewer posts than were due when it started: the
   * workers stopped at WORKER_TIMEOUT_MS (their budget) with posts still due
   */
  readonly leftDue: number;
  /** cycles that fell short: hit the guard or left posts due (each counted once) */
  readonly short: number;
  /** of those, the ones that spawned MAX_WORKERS workers (capped) */
  readonly shortCapped: number;
  /** due posts at the start of the short cycles, and the posts their workers handled */
  readonly shortPending: number;
  readonly shortHandled: number;
  readonly durationP50Ms: number | null;
  readonly durationP90Ms: number | null;
  readonly durationMaxMs: number | null;
}

export interface WorkerFigures {
  readonly runs: number;
  /** runs that handled no post (published, retried or failed nothing) */
  readonly idle: number;
  /** posts handled per run, on average (0 when none ran) */
  readonly postsPerRun: number;
}

export interface ChannelFigures {
  /** null: posts whose channel row is gone */
  readonly channel: string | null;
  readonly attempts: number;
  readonly published: number;
  /** attempts that did not publish, by reason (only the reasons seen) */
  readonly reasons: Readonly<Partial<Record<AttemptReason, number>>>;
  /** failed attempts on errors that pass (server, network, timeout): MAX_ATTEMPTS ran out (they are retried otherwise) */
  readonly gaveUp: number;
  /** finished_at - started_at of its published attempts */
  readonly publishP50Ms: number | null;
  readonly publishP90Ms: number | null;
  readonly publishMaxMs: number | null;
  /** published_at - scheduled_at of its posts published in the window */
  readonly latenessPosts: number;
  readonly latenessP50Ms: number | null;
  readonly latenessP90Ms: number | null;
  /** the most of its attempts that published within any 60 s */
  readonly peakPerMinute: number;
  /** paused by the network (a 429) until then; null when not paused */
  readonly pausedUntil: Date | null;
}

export interface Figures {
  readonly windowMs: number;
  readonly cycles: CycleFigures;
  readonly workers: WorkerFigures;
  readonly channels: readonly ChannelFigures[];
  /** what the history read holds: attempts and published posts (each at most the read's limit) */
  readonly attempts: number;
  readonly publishedPosts: number;
}

/** Nearest-rank percentile of ascending values (null for none). */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1] ?? null;
}

const ascending = (values: Iterable<number>) => [...values].sort((a, b) => a - b);

/** The most of `times` (epoch ms) within any `spanMs` (a sliding window). */
export function peakWithin(times: readonly number[], spanMs: number): number {
  const t = ascending(times);
  let peak = 0;
  let from = 0;
  for (let i = 0; i < t.length; i++) {
    while ((t[i] ?? 0) - (t[from] ?? 0) >= spanMs) from++;
    peak = Math.max(peak, i - from + 1);
  }
  return peak;
}

/** The reasons of errors that pass: a retry may succeed. */
export const TRANSIENT: readonly AttemptReason[] = ['server', 'network', 'timeout'];

export interface FigureLimits {
  readonly timeoutMs: number;
  readonly maxWorkers: number;
}

export function tuneFigures(history: TuneHistory, limits: FigureLimits): Figures {
  const finished = history.cycles.filter((c) => c.durationMs !== null || c.exitCode !== null);
  const handled = (r: TuneHistory['workerRuns'][number]) => r.published + r.retried + r.failed;
  const handledIn = new Map<number, number>();
  for (const r of history.workerRuns) handledIn.set(r.cycleId, (handledIn.get(r.cycleId) ?? 0) + handled(r));
  const hitGuard = (c: TuneHistory['cycles'][number]) => c.exitCode === 2 || (c.durationMs ?? 0) >= GUARD_SHARE * limits.timeoutMs;
  const leftDue = (c: TuneHistory['cycles'][number]) => (handledIn.get(c.id) ?? 0) < (c.pending ?? 0);
  const short = finished.filter((c) => hitGuard(c) || leftDue(c));
  const durations = ascending(finished.flatMap((c) => (c.durationMs === null ? [] : [c.durationMs])));
  const cycles: CycleFigures = {
    cycles: history.cycles.length,
    finished: finished.length,
    guardHits: finished.filter(hitGuard).length,
    leftDue: finished.filter(leftDue).length,
    short: short.length,
    shortCapped: short.filter((c) => (c.workersSpawned ?? 0) >= limits.maxWorkers).length,
    shortPending: short.reduce((n, c) => n + (c.pending ?? 0), 0),
    shortHandled: short.reduce((n, c) => n + (handledIn.get(c.id) ?? 0), 0),
    durationP50Ms: percentile(durations, 50),
    durationP90Ms: percentile(durations, 90),
    durationMaxMs: durations.at(-1) ?? null,
  };
  const runs = history.workerRuns.length;
  const workers: WorkerFigures = {
    runs,
    idle: history.workerRuns.filter((r) => handled(r) === 0).length,
    postsPerRun: runs === 0 ? 0 : history.workerRuns.reduce((n, r) => n + handled(r), 0) / runs,
  };

  const names = new Set<string | null>([...history.attempts.map((a) => a.channel), ...history.published.map((p) => p.channel), ...history.paused.map((p) => p.channel)]);
  const channels = [...names]
    .sort((a, b) => (a ?? '').localeCompare(b ?? ''))
    .map((channel): ChannelFigures => {
      const attempts = history.attempts.filter((a) => a.channel === channel);
      const ok = attempts.filter((a) => a.outcome === 'published');
      const reasons: Partial<Record<AttemptReason, number>> = {};
      for (const a of attempts) {
        if (a.outcome === 'published') continue;
        const reason: AttemptReason = REASONS.includes(a.reason as AttemptReason) ? (a.reason as AttemptReason) : 'other';
        reasons[reason] = (reasons[reason] ?? 0) + 1;
      }
      const publish = ascending(ok.flatMap((a) => (a.publishMs === null ? [] : [a.publishMs])));
      const lateness = ascending(history.published.filter((p) => p.channel === channel).map((p) => p.latenessMs));
      return {
        channel,
        attempts: attempts.length,
        published: ok.length,
        reasons,
        gaveUp: attempts.filter((a) => a.outcome === 'failed' && (TRANSIENT as readonly (string | null)[]).includes(a.reason)).length,
        publishP50Ms: percentile(publish, 50),
        publishP90Ms: percentile(publish, 90),
        publishMaxMs: publish.at(-1) ?? null,
        latenessPosts: lateness.length,
        latenessP50Ms: percentile(lateness, 50),
        latenessP90Ms: percentile(lateness, 90),
        peakPerMinute: peakWithin(
          ok.map((a) => a.finishedAt.getTime()),
          60_000,
        ),
        pausedUntil: history.paused.find((p) => p.channel === channel)?.until ?? null,
      };
    });
  return { windowMs: history.windowMs, cycles, workers, channels, attempts: history.attempts.length, publishedPosts: history.published.length };
}
