import type { PostStatus, StatusReport } from '../../types.ts';
import type { FiguresStore } from '../concerns/figures.ts';
import { latenessReport } from '../lateness.ts';
import { sumAttempts } from '../metrics.ts';
import { cycleFromRow, type CycleRow, cyclesQuery, UNKNOWN_POSTS, type UnknownRow } from '../rows.ts';
import { seriesOf } from '../history.ts';
import { dueLoads } from '../sizing.ts';
import type { HistogramSnapshot, MetricsSnapshot, TuneHistory } from '../store.ts';
import { bucketOf, histogramOf, histogramsByPlatform, LATENESS_SECONDS_BOUNDS, PUBLISH_SECONDS_BOUNDS } from '../histograms.ts';
import type { PostgresConnection } from './connection.ts';
import { postgresPausedChannels } from './rate.ts';

/** Above this many rows (the planner's estimate), status estimates the final states' counts. */
const ESTIMATE_ABOVE = 200_000;

type N = number | string;

/**
 * Figures on PostgreSQL (see FiguresStore), on the database's clock.
 */
/** Store.dueByChannel's statement ($1: samples, $2: aheadMs), exported for the conformance suite's plan check. */
export const DUE_BY_CHANNEL = `WITH due AS (
           SELECT channel_id, count(*)::int AS due FROM post_schedule
            WHERE status = 'pending' AND run_at <= now() + $2 * interval '1 millisecond'
              AND NOT (channel_id = ANY (ARRAY(SELECT id FROM channels WHERE paused_at IS NOT NULL)))
            GROUP BY channel_id
         )
         SELECT d.channel_id, d.due, t.ms FROM due d
         LEFT JOIN LATERAL (
           SELECT (extract(epoch FROM a.finished_at - a.started_at) * 1000)::float8 AS ms
             FROM (SELECT id FROM post_schedule p WHERE p.channel_id = d.channel_id AND p.status = 'published'
                    ORDER BY p.updated_at DESC LIMIT $1) p
             JOIN post_attempts a ON a.post_id = p.id AND a.outcome = 'published' AND a.started_at IS NOT NULL
         ) t ON true`;

