import type { PostStatus, StatusReport } from '../../types.ts';
import type { FiguresStore } from '../concerns/figures.ts';
import { latenessReport } from '../lateness.ts';
import { sumAttempts } from '../metrics.ts';
import { cycleFromRow, type CycleRow, cyclesQuery, UNKNOWN_POSTS, type UnknownRow } from '../rows.ts';
import { seriesOf } from '../history.ts';
import { dueLoads } from '../sizing.ts';
import type { HistogramSnapshot, MetricsSnapshot, TuneHistory } from '../store.ts';
import { bucketOf, histogramOf, histogramsByPlatform, LATENESS_SECONDS_BOUNDS, PUBLISH_SECONDS_BOUNDS } from '../histograms.ts';
import type { SqliteConnection } from './connection.ts';
import { SQL } from './queue.ts';
import { sqlitePausedChannels } from './rate.ts';

/** One due channel's recent publish times (channel, samples), exported for the conformance suite's plan check. */
export const RECENT_PUBLISH_TIMES = `SELECT a.finished_at - a.started_at AS ms
             FROM (SELECT id FROM post_schedule WHERE channel_id = ? AND status = 'published' ORDER BY updated_at DESC LIMIT ?) p
             JOIN post_attempts a ON a.post_id = p.id AND a.outcome = 'published' AND a.started_at IS NOT NULL`;

/**
 * Figures on SQLite (see FiguresStore), each read one read transaction.
 */
