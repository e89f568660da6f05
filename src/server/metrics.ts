import { Gauge, Registry } from 'prom-client';
import type { HistogramSnapshot, MetricsSnapshot, Store } from '../store/store.ts';
import type { Histogram } from '../store/histograms.ts';
import type { StoreSource } from './store-source.ts';
import type { CycleRecord } from '../types.ts';
import { REASONS } from '../reasons.ts';

/** The cycles the cycle figures are read over (the most recent first). */
export const METRICS_CYCLES = 10;
/** Lateness: posts published within the last hour, at most the 10,000 most recent (a bounded index read). */
export const LATENESS_WINDOW_MS = 3_600_000;
const LATENESS_LIMIT = 10_000;

/**
 * The Prometheus registry of `serve`. Every figure is read from the database at scrape
 * time (gauges with collect()), so it is right whichever processes and hosts did the
 * work: nothing is counted in this process's memory.
 *
 * Publish time and lateness are also exposed as histograms over the last hour
 * (`*_bucket{le}`, `_sum`, `_count`, so histogram_quantile() reads them), but as gauges
 * counted in SQL at each scrape (Store.histograms), not as a prom-client Histogram: that
 * one accumulates observations in this process, so it would count the same post again at
 * every scrape, and each `serve` process would count differently. The window slides, so the
 * counts go down too; OpenMetrics calls that a gaugehistogram, a type prom-client cannot
 * emit, hence plain gauges (TYPE gauge) named as a histogram's series are.
 */
export function buildMetrics(stores: StoreSource): Registry {
  const registry = new Registry();
  // one read per scrape, shared by every gauge of that scrape
  let pending: Promise<Snapshot> | null = null;
  const snapshot = (): Promise<Snapshot> => {
    pending ??= read(stores).finally(() => {
      setImmediate(() => (pending = null));
    });
    return pending;
  };

  gauge(registry, 'post_scheduler_posts', 'Posts by state', ['state'], async (g) => {
    const c = (await snapshot()).report.counts;
    const states: [string, number][] = [
      ['pending', c.duePending + c.scheduledLater],
      ['processing', c.processing],
      ['published', c.published],
      ['failed', c.failed],
      ['cancelled', c.cancelled],
      ['unknown', c.unknown],
    ];
    for (const [state, n] of states) g.set({ state }, n);
  });
  gauge(registry, 'post_scheduler_due_posts', 'Posts pending whose time has come (the due backlog)', [], async (g) => {
    g.set((await snapshot()).report.counts.duePending);
  });
  gauge(registry, 'post_scheduler_waiting_posts', 'Posts pending, processing or unknown by state and channel (final states by channel would read the whole table)', ['state', 'channel'], async (g) => {
    for (const w of (await snapshot()).metrics.waiting) g.set({ state: w.state, channel: w.channel ?? '(none)' }, w.posts);
  });
  gauge(registry, 'post_scheduler_oldest_due_age_seconds', 'How long the oldest due post has waited past its time (0: nothing due)', [], async (g) => {
    const m = (await snapshot()).metrics;
    g.set(m.oldestDueAt === null ? 0 : Math.max(0, m.now.getTime() - m.oldestDueAt.getTime()) / 1000);
  });
  gauge(registry, 'post_scheduler_recent_attempts', 'Attempts that ended in the last hour (whatever their post\'s state now) by outcome and platform', ['outcome', 'platform'], async (g) => {
    for (const a of (await snapshot()).metrics.attempts) g.inc({ outcome: a.outcome, platform: a.platform ?? '(none)' }, a.attempts);
  });
  // A gauge, not a `_total` counter: it is read from the database over a sliding hour, so
  // it goes down as attempts leave the window (rate() over a counter would misread that).
  gauge(
    registry,
    'post_scheduler_recent_unpublished_attempts',
    `Those attempts that did not publish (failed, retry, waited, unknown, expired), by outcome, platform and reason (${REASONS.join(', ')})`,
    ['outcome', 'platform', 'reason'],
    async (g) => {
      for (const a of (await snapshot()).metrics.attempts) {
        if (a.outcome !== 'published') g.inc({ outcome: a.outcome, platform: a.platform ?? '(none)', reason: a.reason ?? 'other' }, a.attempts);
      }
    },
  );
  // publish latency per platform as _sum and _count (rate(sum)/rate(count) or sum/count: the mean)
  gauge(registry, 'post_scheduler_recent_attempt_seconds_sum', 'Sum of finished_at - started_at of those attempts, by platform', ['platform'], async (g) => {
    for (const [platform, a] of byPlatform((await snapshot()).metrics.attempts)) g.set({ platform }, a.ms / 1000);
  });
  gauge(registry, 'post_scheduler_recent_attempt_seconds_count', 'Those attempts with a start time, by platform', ['platform'], async (g) => {
    for (const [platform, a] of byPlatform((await snapshot()).metrics.attempts)) g.set({ platform }, a.timed);
  });
  gauge(registry, 'post_scheduler_unknown_outcome_posts', 'Posts whose outcome is unknown, waiting for an operator', [], async (g) => {
    g.set((await snapshot()).report.counts.unknown);
  });
  gauge(registry, 'post_scheduler_lateness_seconds', 'published_at - scheduled_at of the posts published in the last hour (nearest-rank quantiles)', ['quantile'], async (g) => {
    const l = (await snapshot()).lateness;
    for (const [quantile, ms] of [['0.5', l.p50Ms], ['0.9', l.p90Ms], ['0.99', l.p99Ms], ['1', l.maxMs]] as const) {
      if (ms !== null) g.set({ quantile }, ms / 1000);
    }
  });
  gauge(registry, 'post_scheduler_lateness_posts', 'Posts published in the last hour that the lateness quantiles are read over', [], async (g) => {
    g.set((await snapshot()).lateness.posts);
  });
  histogram(
    registry,
    'post_scheduler_publish_duration_seconds',
    'finished_at - started_at of the attempts that ended in the last hour (those with a start), by platform: a histogram over a sliding window, so gauges',
    ['platform'],
    async () => (await snapshot()).histograms.publish.map((p) => ({ labels: { platform: p.platform ?? '(none)' }, histogram: p.histogram })),
  );
  histogram(
    registry,
    'post_scheduler_lateness_seconds',
    'published_at - scheduled_at of the posts published in the last hour: a histogram over a sliding window, so gauges',
    [],
    async () => [{ labels: {}, histogram: (await snapshot()).histograms.lateness }],
  );
  gauge(registry, 'post_scheduler_last_cycle_workers_spawned', 'Workers the most recent cycle spawned', [], async (g) => {
    const last = (await snapshot()).report.cycles[0];
    if (last !== undefined) g.set(last.workersSpawned);
  });
  gauge(registry, 'post_scheduler_last_cycle_duration_seconds', 'Duration of the most recent finished cycle', [], async (g) => {
    const last = (await snapshot()).report.cycles.find((c: CycleRecord) => c.durationMs !== null);
    if (last?.durationMs != null) g.set(last.durationMs / 1000);
  });
  gauge(registry, 'post_scheduler_recent_worker_runs', `Worker runs of the last ${METRICS_CYCLES} cycles by result`, ['result'], async (g) => {
    const cycles = (await snapshot()).report.cycles;
    g.set({ result: 'succeeded' }, cycles.reduce((n, c) => n + c.workersSucceeded, 0));
    g.set({ result: 'failed' }, cycles.reduce((n, c) => n + c.workersFailed, 0));
  });
  gauge(registry, 'post_scheduler_recent_cycles', `The last ${METRICS_CYCLES} cycles by exit code (unfinished: exit_code="none")`, ['exit_code'], async (g) => {
    const byCode = new Map<string, number>();
    for (const c of (await snapshot()).report.cycles) {
      const code = c.exitCode === null ? 'none' : String(c.exitCode);
      byCode.set(code, (byCode.get(code) ?? 0) + 1);
    }
    for (const [code, n] of byCode) g.set({ exit_code: code }, n);
  });
  return registry;
}