export function makePostgresFigures(c: PostgresConnection): FiguresStore {
  const { q } = c;
  return {
    async status(cycles: number): Promise<StatusReport> {
      // The states that need someone (due, later, processing, unknown) are counted exactly
      // from their partial indexes. The final states of a large table (published, failed,
      // cancelled: ever-growing) are estimated from the planner's statistics, so status
      // stays cheap at millions of rows; below ESTIMATE_ABOVE rows everything is exact.
      const [stats] = await q<{ rows: number; vals: string[] | null; freqs: number[] | null }>(
        `SELECT c.reltuples::bigint AS rows, s.most_common_vals::text::text[] AS vals, s.most_common_freqs AS freqs
           FROM pg_class c
           LEFT JOIN pg_stats s ON s.schemaname = current_schema() AND s.tablename = 'post_schedule' AND s.attname = 'status'
          WHERE c.oid = 'post_schedule'::regclass`,
      );
      const estimate = stats !== undefined && stats.rows > ESTIMATE_ABOVE && stats.vals !== null && stats.freqs !== null;
      const [counts] = await q<Record<string, number>>(
        estimate
          ? `SELECT (SELECT count(*) FROM post_schedule WHERE status = 'pending' AND run_at <= now()) AS due,
                    (SELECT count(*) FROM post_schedule WHERE status = 'pending' AND run_at > now()) AS later,
                    (SELECT count(*) FROM post_schedule WHERE status = 'processing') AS processing,
                    (SELECT count(*) FROM post_schedule WHERE status = 'unknown') AS unknown`
          : `SELECT count(*) FILTER (WHERE status = 'pending' AND run_at <= now()) AS due,
                    count(*) FILTER (WHERE status = 'pending' AND run_at > now()) AS later,
                    count(*) FILTER (WHERE status = 'processing') AS processing,
                    count(*) FILTER (WHERE status = 'published') AS published,
                    count(*) FILTER (WHERE status = 'failed') AS failed,
                    count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
                    count(*) FILTER (WHERE status = 'unknown') AS unknown
               FROM post_schedule`,
      );
      if (estimate && counts !== undefined) {
        const share = (status: PostStatus) => {
          const i = stats.vals?.indexOf(status) ?? -1;
          return i < 0 ? 0 : Math.round(stats.rows * (stats.freqs?.[i] ?? 0));
        };
        counts['published'] = share('published');
        counts['failed'] = share('failed');
        counts['cancelled'] = share('cancelled');
      }
      const cycleRows = await q<CycleRow>(cyclesQuery('now()', '$1'), [cycles]);
      const failures = await q<{ id: number; last_error: string | null; attempts: number }>(
        "SELECT id, last_error, attempts FROM post_schedule WHERE status = 'failed' ORDER BY updated_at DESC, id DESC LIMIT 5",
      );
      const unknown = await q<UnknownRow>(UNKNOWN_POSTS);
      return {
        counts: {
          duePending: counts?.['due'] ?? 0,
          scheduledLater: counts?.['later'] ?? 0,
          processing: counts?.['processing'] ?? 0,
          published: counts?.['published'] ?? 0,
          failed: counts?.['failed'] ?? 0,
          cancelled: counts?.['cancelled'] ?? 0,
          unknown: counts?.['unknown'] ?? 0,
        },
        cycles: cycleRows.map(cycleFromRow),
        recentFailures: failures.map((f) => ({ id: f.id, lastError: f.last_error, attempts: f.attempts })),
        unknownPosts: unknown.map((u) => ({ id: u.id, channel: u.channel, lastError: u.last_error, attempts: u.attempts })),
        pausedChannels: await postgresPausedChannels(c),
        operatorPaused: (await q<{ name: string; paused_at: Date }>('SELECT name, paused_at FROM channels WHERE paused_at IS NOT NULL AND removed_at IS NULL ORDER BY paused_at, name')).map((r) => ({
          channel: r.name,
          since: r.paused_at,
        })),
        estimated: estimate,
      };
    },

    // ---- status: lateness (h32) ----
    async lateness(windowMs, limit) {
      const rows = await q<{ lateness: number }>(
        `SELECT lateness FROM (
           SELECT greatest(0, round(extract(epoch FROM published_at - coalesce(scheduled_at, run_at)) * 1000))::bigint AS lateness
             FROM post_schedule
            WHERE status = 'published' AND published_at IS NOT NULL AND updated_at >= now() - $1 * interval '1 millisecond'
            ORDER BY updated_at DESC LIMIT $2) recent
          ORDER BY lateness`,
        [windowMs, limit],
      );
      return latenessReport(windowMs, rows.map((r) => r.lateness));
    },

    /**
     * Store.metrics on PostgreSQL: one grouped count per waiting state (each through its
     * partial index), and the oldest due post through the due index, on the database's clock.
     */
    async metrics(windowMs, limit): Promise<MetricsSnapshot> {
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
      // the most recent attempts through post_attempts_finished, whatever their post's state
      const attempts = await q<{ outcome: string; platform: string | null; reason: string | null; n: number; timed: number; ms: number }>(
        `SELECT a.outcome, ch.platform, a.reason, count(*) AS n, count(a.started_at) AS timed,
                coalesce(sum(extract(epoch FROM a.finished_at - a.started_at) * 1000), 0)::float8 AS ms
           FROM (SELECT post_id, outcome, reason, started_at, finished_at FROM post_attempts
                  WHERE finished_at >= now() - $1 * interval '1 millisecond' ORDER BY finished_at DESC LIMIT $2) a
           LEFT JOIN post_schedule p ON p.id = a.post_id
           LEFT JOIN channels ch ON ch.id = p.channel_id
          GROUP BY a.outcome, ch.platform, a.reason`,
        [windowMs, limit],
      );
      return {
        attempts: sumAttempts(attempts),
        waiting: rows.map((r) => ({ state: r.state, channel: r.channel, posts: r.n })),
        oldestDueAt: oldest?.at ?? null,
        now: oldest?.now ?? new Date(),
      };
    },

    /**
     * Store.histograms on PostgreSQL: each value put in its bucket by a CASE over the bounds
     * and counted grouped, over the same bounded reads as metrics (post_attempts by
     * finished_at) and lateness (the index of final states by updated_at), on the database's clock.
     */
    async histograms(windowMs, limit): Promise<HistogramSnapshot> {
      const publish = await q<{ platform: string | null; bucket: number; n: number; ms: number }>(
        `SELECT ch.platform, ${bucketOf('a.ms', PUBLISH_SECONDS_BOUNDS)} AS bucket, count(*)::int AS n, sum(a.ms)::float8 AS ms
           FROM (SELECT post_id, (extract(epoch FROM finished_at - started_at) * 1000)::float8 AS ms FROM post_attempts
                  WHERE finished_at >= now() - $1 * interval '1 millisecond' ORDER BY finished_at DESC LIMIT $2) a
           LEFT JOIN post_schedule p ON p.id = a.post_id
           LEFT JOIN channels ch ON ch.id = p.channel_id
          WHERE a.ms IS NOT NULL
          GROUP BY ch.platform, bucket`,
        [windowMs, limit],
      );
      const lateness = await q<{ bucket: number; n: number; ms: number }>(
        `SELECT ${bucketOf('l.lateness', LATENESS_SECONDS_BOUNDS)} AS bucket, count(*)::int AS n, sum(l.lateness)::float8 AS ms FROM (
           SELECT greatest(0, round(extract(epoch FROM published_at - coalesce(scheduled_at, run_at)) * 1000))::bigint AS lateness
             FROM post_schedule
            WHERE status = 'published' AND published_at IS NOT NULL AND updated_at >= now() - $1 * interval '1 millisecond'
            ORDER BY updated_at DESC LIMIT $2) l
          GROUP BY bucket`,
        [windowMs, limit],
      );
      return { publish: histogramsByPlatform(PUBLISH_SECONDS_BOUNDS, publish), lateness: histogramOf(LATENESS_SECONDS_BOUNDS, lateness) };
    },

    // activity through the index of final states by updated_at and cycles_started
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

    /**
     * Store.tuneHistory on PostgreSQL: one bounded read per list, each through an index
     * (cycles_started, the worker_runs primary key, post_attempts_finished, post_schedule_done),
     * all on the database's clock.
     */
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

    /**
     * Store.dueByChannel on PostgreSQL: the due posts grouped by channel through the due
     * index (as countDue counts them, on the database's clock), and for each such channel
     * its `samples` most recently published posts through post_schedule_published (channel,
     * updated_at), each joined to its published attempt through post_attempts_post.
     */
    async dueByChannel(samples, aheadMs = 0) {
      const rows = await q<{ channel_id: string | number; due: number; ms: number | null }>(
        DUE_BY_CHANNEL,
        [samples, aheadMs],
      );
      return dueLoads(rows.map((r) => ({ channelId: Number(r.channel_id), due: r.due, ms: r.ms })));
    },
  };
}
