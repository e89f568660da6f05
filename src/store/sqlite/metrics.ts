import type Database from 'better-sqlite3';
import type { MetricsSnapshot, Store } from '../store.ts';

/**
 * Store.metrics on SQLite: one grouped count per waiting state (`status = '...'` as the
 * partial indexes state it, so each count reads its own index), and the oldest due
 * post through the due index.
 */
export function makeSqliteMetrics(stmt: (text: string) => Database.Statement, read: <T>(fn: () => T) => Promise<T>): Pick<Store, 'metrics'> {
  return {
    async metrics() {
      return read((): MetricsSnapshot => {
        const now = Date.now();
        const waiting = (['pending', 'processing', 'unknown'] as const).flatMap((state) =>
          (
            stmt(
              `SELECT c.name AS channel, w.n FROM (
                 SELECT channel_id, count(*) AS n FROM post_schedule WHERE status = '${state}' GROUP BY channel_id) w
               LEFT JOIN channels c ON c.id = w.channel_id ORDER BY c.name`,
            ).all() as { channel: string | null; n: number }[]
          ).map((r) => ({ state, channel: r.channel, posts: r.n })),
        );
        const oldest = stmt("SELECT min(run_at) AS at FROM post_schedule WHERE status = 'pending' AND run_at <= ?").get(now) as { at: number | null };
        return { waiting, oldestDueAt: oldest.at === null ? null : new Date(oldest.at), now: new Date(now) };
      });
    },
  };
}
