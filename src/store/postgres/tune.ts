import type { Store, TuneHistory } from '../store.ts';

type Query = <R>(text: string, values?: unknown[]) => Promise<R[]>;

type N = number | string;

/**
 * Store.tuneHistory on PostgreSQL: one bounded read per list, each through an index
 * (cycles_started, the worker_runs primary key, post_attempts_finished, post_schedule_done),
 * all on the database's clock.
 */
export function makePostgresTune(q: Query): Pick<Store, 'tuneHistory'> {
  return {
    async tuneHistory(windowMs, limit): Promise<TuneHistory> {
      const since = "now() - $1 * interval '1 millisecond'";
      const window = [Math.round(windowMs), limit];
      const [clock] = await q<{ now: Date }>('SELECT now() AS now');
      const cycles = await q<{ id: N; started_at: Date; duration_ms: N | null; pending: N | null; workers_spawned: N | null; exit_code: N | null }>(
        `SELECT id, started_at, duration_ms, pending, workers_spawned, exit_code FROM cycles
          WHERE started_at >= ${since} ORDER BY started_at DESC LIMIT $2`,
        window,
      );
      const runs = await q<{ cycle_id: N; ms: N; published: N; retried: N; failed: N; exit_code: N | null }>(
        `SELECT cycle_id, round(extract(epoch FROM finished_at - started_at) * 1000)::bigint AS ms, published, retried, failed, exit_code
           FROM worker_runs WHERE cycle_id = ANY($1::bigint[]) ORDER BY cycle_id DESC, started_at`,
        [cycles.map((c) => Number(c.id))],
      );
      const attempts = await q<{ channel: string | null; finished_at: Date; outcome: string; reason: string | null; ms: N | null }>(
        `SELECT ch.name AS channel, a.finished_at, a.outcome, a.reason,
                round(extract(epoch FROM a.finished_at - a.started_at) * 1000)::bigint AS ms
           FROM (SELECT * FROM post_attempts WHERE finished_at >= ${since} ORDER BY finished_at DESC LIMIT $2) a
           LEFT JOIN post_schedule s ON s.id = a.post_id
           LEFT JOIN channels ch ON ch.id = s.channel_id
          ORDER BY a.finished_at DESC`,
        window,
      );
      const published = await q<{ channel: string | null; published_at: Date; lateness: N }>(
        `SELECT ch.name AS channel, p.published_at, p.lateness FROM (
           SELECT channel_id, updated_at, published_at,
                  greatest(0, round(extract(epoch FROM published_at - coalesce(scheduled_at, run_at)) * 1000))::bigint AS lateness
             FROM post_schedule
            WHERE status = 'published' AND published_at IS NOT NULL AND updated_at >= ${since}
            ORDER BY updated_at DESC LIMIT $2) p
           LEFT JOIN channels ch ON ch.id = p.channel_id
          ORDER BY p.updated_at DESC`,
        window,
      );
      const paused = await q<{ name: string; paused_until: Date; pause_reason: string | null }>(
        'SELECT name, paused_until, pause_reason FROM channels WHERE paused_until > now() AND removed_at IS NULL ORDER BY name',
      );
      const num = (v: N | null) => (v === null ? null : Number(v));
      return {
        windowMs,
        now: clock?.now ?? new Date(),
        cycles: cycles.map((c) => ({
          id: Number(c.id),
          startedAt: c.started_at,
          durationMs: num(c.duration_ms),
          pending: num(c.pending),
          workersSpawned: num(c.workers_spawned),
          exitCode: num(c.exit_code),
        })),
        workerRuns: runs.map((r) => ({
          cycleId: Number(r.cycle_id),
          durationMs: Number(r.ms),
          published: Number(r.published),
          retried: Number(r.retried),
          failed: Number(r.failed),
          exitCode: num(r.exit_code),
        })),
        attempts: attempts.map((a) => ({ channel: a.channel, finishedAt: a.finished_at, outcome: a.outcome, reason: a.reason, publishMs: num(a.ms) })),
        published: published.map((p) => ({ channel: p.channel, publishedAt: p.published_at, latenessMs: Number(p.lateness) })),
        paused: paused.map((p) => ({ channel: p.name, until: p.paused_until, reason: p.pause_reason })),
      };
    },
  };
}
