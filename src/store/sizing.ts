import type { DueChannelLoad } from './store.ts';

/**
 * Store.dueByChannel, the part both dialects share: from each due channel's count and
 * the publish times (ms) of its recent attempts, as the store's query returns them, to
 * one row per channel with the median (nearest rank, rounded to whole ms).
 */
export function dueLoads(rows: readonly { channelId: number; due: number; ms: number | null }[]): DueChannelLoad[] {
  const by = new Map<number, { due: number; times: number[] }>();
  for (const r of rows) {
    const seen = by.get(r.channelId) ?? { due: r.due, times: [] };
    if (r.ms !== null && Number.isFinite(r.ms)) seen.times.push(Math.max(0, r.ms));
    by.set(r.channelId, seen);
  }
  return [...by.entries()]
    .sort(([a], [b]) => a - b)
    .map(([channelId, { due, times }]) => {
      times.sort((a, b) => a - b);
      const median = times.length === 0 ? null : (times[Math.ceil(times.length / 2) - 1] ?? null);
      return { channelId, due, latencyMs: median === null ? null : Math.round(median), samples: times.length };
    });
}
