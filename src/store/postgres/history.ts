import type { HistoryStore } from '../concerns/history.ts';
import { runsByCycle, type WorkerRunRow } from '../history.ts';
import { cycleFromRow, type CycleRow, cyclesQuery } from '../rows.ts';
import { StoreError } from '../store.ts';
import type { PostgresConnection } from './connection.ts';

/** Rows of a finished post deleted by one prune statement. */
const PRUNE_BATCH = 5_000;

/**
 * The history on PostgreSQL (see HistoryStore), on the database's clock; recentCycles
 * reads the cycles as `status` reads them, their runs by worker_runs' primary key.
 */
export function makePostgresHistory(c: PostgresConnection): HistoryStore {
  const { q } = c;
  return {
    async startCycle(host: string) {
      const [row] = await q<{ id: number }>('INSERT INTO cycles (host, started_at) VALUES ($1, now()) RETURNING id', [host]);
      if (row === undefined) throw new StoreError('insert into cycles returned no row');
      return row.id;
    },

    async finishCycle(cycleId, result, runs) {
      // One statement, not a transaction block: it runs at the end of a cycle, when the
      // server may just have restarted, and postgres.js 3.4.9 can crash the process when
      // the connection drops inside sql.begin() (porsager/postgres#1066).
      await q(
        `WITH cycle AS (
           UPDATE cycles SET finished_at = now(), pending = $2, recovered = $3, workers_spawned = $4, workers_succeeded = $5,
                  workers_failed = $6, exit_code = $7, duration_ms = $8
            WHERE id = $1
         )
         INSERT INTO worker_runs (worker_id, cycle_id, started_at, finished_at, exit_code, signal, published, retried, failed)
         SELECT w, $1, s, f, e, sg, p, r, fl
           FROM unnest($9::text[], $10::timestamptz[], $11::timestamptz[], $12::int[], $13::text[], $14::int[], $15::int[], $16::int[])
                AS t(w, s, f, e, sg, p, r, fl)`,
        [
          cycleId,
          result.pending,
          result.recovered,
          result.workersSpawned,
          result.workersSucceeded,
          result.workersFailed,
          result.exitCode,
          result.durationMs,
          runs.map((r) => r.workerId),
          runs.map((r) => r.startedAt.toISOString()),
          runs.map((r) => r.finishedAt.toISOString()),
          runs.map((r) => r.exitCode),
          runs.map((r) => r.signal),
          runs.map((r) => r.published),
          runs.map((r) => r.retried),
          runs.map((r) => r.failed),
        ],
      );
    },

    async recentCycles(limit) {
      const cycles = (await q<CycleRow>(cyclesQuery('now()', '$1'), [limit])).map(cycleFromRow);
      if (cycles.length === 0) return [];
      const rows = await q<WorkerRunRow>('SELECT * FROM worker_runs WHERE cycle_id = ANY($1::bigint[]) ORDER BY cycle_id, started_at, worker_id', [cycles.map((c) => c.id)]);
      const runs = runsByCycle(rows);
      return cycles.map((c) => ({ ...c, runs: runs.get(c.id) ?? [] }));
    },

    async prune(olderThanMs) {
      let posts = 0;
      for (;;) {
        const [gone] = await q<{ n: number; details: number[] | null }>(
          `WITH gone AS (
             DELETE FROM post_schedule WHERE id IN (
               SELECT id FROM post_schedule
                WHERE status IN ('published', 'failed', 'cancelled') AND updated_at < now() - $1 * interval '1 millisecond'
                ORDER BY updated_at LIMIT ${PRUNE_BATCH})
             RETURNING post_detail_id)
           SELECT count(*) AS n, array_agg(post_detail_id) AS details FROM gone`,
          [olderThanMs],
        );
        const n = gone?.n ?? 0;
        posts += n;
        if (gone?.details != null && gone.details.length > 0) {
          // content no other post refers to any more
          await q(
            `DELETE FROM post_details d WHERE d.id = ANY($1::bigint[])
                AND NOT EXISTS (SELECT 1 FROM post_schedule s WHERE s.post_detail_id = d.id)`,
            [gone.details],
          );
        }
        if (n < PRUNE_BATCH) break;
      }
      const [cycles] = await q<{ n: number }>(
        `WITH old AS (SELECT id FROM cycles WHERE started_at < now() - $1 * interval '1 millisecond'),
              runs AS (DELETE FROM worker_runs WHERE cycle_id IN (SELECT id FROM old)),
              gone AS (DELETE FROM cycles WHERE id IN (SELECT id FROM old) RETURNING 1)
         SELECT count(*) AS n FROM gone`,
        [olderThanMs],
      );
      return { posts, cycles: cycles?.n ?? 0 };
    },
  };
}
