import type Database from 'better-sqlite3';
import type { Store, TuneHistory } from '../store.ts';

/**
 * Store.tuneHistory on SQLite: one read transaction, one bounded read per list, each
 * through an index (cycles_started, the worker_runs primary key, post_attempts_finished,
 * post_schedule_done: `status IN (...)` as its predicate states it, so SQLite uses it).
 */
export function makeSqliteTune(stmt: (text: string) => Database.Statement, read: <T>(fn: () => T) => Promise<T>): Pick<Store, 'tuneHistory'> {
  return {
    async tuneHistory(windowMs, limit) {
      return read((): TuneHistory => {
        const now = Date.now();
        const since = now - windowMs;
        const cycles = stmt(
          `SELECT id, started_at, duration_ms, pending, workers_spawned, exit_code FROM cycles
            WHERE started_at >= ? ORDER BY started_at DESC LIMIT ?`,
        ).all(since, limit) as { id: number; started_at: number; duration_ms: number | null; pending: number | null; workers_spawned: number | null; exit_code: number | null }[];
        const runs = stmt(
          `SELECT cycle_id, finished_at - started_at AS ms, published, retried, failed, exit_code
             FROM worker_runs WHERE cycle_id IN (SELECT value FROM json_each(?)) ORDER BY cycle_id DESC, started_at`,
        ).all(JSON.stringify(cycles.map((c) => c.id))) as { cycle_id: number; ms: number; published: number; retried: number; failed: number; exit_code: number | null }[];
        const attempts = stmt(
          `SELECT ch.name AS channel, a.finished_at, a.outcome, a.reason, a.finished_at - a.started_at AS ms
             FROM (SELECT * FROM post_attempts WHERE finished_at >= ? ORDER BY finished_at DESC LIMIT ?) a
             LEFT JOIN post_schedule s ON s.id = a.post_id
             LEFT JOIN channels ch ON ch.id = s.channel_id
            ORDER BY a.finished_at DESC`,
        ).all(since, limit) as { channel: string | null; finished_at: number; outcome: string; reason: string | null; ms: number | null }[];
        const published = stmt(
          `SELECT ch.name AS channel, p.published_at, p.lateness FROM (
             SELECT channel_id, updated_at, published_at, max(0, published_at - coalesce(scheduled_at, run_at)) AS lateness FROM post_schedule
              WHERE status IN ('published', 'failed', 'cancelled') AND status = 'published' AND published_at IS NOT NULL AND updated_at >= ?
              ORDER BY updated_at DESC LIMIT ?) p
             LEFT JOIN channels ch ON ch.id = p.channel_id
            ORDER BY p.updated_at DESC`,
        ).all(since, limit) as { channel: string | null; published_at: number; lateness: number }[];
        const paused = stmt('SELECT name, paused_until, pause_reason FROM channels WHERE paused_until > ? AND removed_at IS NULL ORDER BY name').all(now) as {
          name: string;
          paused_until: number;
          pause_reason: string | null;
        }[];
        return {
          windowMs,
          now: new Date(now),
          cycles: cycles.map((c) => ({
            id: c.id,
            startedAt: new Date(c.started_at),
            durationMs: c.duration_ms,
            pending: c.pending,
            workersSpawned: c.workers_spawned,
            exitCode: c.exit_code,
          })),
          workerRuns: runs.map((r) => ({ cycleId: r.cycle_id, durationMs: r.ms, published: r.published, retried: r.retried, failed: r.failed, exitCode: r.exit_code })),
          attempts: attempts.map((a) => ({ channel: a.channel, finishedAt: new Date(a.finished_at), outcome: a.outcome, reason: a.reason, publishMs: a.ms })),
          published: published.map((p) => ({ channel: p.channel, publishedAt: new Date(p.published_at), latenessMs: p.lateness })),
          paused: paused.map((p) => ({ channel: p.name, until: new Date(p.paused_until), reason: p.pause_reason })),
        };
      });
    },
  };
}
