/**
 * The windowed histograms of /metrics (Store.histograms), the part both dialects share:
 * the bucket bounds, named once, the SQL that puts each value in its bucket, and the
 * cumulative counts Prometheus reads (`le` counts every value at or below it).
 */

/** Upper bounds, in seconds, of the publish-time buckets (finished_at - started_at of an attempt). */
export const PUBLISH_SECONDS_BOUNDS: readonly number[] = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
/** Upper bounds, in seconds, of the lateness buckets (published_at - scheduled_at of a post). */
export const LATENESS_SECONDS_BOUNDS: readonly number[] = [0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 900, 3600];

/** One histogram: `buckets[i]` counts the values at or below `bounds[i]` (cumulative); `count` is the `+Inf` bucket. */
export interface Histogram {
  readonly bounds: readonly number[];
  readonly buckets: readonly number[];
  readonly count: number;
  readonly sumSeconds: number;
}

/**
 * SQL: the index of the first bound at or above `ms` (an expression in milliseconds),
 * bounds.length when it is above them all (the `+Inf` bucket only). The bounds are
 * constants of this module, written into the statement as whole milliseconds.
 */
export function bucketOf(ms: string, bounds: readonly number[]): string {
  return `CASE ${bounds.map((b, i) => `WHEN ${ms} <= ${Math.round(b * 1000)} THEN ${i}`).join(' ')} ELSE ${bounds.length} END`;
}

/** From the store's grouped rows (bucket index, values in it, their sum in ms) to a cumulative histogram. */
export function histogramOf(bounds: readonly number[], rows: readonly { bucket: number; n: number; ms: number }[]): Histogram {
  const per = new Array<number>(bounds.length + 1).fill(0);
  let ms = 0;
  for (const r of rows) {
    per[r.bucket] = (per[r.bucket] ?? 0) + r.n;
    ms += r.ms;
  }
  let running = 0;
  const cumulative = per.map((n) => (running += n));
  return { bounds, buckets: cumulative.slice(0, bounds.length), count: running, sumSeconds: ms / 1000 };
}

/** Store.histograms, per platform: rows grouped by (platform, bucket). */
export function histogramsByPlatform(
  bounds: readonly number[],
  rows: readonly { platform: string | null; bucket: number; n: number; ms: number }[],
): { readonly platform: string | null; readonly histogram: Histogram }[] {
  const by = new Map<string | null, { bucket: number; n: number; ms: number }[]>();
  for (const r of rows) by.set(r.platform, [...(by.get(r.platform) ?? []), r]);
  return [...by].map(([platform, of]) => ({ platform, histogram: histogramOf(bounds, of) }));
}
