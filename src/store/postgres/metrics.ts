import type { MetricsSnapshot, Store } from '../store.ts';
import { sumAttempts } from '../metrics.ts';

type Query = <R>(text: string, values?: unknown[]) => Promise<R[]>;

/**
 * Store.metrics on PostgreSQL: one grouped count per waiting state (each through its
 * partial index), and the oldest due post through the due index, on the database's clock.
 */
export function makePostgresMetrics(q: Query): Pick<Store, 'metrics'> {
  return {
    async metrics(windowMs, limit): Promise<MetricsSnapshot> {
      const rows = await q<{ state: 'pending' | 'processing' | 'unknown'; channel: string | null; n: number }>(
        `SELECT w.state, c.name AS channel, w.n FROM (
           SELECT 'pending' AS state, channel_id, count(*) AS n FROM post_schedule WHERE status = 'pending' GROUP BY channel_id
           UNION ALL
           SELECT 'processing', channel_id, count(*) FROM post_schedule WHERE status = 'processing' GROUP BY channel_id
           UNION ALL
           SELECT 'unknown', channel_id, count(*) FROM post_schedule WHERE status = 'unknown' GROUP BY channel_id) w
         LEFT JOIN channels c ON c.id = w.channel_id ORDER BY w.state, c.name`,
      );
      const [oldest] = await q<{ at: Date | null; now: Date }>(
        "SELECT (SELECT min(run_at) FROM post_schedule WHERE status = 'pending' AND run_at <= now()) AS at, now() AS now",
      );
      // the most recent attempts through post_attempts_finished, whatever their post's state
      const attempts = await q<{ outcome: string; platform: string | null; reason: string | null; n: number; timed: number; ms: number }>(
        `SELECT a.outcome, ch.platform, a.reason, count(*) AS n, count(a.started_at) AS timed,
                coalesce(sum(extract(epoch FROM a.finished_at - a.started_at) * 1000), 0)::float8 AS ms
           FROM (SELECT post_id, outcome, reason, started_at, finished_at FROM post_attempts
                  WHERE finished_at >= now() - $1 * interval '1 millisecond' ORDER BY finished_at DESC LIMIT $2) a
           LEFT JOIN post_schedule p ON p.id = a.post_id
           LEFT JOIN channels ch ON ch.id = p.channel_id
          GROUP BY a.outcome, ch.platform, a.reason`,
        [windowMs, limit],
      );
      return {
        attempts: sumAttempts(attempts),
        waiting: rows.map((r) => ({ state: r.state, channel: r.channel, posts: r.n })),
        oldestDueAt: oldest?.at ?? null,
        now: oldest?.now ?? new Date(),
      };
    },
  };
}
