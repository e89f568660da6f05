import type { LatenessReport } from '../types.ts';

/**
 * Store.lateness, the part both dialects share: from the lateness of each post
 * (milliseconds, ascending, as the store's query returns them) to nearest-rank
 * percentiles: the smallest value at or above which p of the posts lie.
 */
export function latenessReport(windowMs: number, ascending: readonly number[]): LatenessReport {
  const n = ascending.length;
  const rank = (p: number) => (n === 0 ? null : (ascending[Math.max(0, Math.ceil(p * n) - 1)] ?? null));
  return { windowMs, posts: n, p50Ms: rank(0.5), p90Ms: rank(0.9), p99Ms: rank(0.99), maxMs: rank(1) };
}
