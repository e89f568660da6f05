import type { MetricsSnapshot } from './store.ts';

/** Store.metrics, the part both dialects share: their query has one row per (outcome, platform, reason) and part (final states, unknown). */
export function sumAttempts(rows: readonly { outcome: string; platform: string | null; reason: string | null; n: number; timed: number; ms: number }[]): MetricsSnapshot['attempts'] {
  const by = new Map<string, { outcome: string; platform: string | null; reason: string | null; attempts: number; publishTimed: number; publishMs: number }>();
  for (const r of rows) {
    const key = `${r.outcome}\u0000${r.platform ?? ''}\u0000${r.reason ?? ''}`;
    const seen = by.get(key) ?? { outcome: r.outcome, platform: r.platform, reason: r.reason, attempts: 0, publishTimed: 0, publishMs: 0 };
    by.set(key, { ...seen, attempts: seen.attempts + r.n, publishTimed: seen.publishTimed + r.timed, publishMs: seen.publishMs + r.ms });
  }
  return [...by.values()];
}