function byPlatform(attempts: MetricsSnapshot['attempts']): Map<string, { ms: number; timed: number }> {
  const by = new Map<string, { ms: number; timed: number }>();
  for (const a of attempts) {
    const platform = a.platform ?? '(none)';
    const seen = by.get(platform) ?? { ms: 0, timed: 0 };
    by.set(platform, { ms: seen.ms + a.publishMs, timed: seen.timed + a.publishTimed });
  }
  return by;
}

interface Snapshot {
  readonly report: Awaited<ReturnType<Store['status']>>;
  readonly lateness: Awaited<ReturnType<Store['lateness']>>;
  readonly metrics: MetricsSnapshot;
  readonly histograms: HistogramSnapshot;
}

async function read(stores: StoreSource): Promise<Snapshot> {
  const store = await stores.get();
  const report = await store.status(METRICS_CYCLES);
  const lateness = await store.lateness(LATENESS_WINDOW_MS, LATENESS_LIMIT);
  const metrics = await store.metrics(LATENESS_WINDOW_MS, LATENESS_LIMIT);
  const histograms = await store.histograms(LATENESS_WINDOW_MS, LATENESS_LIMIT);
  return { report, lateness, metrics, histograms };
}

function gauge<L extends string>(registry: Registry, name: string, help: string, labelNames: readonly L[], fill: (g: Gauge<L>) => Promise<void>): void {
  new Gauge<L>({
    name,
    help,
    labelNames,
    registers: [registry],
    async collect() {
      this.reset();
      await fill(this);
    },
  });
}

/**
 * One histogram's series, `<name>_bucket{le}` (cumulative, `le="+Inf"` the count), `<name>_sum`
 * and `<name>_count`, each a gauge filled from the same scrape's read.
 */
function histogram<L extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: readonly L[],
  read: () => Promise<{ labels: Partial<Record<L, string>>; histogram: Histogram }[]>,
): void {
  gauge(registry, `${name}_bucket`, `${help} (cumulative bucket counts)`, [...labelNames, 'le'], async (g) => {
    for (const { labels, histogram: h } of await read()) {
      const at = (le: string): Partial<Record<L | 'le', string>> => ({ ...labels, le }) as Partial<Record<L | 'le', string>>;
      h.bounds.forEach((le, i) => g.set(at(String(le)), h.buckets[i] ?? 0));
      g.set(at('+Inf'), h.count);
    }
  });
  gauge(registry, `${name}_sum`, `${help} (sum of the values)`, labelNames, async (g) => {
    for (const { labels, histogram: h } of await read()) g.set(labels, h.sumSeconds);
  });
  gauge(registry, `${name}_count`, `${help} (how many values)`, labelNames, async (g) => {
    for (const { labels, histogram: h } of await read()) g.set(labels, h.count);
  });
}
