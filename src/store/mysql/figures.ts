import type { StatusReport } from '../../types.ts';
import type { FiguresStore } from '../concerns/figures.ts';
import { bucketOf, histogramOf, histogramsByPlatform, LATENESS_SECONDS_BOUNDS, PUBLISH_SECONDS_BOUNDS } from '../histograms.ts';
import { seriesOf } from '../history.ts';
import { latenessReport } from '../lateness.ts';
import { sumAttempts } from '../metrics.ts';
import { cycleFromRow, type CycleRow, cyclesQuery, UNKNOWN_POSTS, type UnknownRow } from '../rows.ts';
import { dueLoads } from '../sizing.ts';
import type { HistogramSnapshot, MetricsSnapshot, TuneHistory } from '../store.ts';
import type { MysqlConnection } from './connection.ts';

/*
 * Times on MySQL/MariaDB. Every figure is on the database's clock (NOW(3)); a window is
 * `NOW(3) - INTERVAL ? MICROSECOND` (the window's ms times 1000, rounded: DATETIME(3)
 * keeps milliseconds). A duration is TIMESTAMPDIFF(MICROSECOND, a, b) / 1000 (exact ms,
 * whatever the time zone). An instant as epoch ms (the activity buckets) is
 * UNIX_TIMESTAMP(t) * 1000: UNIX_TIMESTAMP reads a DATETIME in the session's time zone,
 * and this store's connection sets it to +00:00 (connection.ts), which is what makes it
 * right. mysql2 hands count(*) (BIGINT) and sum() (DECIMAL) back as numbers.
 */

/** The duration from `from` to `to` (DATETIME(3) columns) in milliseconds, as DECIMAL. */
const ms = (from: string, to: string): string => `TIMESTAMPDIFF(MICROSECOND, ${from}, ${to}) / 1000`;

/** How late a published post went out, in whole ms (never below 0). */
const LATENESS = `GREATEST(0, ROUND(${ms('COALESCE(scheduled_at, run_at)', 'published_at')}))`;

/** The start of a window `?` (microseconds) before the database's now. */
const SINCE = 'NOW(3) - INTERVAL ? MICROSECOND';
const micros = (windowMs: number): number => Math.max(0, Math.round(windowMs * 1000));

/**
 * One due channel's recent publish times (channel, samples): its `samples` most recently
 * published posts through post_schedule_published (channel_id, status, updated_at), each
 * joined to its published attempt through post_attempts_post. Exported for the
 * conformance suite's plan check; dueByChannel unions one of these per due channel.
 */
export const MYSQL_RECENT_PUBLISH_TIMES = `SELECT ${ms('a.started_at', 'a.finished_at')} AS ms
             FROM (SELECT id FROM post_schedule WHERE channel_id = ? AND status = 'published' ORDER BY updated_at DESC LIMIT ?) p
             JOIN post_attempts a ON a.post_id = p.id AND a.outcome = 'published' AND a.started_at IS NOT NULL`;

/** Due channels whose publish times dueByChannel reads in one statement (one UNION ALL branch each). */
const CHANNELS_PER_STATEMENT = 200;

/**
 * Figures on MySQL/MariaDB (see FiguresStore), each read through an index as on
 * PostgreSQL: the partial indexes there are the ranges of an index led by `status` here
 * (post_schedule_due for pending posts by run_at, post_schedule_done for the others by
 * updated_at).
 */
