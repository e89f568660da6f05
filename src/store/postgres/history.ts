import { runsByCycle, seriesOf, type WorkerRunRow } from '../history.ts';
import { cycleFromRow, cyclesQuery, type CycleRow } from '../rows.ts';
import type { Store } from '../store.ts';

type Query = <R>(text: string, values?: unknown[]) => Promise<R[]>;

/**
 * Store.recentCycles and Store.activity on PostgreSQL, on the database's clock: the
 * cycles as `status` reads them, their runs by worker_runs' primary key; activity
 * through the index of final states by updated_at and cycles_started.
 */
export function makePostgresHistory(q: Query): Pick<Store, 'recentCycles' | 'activity'> {
  return {
    async recentCycles(limit) {
      const cycles = (await q<CycleRow>(cyclesQuery('now()', '$1'), [limit])).map(cycleFromRow);
      if (cycles.length === 0) return [];
      const rows = await q<WorkerRunRow>('SELECT * FROM worker_runs WHERE cycle_id = ANY($1::bigint[]) ORDER BY cycle_id, started_at, worker_id', [cycles.map((c) => c.id)]);
      const runs = runsByCycle(rows);
      return cycles.map((c) => ({ ...c, runs: runs.get(c.id) ?? [] }));
    },
    async activity(windowMs, bucketMs, limit) {
      const [clock] = await q<{ now: Date }>('SELECT now() AS now');
      const to = clock?.now ?? new Date();
      const from = new Date(to.getTime() - windowMs);
      const rows = await q<{ at: string; status: string; n: number }>(
        `SELECT (floor(extract(epoch FROM p.updated_at) * 1000 / $1) * $1)::float8 AS at, p.status, count(*)::int AS n
           FROM (SELECT updated_at, status FROM post_schedule
                  WHERE status IN ('published', 'failed', 'cancelled') AND updated_at >= $2
                  ORDER BY updated_at DESC LIMIT $3) p
          WHERE p.status IN ('published', 'failed')
          GROUP BY 1, p.status`,
        [bucketMs, from, limit],
      );
      const cycles = await q<{ started_at: Date; pending: number | null }>('SELECT started_at, pending FROM cycles WHERE started_at >= $1 ORDER BY started_at DESC, id DESC LIMIT $2', [
        from,
        limit,
      ]);
      return { from, to, ...seriesOf(rows), backlog: cycles.reverse().map((c) => ({ at: c.started_at, due: c.pending ?? 0 })) }; // the newest `limit`, oldest first
    },
  };
}
