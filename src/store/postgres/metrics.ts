import type { MetricsSnapshot, Store } from '../store.ts';

type Query = <R>(text: string, values?: unknown[]) => Promise<R[]>;

/**
 * Store.metrics on PostgreSQL: one grouped count per waiting state (each through its
 * partial index), and the oldest due post through the due index, on the database's clock.
 */
export function makePostgresMetrics(q: Query): Pick<Store, 'metrics'> {
  return {
    async metrics(): Promise<MetricsSnapshot> {
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
      return {
        waiting: rows.map((r) => ({ state: r.state, channel: r.channel, posts: r.n })),
        oldestDueAt: oldest?.at ?? null,
        now: oldest?.now ?? new Date(),
      };
    },
  };
}
