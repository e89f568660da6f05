import type Database from 'better-sqlite3';
import { sumAttempts } from '../metrics.ts';
import type { MetricsSnapshot, Store } from '../store.ts';

/**
 * Store.metrics on SQLite: one grouped count per waiting state (`status = '...'` as the
 * partial indexes state it, and `+channel_id` so SQLite groups in a temporary b-tree
 * rather than scan the whole table in post_schedule_channel's order), and the oldest due
 * post through the due index.
 */
export function makeSqliteMetrics(stmt: (text: string) => Database.Statement, read: <T>(fn: () => T) => Promise<T>): Pick<Store, 'metrics'> {
  return {
    async metrics(windowMs, limit) {
      return read((): MetricsSnapshot => {
        const now = Date.now();
        const waiting = (['pending', 'processing', 'unknown'] as const).flatMap((state) =>
          (
            stmt(
              `SELECT c.name AS channel, w.n FROM (
                 SELECT channel_id, count(*) AS n FROM post_schedule WHERE status = '${state}' GROUP BY +channel_id) w
               LEFT JOIN channels c ON c.id = w.channel_id ORDER BY c.name`,
            ).all() as { channel: string | null; n: number }[]
          ).map((r) => ({ state, channel: r.channel, posts: r.n })),
        );
        const oldest = stmt("SELECT min(run_at) AS at FROM post_schedule WHERE status = 'pending' AND run_at <= ?").get(now) as { at: number | null };
        const since = now - windowMs;
        // the most recent attempts through post_attempts_finished, whatever their post's state
        const attempts = stmt(
          `SELECT a.outcome, ch.platform, a.reason, count(*) AS n,
                  count(a.started_at) AS timed, coalesce(sum(a.finished_at - a.started_at), 0) AS ms
             FROM (SELECT post_id, outcome, reason, started_at, finished_at FROM post_attempts WHERE finished_at >= ?
                    ORDER BY finished_at DESC LIMIT ?) a
             LEFT JOIN post_schedule p ON p.id = a.post_id
             LEFT JOIN channels ch ON ch.id = p.channel_id
            GROUP BY a.outcome, ch.platform, a.reason`,
        ).all(since, limit) as { outcome: string; platform: string | null; reason: string | null; n: number; timed: number; ms: number }[];
        return {
          waiting,
          oldestDueAt: oldest.at === null ? null : new Date(oldest.at),
          now: new Date(now),
          attempts: sumAttempts(attempts),
        };
      });
    },
  };
}

