import type { HistoryStore } from '../concerns/history.ts';
import { runsByCycle, type WorkerRunRow } from '../history.ts';
import { cycleFromRow, type CycleRow, cyclesQuery } from '../rows.ts';
import type { SqliteConnection } from './connection.ts';

/** Rows of a finished post deleted by one prune transaction. */
const PRUNE_BATCH = 5_000;

/**
 * The history on SQLite (see HistoryStore; times are epoch ms); recentCycles reads the
 * cycles as `status` reads them, their runs by worker_runs' primary key.
 */
export function makeSqliteHistory(c: SqliteConnection): HistoryStore {
  const { db, stmt, immediate, read } = c;
  return {
    async startCycle(host: string) {
      return Number((await immediate(() => stmt('INSERT INTO cycles (host, started_at) VALUES (?, ?)').run(host, Date.now()))).lastInsertRowid);
    },

    async finishCycle(cycleId, result, runs) {
      const insertRun = db.prepare(
        `INSERT INTO worker_runs (worker_id, cycle_id, started_at, finished_at, exit_code, signal, published, retried, failed)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      );
      await immediate(() => {
        db.prepare(
          `UPDATE cycles SET finished_at = ?, pending = ?, recovered = ?, workers_spawned = ?, workers_succeeded = ?,
                  workers_failed = ?, exit_code = ?, duration_ms = ? WHERE id = ?`,
        ).run(
          Date.now(),
          result.pending,
          result.recovered,
          result.workersSpawned,
          result.workersSucceeded,
          result.workersFailed,
          result.exitCode,
          result.durationMs,
          cycleId,
        );
        for (const r of runs) {
          insertRun.run(
            r.workerId,
            cycleId,
            r.startedAt.getTime(),
            r.finishedAt.getTime(),
            r.exitCode,
            r.signal,
            r.published,
            r.retried,
            r.failed,
          );
        }
      });
    },

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

    async prune(olderThanMs) {
      let posts = 0;
      for (;;) {
        const n = await immediate(() => {
          const before = Date.now() - olderThanMs;
          const gone = stmt(
            `DELETE FROM post_schedule WHERE id IN (
               SELECT id FROM post_schedule WHERE status IN ('published', 'failed', 'cancelled') AND updated_at < ?
                ORDER BY updated_at LIMIT ${PRUNE_BATCH})
             RETURNING post_detail_id`,
          ).all(before) as { post_detail_id: number }[];
          const orphan = stmt('DELETE FROM post_details WHERE id = ? AND NOT EXISTS (SELECT 1 FROM post_schedule WHERE post_detail_id = ?)');
          for (const g of gone) orphan.run(g.post_detail_id, g.post_detail_id);
          return gone.length;
        });
        posts += n;
        if (n < PRUNE_BATCH) break;
      }
      const cycles = await immediate(() => {
        const before = Date.now() - olderThanMs;
        stmt('DELETE FROM worker_runs WHERE cycle_id IN (SELECT id FROM cycles WHERE started_at < ?)').run(before);
        return stmt('DELETE FROM cycles WHERE started_at < ?').run(before).changes;
      });
      return { posts, cycles };
    },
  };
}
