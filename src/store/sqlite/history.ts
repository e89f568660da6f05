import type Database from 'better-sqlite3';
import { runsByCycle, seriesOf, type WorkerRunRow } from '../history.ts';
import { cycleFromRow, cyclesQuery, type CycleRow } from '../rows.ts';
import type { Store } from '../store.ts';

/**
 * Store.recentCycles and Store.activity on SQLite (times are epoch ms): the cycles as
 * `status` reads them, their runs by worker_runs' primary key; activity through the
 * index of final states by updated_at (`status IN (...)` as that partial index states
 * it) and cycles_started.
 */
export function makeSqliteHistory(stmt: (text: string) => Database.Statement, read: <T>(fn: () => T) => Promise<T>): Pick<Store, 'recentCycles' | 'activity'> {
  return {
    async recentCycles(limit) {
      return read(() => {
        const cycles = (stmt(cyclesQuery('?', '?')).all(Date.now(), limit) as CycleRow[]).map(cycleFromRow);
        if (cycles.length === 0) return [];
        const ids = cycles.map((c) => c.id);
        const rows = stmt(`SELECT * FROM worker_runs WHERE cycle_id IN (${ids.map(() => '?').join(', ')}) ORDER BY cycle_id, started_at, worker_id`).all(...ids) as WorkerRunRow[];
        const runs = runsByCycle(rows);
        return cycles.map((c) => ({ ...c, runs: runs.get(c.id) ?? [] }));
      });
    },
    async activity(windowMs, bucketMs, limit) {
      return read(() => {
        const to = Date.now();
        const from = to - windowMs;
        const rows = stmt(
          `SELECT CAST(p.updated_at / ? AS INTEGER) * ? AS at, p.status, count(*) AS n
             FROM (SELECT updated_at, status FROM post_schedule
                    WHERE status IN ('published', 'failed', 'cancelled') AND updated_at >= ?
                    ORDER BY updated_at DESC LIMIT ?) p
            WHERE p.status IN ('published', 'failed')
            GROUP BY at, p.status`,
        ).all(bucketMs, bucketMs, from, limit) as { at: number; status: string; n: number }[];
        const cycles = stmt('SELECT started_at, pending FROM cycles WHERE started_at >= ? ORDER BY started_at DESC, id DESC LIMIT ?').all(from, limit) as {
          started_at: number;
          pending: number | null;
        }[];
        return {
          from: new Date(from),
          to: new Date(to),
          ...seriesOf(rows),
          // the newest `limit`, oldest first
          backlog: cycles.reverse().map((c) => ({ at: new Date(c.started_at), due: c.pending ?? 0 })),
        };
      });
    },
  };
}