export function makeMysqlFigures(c: MysqlConnection): FiguresStore {
  const { q } = c;
  return {
    async status(cycles: number): Promise<StatusReport> {
      // Each state counted exactly over its own range of an index led by status (a subquery
      // each: one range read each, never a scan of the table). Not estimated as PostgreSQL
      // estimates the final states of a large table: InnoDB's statistics keep no frequency
      // per value, and EXPLAIN's index-dive estimate of a state's rows was 2x off at
      // 1,000,000 rows (MariaDB 10.11). Measured there: 180-220 ms for the exact counts, the
      // order of PostgreSQL's full count that its estimate avoids.
      const [counts] = await q<Record<string, number | null>>(
        `SELECT (SELECT count(*) FROM post_schedule WHERE status = 'pending' AND run_at <= NOW(3)) AS due,
                (SELECT count(*) FROM post_schedule WHERE status = 'pending' AND run_at > NOW(3)) AS later,
                (SELECT count(*) FROM post_schedule WHERE status = 'processing') AS processing,
                (SELECT count(*) FROM post_schedule WHERE status = 'published') AS published,
                (SELECT count(*) FROM post_schedule WHERE status = 'failed') AS failed,
                (SELECT count(*) FROM post_schedule WHERE status = 'cancelled') AS cancelled,
                (SELECT count(*) FROM post_schedule WHERE status = 'unknown') AS unknown`,
      );
      const cycleRows = await q<CycleRow>(cyclesQuery('NOW(3)', '?'), [cycles]);
      const failures = await q<{ id: number; last_error: string | null; attempts: number }>(
        "SELECT id, last_error, attempts FROM post_schedule WHERE status = 'failed' ORDER BY updated_at DESC, id DESC LIMIT 5",
      );
      const unknown = await q<UnknownRow>(UNKNOWN_POSTS);
      const paused = await q<{ name: string; paused_until: Date; pause_reason: string | null }>(
        'SELECT name, paused_until, pause_reason FROM channels WHERE paused_until > NOW(3) ORDER BY paused_until, name',
      );
      const operator = await q<{ name: string; paused_at: Date }>(
        'SELECT name, paused_at FROM channels WHERE paused_at IS NOT NULL AND removed_at IS NULL ORDER BY paused_at, name',
      );
      const count = (key: string) => counts?.[key] ?? 0;
      return {
        counts: {
          duePending: count('due'),
          scheduledLater: count('later'),
          processing: count('processing'),
          published: count('published'),
          failed: count('failed'),
          cancelled: count('cancelled'),
          unknown: count('unknown'),
        },
        cycles: cycleRows.map(cycleFromRow),
        recentFailures: failures.map((f) => ({ id: f.id, lastError: f.last_error, attempts: f.attempts })),
        unknownPosts: unknown.map((u) => ({ id: u.id, channel: u.channel, lastError: u.last_error, attempts: u.attempts })),
        pausedChannels: paused.map((r) => ({ channel: r.name, until: r.paused_until, reason: r.pause_reason })),
        operatorPaused: operator.map((r) => ({ channel: r.name, since: r.paused_at })),
        estimated: false,
      };
    },

    // ---- status: lateness (h32) ----
    async lateness(windowMs, limit) {
      // Percentiles as SQLite (and PostgreSQL) take them: the lateness of at most `limit`
      // posts, sorted by the server, ranked in JS (lateness.ts). MySQL 8 has no
      // percentile_cont (MariaDB only as a window function over every row), and the read is
      // bounded by `limit` anyway, so nothing is gained by ranking in SQL.
      const rows = await q<{ lateness: number }>(
        `SELECT lateness FROM (
           SELECT ${LATENESS} AS lateness FROM post_schedule
            WHERE status = 'published' AND published_at IS NOT NULL AND updated_at >= ${SINCE}
            ORDER BY updated_at DESC LIMIT ?) recent
          ORDER BY lateness`,
        [micros(windowMs), limit],
      );
      return latenessReport(windowMs, rows.map((r) => r.lateness));
    },

    /**
     * Store.metrics on MySQL/MariaDB: one grouped count per waiting state (each over its
     * range of an index led by status), and the oldest due post through the due index, on
     * the database's clock.
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
        "SELECT (SELECT min(run_at) FROM post_schedule WHERE status = 'pending' AND run_at <= NOW(3)) AS at, NOW(3) AS now",
      );
      // the most recent attempts through post_attempts_finished, whatever their post's state
      const attempts = await q<{ outcome: string; platform: string | null; reason: string | null; n: number; timed: number; ms: number }>(
        `SELECT a.outcome, ch.platform, a.reason, count(*) AS n, count(a.started_at) AS timed,
                COALESCE(sum(${ms('a.started_at', 'a.finished_at')}), 0) AS ms
           FROM (SELECT post_id, outcome, reason, started_at, finished_at FROM post_attempts
                  WHERE finished_at >= ${SINCE} ORDER BY finished_at DESC LIMIT ?) a
           LEFT JOIN post_schedule p ON p.id = a.post_id
           LEFT JOIN channels ch ON ch.id = p.channel_id
          GROUP BY a.outcome, ch.platform, a.reason`,
        [micros(windowMs), limit],
      );
      return {
        attempts: sumAttempts(attempts),
        waiting: rows.map((r) => ({ state: r.state, channel: r.channel, posts: r.n })),
        oldestDueAt: oldest?.at ?? null,
        now: oldest?.now ?? new Date(),
      };
    },

    /**
     * Store.histograms on MySQL/MariaDB: each value put in its bucket by a CASE over the
     * bounds and counted grouped, over the same bounded reads as metrics (post_attempts by
     * finished_at) and lateness (post_schedule_done by updated_at), on the database's clock.
     */
    async histograms(windowMs, limit): Promise<HistogramSnapshot> {
      const publish = await q<{ platform: string | null; bucket: number; n: number; ms: number }>(
        `SELECT ch.platform, ${bucketOf('a.ms', PUBLISH_SECONDS_BOUNDS)} AS bucket, count(*) AS n, sum(a.ms) AS ms
           FROM (SELECT post_id, ${ms('started_at', 'finished_at')} AS ms FROM post_attempts
                  WHERE finished_at >= ${SINCE} ORDER BY finished_at DESC LIMIT ?) a
           LEFT JOIN post_schedule p ON p.id = a.post_id
           LEFT JOIN channels ch ON ch.id = p.channel_id
          WHERE a.ms IS NOT NULL
          GROUP BY ch.platform, bucket`,
        [micros(windowMs), limit],
      );
      const lateness = await q<{ bucket: number; n: number; ms: number }>(
        `SELECT ${bucketOf('l.lateness', LATENESS_SECONDS_BOUNDS)} AS bucket, count(*) AS n, sum(l.lateness) AS ms FROM (
           SELECT ${LATENESS} AS lateness FROM post_schedule
            WHERE status = 'published' AND published_at IS NOT NULL AND updated_at >= ${SINCE}
            ORDER BY updated_at DESC LIMIT ?) l
          GROUP BY bucket`,
        [micros(windowMs), limit],
      );
      return { publish: histogramsByPlatform(PUBLISH_SECONDS_BOUNDS, publish), lateness: histogramOf(LATENESS_SECONDS_BOUNDS, lateness) };
    },

    // activity through post_schedule_done (status, updated_at) and cycles_started
    async activity(windowMs, bucketMs, limit) {
      const [clock] = await q<{ now: Date }>('SELECT NOW(3) AS now');
      const to = clock?.now ?? new Date();
      const from = new Date(to.getTime() - windowMs);
      // The `limit` most recent posts in a final state, as PostgreSQL reads them from its
      // partial index: here one branch per state, each the newest `limit` of its range of
      // post_schedule_done (status, updated_at) read in index order, so that no more than
      // 3 x `limit` entries are read however busy the window was (`status IN (...)` over the
      // three ranges would sort all of the window's posts). The bucket's start in epoch ms:
      // UNIX_TIMESTAMP, right because the session is in UTC (see above).
      const newest = (status: string) =>
        `(SELECT updated_at, status FROM post_schedule WHERE status = '${status}' AND updated_at >= ? ORDER BY updated_at DESC LIMIT ?)`;
      const rows = await q<{ at: number; status: string; n: number }>(
        `SELECT FLOOR(UNIX_TIMESTAMP(p.updated_at) * 1000 / ?) * ? AS at, p.status, count(*) AS n
           FROM (SELECT updated_at, status FROM (${newest('published')} UNION ALL ${newest('failed')} UNION ALL ${newest('cancelled')}) f
                  ORDER BY updated_at DESC LIMIT ?) p
          WHERE p.status IN ('published', 'failed')
          GROUP BY at, p.status`,
        [bucketMs, bucketMs, from, limit, from, limit, from, limit, limit],
      );
      const cycles = await q<{ started_at: Date; pending: number | null }>('SELECT started_at, pending FROM cycles WHERE started_at >= ? ORDER BY started_at DESC, id DESC LIMIT ?', [
        from,
        limit,
      ]);
      return { from, to, ...seriesOf(rows), backlog: cycles.reverse().map((x) => ({ at: x.started_at, due: x.pending ?? 0 })) }; // the newest `limit`, oldest first
    },

    /**
     * Store.tuneHistory on MySQL/MariaDB: one bounded read per list, each through an index
     * (cycles_started, the worker_runs primary key, post_attempts_finished,
     * post_schedule_done), all on the database's clock.
     */
    async tuneHistory(windowMs, limit): Promise<TuneHistory> {
      const window = [micros(windowMs), limit];
      const [clock] = await q<{ now: Date }>('SELECT NOW(3) AS now');
      const cycles = await q<{ id: number; started_at: Date; duration_ms: number | null; pending: number | null; workers_spawned: number | null; exit_code: number | null }>(
        `SELECT id, started_at, duration_ms, pending, workers_spawned, exit_code FROM cycles
          WHERE started_at >= ${SINCE} ORDER BY started_at DESC LIMIT ?`,
        window,
      );
      const runs =
        cycles.length === 0
          ? []
          : await q<{ cycle_id: number; ms: number; published: number; retried: number; failed: number; exit_code: number | null }>(
              `SELECT cycle_id, ROUND(${ms('started_at', 'finished_at')}) AS ms, published, retried, failed, exit_code
                 FROM worker_runs WHERE cycle_id IN (?) ORDER BY cycle_id DESC, started_at`,
              [cycles.map((x) => x.id)],
            );
      const attempts = await q<{ channel: string | null; finished_at: Date; outcome: string; reason: string | null; ms: number | null }>(
        `SELECT ch.name AS channel, a.finished_at, a.outcome, a.reason, ROUND(${ms('a.started_at', 'a.finished_at')}) AS ms
           FROM (SELECT * FROM post_attempts WHERE finished_at >= ${SINCE} ORDER BY finished_at DESC LIMIT ?) a
           LEFT JOIN post_schedule s ON s.id = a.post_id
           LEFT JOIN channels ch ON ch.id = s.channel_id
          ORDER BY a.finished_at DESC`,
        window,
      );
      const published = await q<{ channel: string | null; published_at: Date; lateness: number }>(
        `SELECT ch.name AS channel, p.published_at, p.lateness FROM (
           SELECT channel_id, updated_at, published_at, ${LATENESS} AS lateness
             FROM post_schedule
            WHERE status = 'published' AND published_at IS NOT NULL AND updated_at >= ${SINCE}
            ORDER BY updated_at DESC LIMIT ?) p
           LEFT JOIN channels ch ON ch.id = p.channel_id
          ORDER BY p.updated_at DESC`,
        window,
      );
      const paused = await q<{ name: string; paused_until: Date; pause_reason: string | null }>(
        'SELECT name, paused_until, pause_reason FROM channels WHERE paused_until > NOW(3) AND removed_at IS NULL ORDER BY name',
      );
      return {
        windowMs,
        now: clock?.now ?? new Date(),
        cycles: cycles.map((x) => ({
          id: x.id,
          startedAt: x.started_at,
          durationMs: x.duration_ms,
          pending: x.pending,
          workersSpawned: x.workers_spawned,
          exitCode: x.exit_code,
        })),
        workerRuns: runs.map((r) => ({ cycleId: r.cycle_id, durationMs: r.ms, published: r.published, retried: r.retried, failed: r.failed, exitCode: r.exit_code })),
        attempts: attempts.map((a) => ({ channel: a.channel, finishedAt: a.finished_at, outcome: a.outcome, reason: a.reason, publishMs: a.ms })),
        published: published.map((p) => ({ channel: p.channel, publishedAt: p.published_at, latenessMs: p.lateness })),
        paused: paused.map((p) => ({ channel: p.name, until: p.paused_until, reason: p.pause_reason })),
      };
    },

    /**
     * Store.dueByChannel on MySQL/MariaDB: the due posts grouped by channel through the due
     * index (as countDue counts them, on the database's clock), then, in one more statement,
     * each due channel's recent publish times (MYSQL_RECENT_PUBLISH_TIMES, one UNION ALL
     * branch per channel: MariaDB has no LATERAL join, and a window function over the
     * channels' published posts would read all of them rather than `samples` each).
     */
    async dueByChannel(samples, aheadMs = 0) {
      const due = await q<{ channel_id: number; due: number }>(
        `SELECT channel_id, count(*) AS due FROM post_schedule
          WHERE status = 'pending' AND run_at <= NOW(3) + INTERVAL ? * 1000 MICROSECOND
            AND channel_id NOT IN (SELECT id FROM channels WHERE paused_at IS NOT NULL)
          GROUP BY channel_id`,
        [aheadMs],
      );
      if (due.length === 0) return [];
      const times: { channel_id: number; ms: number }[] = [];
      for (let i = 0; i < due.length; i += CHANNELS_PER_STATEMENT) {
        const some = due.slice(i, i + CHANNELS_PER_STATEMENT);
        times.push(
          ...(await q<{ channel_id: number; ms: number }>(
            some.map(() => `(SELECT ? AS channel_id, t.ms FROM (${MYSQL_RECENT_PUBLISH_TIMES}) t)`).join(' UNION ALL '),
            some.flatMap((d) => [d.channel_id, d.channel_id, samples]),
          )),
        );
      }
      const byChannel = new Map<number, number[]>();
      for (const t of times) byChannel.set(t.channel_id, [...(byChannel.get(t.channel_id) ?? []), t.ms]);
      return dueLoads(
        due.flatMap((d): { channelId: number; due: number; ms: number | null }[] => {
          const list = byChannel.get(d.channel_id) ?? [];
          return list.length === 0 ? [{ channelId: d.channel_id, due: d.due, ms: null }] : list.map((x) => ({ channelId: d.channel_id, due: d.due, ms: x }));
        }),
      );
    },
  };
}