export function makeSqliteFigures(c: SqliteConnection): FiguresStore {
  const { db, stmt, read } = c;
  return {
    async status(cycles: number): Promise<StatusReport> {
      return read(() => {
      const now = Date.now();
      const due = stmt(SQL.dueCount).get(now) as {
        n: number;
      };
      const byStatus = db.prepare('SELECT status, count(*) AS n FROM post_schedule GROUP BY status').all() as {
        status: PostStatus;
        n: number;
      }[];
      const count = (s: PostStatus) => byStatus.find((r) => r.status === s)?.n ?? 0;
      const cycleRows = stmt(cyclesQuery('?', '?')).all(now, cycles) as CycleRow[];
      const failures = db
        .prepare("SELECT id, last_error, attempts FROM post_schedule WHERE status = 'failed' ORDER BY updated_at DESC, id DESC LIMIT 5")
        .all() as { id: number; last_error: string | null; attempts: number }[];
      const unknown = stmt(UNKNOWN_POSTS).all() as UnknownRow[];
      return {
        counts: {
          duePending: due.n,
          scheduledLater: count('pending') - due.n,
          processing: count('processing'),
          published: count('published'),
          failed: count('failed'),
          cancelled: count('cancelled'),
          unknown: count('unknown'),
        },
        cycles: cycleRows.map(cycleFromRow),
        recentFailures: failures.map((f) => ({ id: f.id, lastError: f.last_error, attempts: f.attempts })),
        unknownPosts: unknown.map((u) => ({ id: u.id, channel: u.channel, lastError: u.last_error, attempts: u.attempts })),
        pausedChannels: sqlitePausedChannels(c),
        operatorPaused: (stmt('SELECT name, paused_at FROM channels WHERE paused_at IS NOT NULL AND removed_at IS NULL ORDER BY paused_at, name').all() as { name: string; paused_at: number }[]).map(
          (r) => ({ channel: r.name, since: new Date(r.paused_at) }),
        ),
        estimated: false,
      };
      });
    },

    // ---- status: lateness (h32) ----
    async lateness(windowMs, limit) {
      // `status IN (...)` as the partial index post_schedule_done states it, so SQLite uses it
      const rows = await read(
        () =>
          stmt(
            `SELECT lateness FROM (
               SELECT max(0, published_at - coalesce(scheduled_at, run_at)) AS lateness FROM post_schedule
                WHERE status IN ('published', 'failed', 'cancelled') AND status = 'published' AND published_at IS NOT NULL
                  AND updated_at >= ?
                ORDER BY updated_at DESC LIMIT ?)
              ORDER BY lateness`,
          ).all(Date.now() - windowMs, limit) as { lateness: number }[],
      );
      return latenessReport(windowMs, rows.map((r) => r.lateness));
    },

    /**
     * Store.metrics on SQLite: one grouped count per waiting state (`status = '...'` as the
     * partial indexes state it, and `+channel_id` so SQLite groups in a temporary b-tree
     * rather than scan the whole table in post_schedule_channel's order), and the oldest due
     * post through the due index.
     */
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

    /**
     * Store.histograms on SQLite: each value put in its bucket by a CASE over the bounds and
     * counted grouped, over the same bounded reads as metrics (post_attempts_finished) and
     * lateness (post_schedule_done: `status IN (...)` as its predicate states it).
     */
    async histograms(windowMs, limit) {
      return read((): HistogramSnapshot => {
        const since = Date.now() - windowMs;
        const publish = stmt(
          `SELECT ch.platform, ${bucketOf('a.ms', PUBLISH_SECONDS_BOUNDS)} AS bucket, count(*) AS n, sum(a.ms) AS ms
             FROM (SELECT post_id, finished_at - started_at AS ms FROM post_attempts WHERE finished_at >= ?
                    ORDER BY finished_at DESC LIMIT ?) a
             LEFT JOIN post_schedule p ON p.id = a.post_id
             LEFT JOIN channels ch ON ch.id = p.channel_id
            WHERE a.ms IS NOT NULL
            GROUP BY ch.platform, bucket`,
        ).all(since, limit) as { platform: string | null; bucket: number; n: number; ms: number }[];
        const lateness = stmt(
          `SELECT ${bucketOf('l.lateness', LATENESS_SECONDS_BOUNDS)} AS bucket, count(*) AS n, sum(l.lateness) AS ms FROM (
             SELECT max(0, published_at - coalesce(scheduled_at, run_at)) AS lateness FROM post_schedule
              WHERE status IN ('published', 'failed', 'cancelled') AND status = 'published' AND published_at IS NOT NULL
                AND updated_at >= ?
              ORDER BY updated_at DESC LIMIT ?) l
            GROUP BY bucket`,
        ).all(since, limit) as { bucket: number; n: number; ms: number }[];
        return { publish: histogramsByPlatform(PUBLISH_SECONDS_BOUNDS, publish), lateness: histogramOf(LATENESS_SECONDS_BOUNDS, lateness) };
      });
    },

    // activity through the index of final states by updated_at (`status IN (...)` as that
    // partial index states it) and cycles_started
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

    /**
     * Store.tuneHistory on SQLite: one read transaction, one bounded read per list, each
     * through an index (cycles_started, the worker_runs primary key, post_attempts_finished,
     * post_schedule_done: `status IN (...)` as its predicate states it, so SQLite uses it).
     */
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

    /**
     * Store.dueByChannel on SQLite: the due posts grouped by channel through the due index
     * (`+channel_id`, as in metrics, so SQLite groups in a temporary b-tree rather than walk
     * post_schedule_channel), then for each due channel its `samples` most recently
     * published posts through post_schedule_published (channel, updated_at), each joined to
     * its published attempt through post_attempts_post. One read transaction.
     */
    async dueByChannel(samples, aheadMs = 0) {
      return read(() => {
        const due = stmt(
          `SELECT channel_id, count(*) AS due FROM post_schedule
            WHERE status = 'pending' AND run_at <= ?
              AND channel_id NOT IN (SELECT id FROM channels WHERE paused_at IS NOT NULL)
            GROUP BY +channel_id`,
        ).all(Date.now() + aheadMs) as { channel_id: number; due: number }[];
        const times = stmt(
          RECENT_PUBLISH_TIMES,
        );
        return dueLoads(
          due.flatMap((d): { channelId: number; due: number; ms: number | null }[] => {
            const ms = times.all(d.channel_id, samples) as { ms: number }[];
            return ms.length === 0 ? [{ channelId: d.channel_id, due: d.due, ms: null }] : ms.map((t) => ({ channelId: d.channel_id, due: d.due, ms: t.ms }));
          }),
        );
      });
    },
  };
}
