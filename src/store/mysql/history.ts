import type { HistoryStore } from '../concerns/history.ts';
import { runsByCycle, type WorkerRunRow } from '../history.ts';
import { cycleFromRow, type CycleRow, cyclesQuery } from '../rows.ts';
import type { MysqlConnection } from './connection.ts';

/** Rows of a finished post (or cycle records) deleted by one prune transaction. */
const PRUNE_BATCH = 5_000;

/** The cutoff `olderThanMs` before the database's now (`?`: microseconds). */
const BEFORE = 'NOW(3) - INTERVAL ? MICROSECOND';

/**
 * The history on MySQL/MariaDB (see HistoryStore), on the database's clock; recentCycles
 * reads the cycles as `status` reads them, their runs by worker_runs' primary key.
 */
export function makeMysqlHistory(c: MysqlConnection): HistoryStore {
  const { q, exec, tx } = c;
  return {
    async startCycle(host: string) {
      return (await exec('INSERT INTO cycles (host, started_at) VALUES (?, NOW(3))', [host])).insertId;
    },

    async finishCycle(cycleId, result, runs) {
      // It runs at the end of a cycle, when the server may just have restarted: the usual
      // case, a cycle that spawned no worker, is one statement and no transaction block
      // (as on PostgreSQL). With runs, MySQL has no data-modifying CTE to do both in one
      // statement: the UPDATE and one multi-row INSERT share a short transaction, so that
      // a cycle is never recorded finished without its runs.
      const finish = `UPDATE cycles SET finished_at = NOW(3), pending = ?, recovered = ?, workers_spawned = ?, workers_succeeded = ?,
                             workers_failed = ?, exit_code = ?, duration_ms = ?
                       WHERE id = ?`;
      const values = [
        result.pending,
        result.recovered,
        result.workersSpawned,
        result.workersSucceeded,
        result.workersFailed,
        result.exitCode,
        result.durationMs,
        cycleId,
      ];
      if (runs.length === 0) {
        await exec(finish, values);
        return;
      }
      await tx(async (t) => {
        await t.exec(finish, values);
        // a nested array is a list of rows: VALUES (...), (...)
        await t.exec(
          'INSERT INTO worker_runs (worker_id, cycle_id, started_at, finished_at, exit_code, `signal`, published, retried, failed) VALUES ?',
          [runs.map((r) => [r.workerId, cycleId, r.startedAt, r.finishedAt, r.exitCode, r.signal, r.published, r.retried, r.failed])],
        );
      });
    },

    async recentCycles(limit) {
      const cycles = (await q<CycleRow>(cyclesQuery('NOW(3)', '?'), [limit])).map(cycleFromRow);
      if (cycles.length === 0) return [];
      const rows = await q<WorkerRunRow>('SELECT * FROM worker_runs WHERE cycle_id IN (?) ORDER BY cycle_id, started_at, worker_id', [cycles.map((x) => x.id)]);
      const runs = runsByCycle(rows);
      return cycles.map((x) => ({ ...x, runs: runs.get(x.id) ?? [] }));
    },

    async prune(olderThanMs) {
      const before = Math.max(0, Math.round(olderThanMs * 1000));
      // No DELETE ... RETURNING on MySQL (and no LIMIT in an IN subquery): each batch is one
      // short transaction that reads the oldest posts of one final state through
      // post_schedule_done (status, updated_at: one state at a time, so that the index gives
      // them in order and the read stops at the batch), deletes them (their alerts go with
      // them: ON DELETE CASCADE), then the content no other post refers to any more, so that
      // a crash between the two leaves no orphaned content behind.
      let posts = 0;
      for (const status of ['published', 'failed', 'cancelled'] as const) {
        for (;;) {
          const batch = await tx(async (t) => {
            const gone = await t.q<{ id: number; post_detail_id: number }>(
              `SELECT id, post_detail_id FROM post_schedule WHERE status = ? AND updated_at < ${BEFORE} ORDER BY updated_at LIMIT ${PRUNE_BATCH}`,
              [status, before],
            );
            if (gone.length === 0) return { read: 0, deleted: 0 };
            // the condition again: a post an operator requeued since the read stays (READ COMMITTED)
            const deleted = await t.exec(`DELETE FROM post_schedule WHERE id IN (?) AND status = ? AND updated_at < ${BEFORE}`, [
              gone.map((g) => g.id),
              status,
              before,
            ]);
            await t.exec(
              `DELETE FROM post_details
                WHERE id IN (?) AND NOT EXISTS (SELECT 1 FROM post_schedule s WHERE s.post_detail_id = post_details.id)`,
              [[...new Set(gone.map((g) => g.post_detail_id))]],
            );
            return { read: gone.length, deleted: deleted.affectedRows };
          });
          posts += batch.deleted;
          // a short batch is the last one, whatever the re-check took out of it
          if (batch.read < PRUNE_BATCH) break;
        }
      }
      // cycle records in batches too, their worker runs first (worker_runs_cycle has no cascade)
      let cycles = 0;
      for (;;) {
        const n = await tx(async (t) => {
          const old = await t.q<{ id: number }>(`SELECT id FROM cycles WHERE started_at < ${BEFORE} ORDER BY started_at LIMIT ${PRUNE_BATCH}`, [before]);
          if (old.length === 0) return 0;
          const ids = old.map((o) => o.id);
          await t.exec('DELETE FROM worker_runs WHERE cycle_id IN (?)', [ids]);
          return (await t.exec('DELETE FROM cycles WHERE id IN (?)', [ids])).affectedRows;
        });
        cycles += n;
        if (n < PRUNE_BATCH) break;
      }
      return { posts, cycles };
    },
  };
}
