import Database from 'better-sqlite3';
import { TRANSITIONS, whereFrom } from '../../states.ts';
import { latenessReport } from '../lateness.ts';
import type { Channel, HeldPost, NewChannel, NewPost, OnUnknown, Outcome, PostStatus, RecoveredPost, StatusReport } from '../../types.ts';
import { holderDead, makeHolder } from '../holder.ts';
import {
  channelFromRow,
  claimedFromRow,
  CLAIM_COLUMNS,
  cycleFromRow,
  cyclesQuery,
  partsColumn,
  postFromRow,
  publishedPartColumn,
  type ChannelRow,
  type ClaimRow,
  type CycleRow,
  type PostRow,
  type UnknownRow,
  UNKNOWN_POSTS,
} from '../rows.ts';
import { foreignTablesMessage, leaseExpiredMessage, newerSchemaMessage, recoveredStatus, StoreError, type ClaimOptions, type Exchange, type Store } from '../store.ts';
import { prepareDatabaseFile } from './database-file.ts';
import { nativeBindingOption } from './native-binding.ts';
import { SQLITE_MIGRATIONS } from './migrations.ts';
import { makeSqliteHistory } from './history.ts';
import { makeSqliteAlerts } from './alerts.ts';
import { makeSqliteManage } from './manage.ts';
import { makeSqliteMetrics } from './metrics.ts';
import { makeSqliteSizing } from './sizing.ts';
import { makeSqliteRate } from './rate.ts';
import { attemptRecord } from '../list.ts';
import { makeSqliteTune } from './tune.ts';

/** How long a write waits for another process's write lock before failing. */
const BUSY_TIMEOUT_MS = 15_000;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * How often watchDue reads the file's data_version (a change by another process may
 * have moved the next due time). 50 ms: the read costs ~5 µs (measured; nextDue's indexed
 * look-up with 100,000 posts pending, ~6 µs), and it says only that something was written,
 * so the daemon reads nextDue only then; a post scheduled to go out at once waits at most
 * this long to be seen.
 */
const DUE_POLL_MS = 50;

/** Rows of a finished post deleted by one prune transaction. */
const PRUNE_BATCH = 5_000;

function isBusy(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
}

/**
 * SQLite store: one file, WAL journal, many processes. Writers serialise on the
 * database lock; a claim takes it up front (BEGIN IMMEDIATE) so that the select of
 * due posts and their update to processing are one atomic step.
 *
 * synchronous=NORMAL: in WAL mode a commit survives the crash of any process; only
 * an operating-system crash or power loss can roll back the last commits. FULL would
 * add an fsync to every commit (2.9 ms against 0.08 ms per transaction measured here).
 *
 * A writer that finds the lock taken retries after 1-20 ms (with jitter) for up to
 * BUSY_TIMEOUT_MS, in the event loop, instead of SQLite's busy handler, which blocks
 * the process and sleeps in steps of up to 100 ms.
 */
export function openSqliteStore(file: string): Store {
  const { created } = prepareDatabaseFile(file);
  let db: Database.Database;
  try {
    db = new Database(file, { timeout: BUSY_TIMEOUT_MS, ...nativeBindingOption() });
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('busy_timeout = 0');
    db.pragma('foreign_keys = ON');
  } catch (e) {
    throw new StoreError(`cannot open SQLite database ${file}: ${(e as Error).message}`);
  }

  /** This store's identity in cycle_locks: one per connection. */
  const holder = makeHolder();
  const statements = new Map<string, Database.Statement>();
  /** A prepared statement, prepared once per connection. */
  const stmt = (text: string): Database.Statement => {
    let prepared = statements.get(text);
    if (prepared === undefined) {
      prepared = db.prepare(text);
      statements.set(text, prepared);
    }
    return prepared;
  };

  /** Runs `fn` again while another process holds the database lock, up to BUSY_TIMEOUT_MS. */
  const retryBusy = async <T>(fn: () => T): Promise<T> => {
    const deadline = Date.now() + BUSY_TIMEOUT_MS;
    for (let attempt = 0; ; attempt++) {
      try {
        return fn();
      } catch (e) {
        if (!isBusy(e) || Date.now() > deadline) throw e;
        await sleep(Math.min(20, 1 + attempt) * (0.5 + Math.random()));
      }
    }
  };
  /** A write transaction that takes the lock up front (BEGIN IMMEDIATE). */
  const immediate = <T>(fn: () => T): Promise<T> => retryBusy(() => db.transaction(fn).immediate());
  const read = <T>(fn: () => T): Promise<T> => retryBusy(fn);

  // Every update of a claim: still processing under this worker and this claim token.
  const fence = `status = 'processing' AND worker_id = ? AND claim_token = ?`;
  const SQL = {
    // publish, or publishLate: recovery took the post back, nobody claimed it since
    published: `UPDATE post_schedule SET status = '${TRANSITIONS.publish.to}', published_at = ?, external_id = ?, external_url = ?,
                       unconfirmed = 0, lease_expires_at = NULL, updated_at = ?
                 WHERE id = ? AND claim_token = ? AND (${whereFrom('publish')} AND worker_id = ? OR ${whereFrom('publishLate')})`,
    retry: `UPDATE post_schedule SET status = '${TRANSITIONS.retryLater.to}', run_at = ?, last_error = ?, attempts = attempts - ?,
                   unconfirmed = MAX(unconfirmed, ?), worker_id = NULL, locked_at = NULL, lease_expires_at = NULL, updated_at = ?
             WHERE id = ? AND ${whereFrom('retryLater')} AND ${fence}`,
    failed: `UPDATE post_schedule SET status = '${TRANSITIONS.fail.to}', last_error = ?, lease_expires_at = NULL, updated_at = ?
              WHERE id = ? AND ${whereFrom('fail')} AND ${fence}`,
    unknown: `UPDATE post_schedule SET status = '${TRANSITIONS.holdUnknown.to}', last_error = ?, unconfirmed = 1,
                     lease_expires_at = NULL, updated_at = ?
               WHERE id = ? AND ${whereFrom('holdUnknown')} AND ${fence}`,
    released: `UPDATE post_schedule SET status = '${TRANSITIONS.release.to}', attempts = attempts - 1,
                      worker_id = NULL, locked_at = NULL, lease_expires_at = NULL, updated_at = ?
                WHERE id = ? AND ${whereFrom('release')} AND ${fence}`,
    // Locks: the whole database, for the length of this short write transaction.
    claim: `UPDATE post_schedule
               SET status = '${TRANSITIONS.claim.to}', worker_id = ?, locked_at = ?, lease_expires_at = ?,
                   attempts = attempts + 1, claim_token = claim_token + 1, updated_at = ?
             WHERE id IN (SELECT id FROM post_schedule
                           WHERE ${whereFrom('claim')} AND run_at <= ?
                             AND id NOT IN (SELECT value FROM json_each(?))
                             -- never a post of a channel an operator paused (a list read once)
                             AND channel_id NOT IN (SELECT id FROM channels WHERE paused_at IS NOT NULL)
                           ORDER BY run_at, id LIMIT ?)
           RETURNING id`,
    // due posts, read from the partial due index
    dueCount: `SELECT count(*) AS n FROM post_schedule WHERE status = 'pending' AND run_at <= ?
                 AND channel_id NOT IN (SELECT id FROM channels WHERE paused_at IS NOT NULL)`,
    // the next due time: the first entry of the partial due index not of a paused channel
    nextDue: `SELECT run_at FROM post_schedule WHERE status = 'pending' AND run_at > ?
                AND channel_id NOT IN (SELECT id FROM channels WHERE paused_at IS NOT NULL)
              ORDER BY run_at LIMIT 1`,
    // the attempt as it was before its outcome (posts show)
    before: 'SELECT attempts, locked_at FROM post_schedule WHERE id = ?',
    attempt: `INSERT INTO post_attempts (post_id, attempt, worker_id, started_at, finished_at, outcome, reason, error, external_id, external_url)
              VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    // the claimed posts with content and channel; ids as one JSON array, so that one
    // prepared statement serves every batch size
    claimed: `SELECT ${CLAIM_COLUMNS}, d.text, d.parts
                FROM post_schedule s
                LEFT JOIN post_details d ON d.id = s.post_detail_id
                LEFT JOIN channels ch ON ch.id = s.channel_id
               WHERE s.id IN (SELECT value FROM json_each(?))
               ORDER BY s.run_at, s.id`,
  } as const;

  /** The claim and the outcomes in one immediate transaction (one commit). */
  const exchange = (workerId: string, outcomes: readonly Outcome[], limit: number, leaseMs: number, claim: ClaimOptions = {}): Promise<Exchange> =>
    immediate(() => {
      const now = Date.now();
      // a worker with a GLOBAL_MAX_WORKERS slot claims only while the slot is its own,
      // and the claim extends it as long as the leases it takes
      if (limit > 0 && claim.slot === true) {
        const held = stmt('UPDATE worker_slots SET expires_at = ? WHERE holder = ? AND expires_at > ?').run(now + leaseMs, workerId, now).changes;
        if (held === 0) limit = 0;
      }
      // The claim first, then the outcomes: a post this call returns to pending is not
      // claimed again by it (as on PostgreSQL, where both see the same snapshot).
      let ids: number[] = [];
      // never a post this call records an outcome for (a late publish of a post recovery
      // put back must land, not be hidden by a new claim)
      const recording = JSON.stringify(outcomes.map((o) => o.postId));
      if (limit > 0) ids = (stmt(SQL.claim).all(workerId, now, now + leaseMs, now, now, recording, limit) as { id: number }[]).map((r) => r.id);
      const applied: number[] = [];
      for (const o of outcomes) {
        let changes: number;
        const before = o.kind === 'released' ? undefined : (stmt(SQL.before).get(o.postId) as { attempts: number; locked_at: number | null } | undefined);
        if (o.kind === 'published') {
          changes = stmt(SQL.published).run(now, o.externalId, o.externalUrl, now, o.postId, o.token, workerId).changes;
        } else if (o.kind === 'retry') {
          changes = stmt(SQL.retry).run(now + o.delayMs, o.error, o.uncounted === true ? 1 : 0, o.unconfirmed ? 1 : 0, now, o.postId, workerId, o.token).changes;
        } else if (o.kind === 'failed') {
          changes = stmt(SQL.failed).run(o.error, now, o.postId, workerId, o.token).changes;
        } else if (o.kind === 'unknown') {
          changes = stmt(SQL.unknown).run(o.error, now, o.postId, workerId, o.token).changes;
        } else {
          changes = stmt(SQL.released).run(now, o.postId, workerId, o.token).changes;
        }
        if (changes > 0) applied.push(o.postId);
        // posts show: one row per attempt that ended, with its reason (a release is none)
        const record = attemptRecord(o);
        if (changes > 0 && before !== undefined && record !== null) {
          const error = o.kind === 'published' || o.kind === 'released' ? null : o.error;
          const [externalId, externalUrl] = o.kind === 'published' ? [o.externalId, o.externalUrl] : [null, null];
          stmt(SQL.attempt).run(o.postId, before.attempts, workerId, before.locked_at, now, record.outcome, record.reason, error, externalId, externalUrl);
        }
      }
      if (ids.length === 0) return { applied, claimed: [] };
      const rows = stmt(SQL.claimed).all(JSON.stringify(ids)) as ClaimRow[];
      return { applied, claimed: rows.map(claimedFromRow) };
    });

  const rate = makeSqliteRate(stmt, immediate);
  const alerts = makeSqliteAlerts(stmt, immediate, read);
  const store: Store = {
    ...makeSqliteManage(stmt, immediate, read),
    ...makeSqliteMetrics(stmt, read),
    ...makeSqliteTune(stmt, read),
    ...makeSqliteHistory(stmt, read),
    ...makeSqliteSizing(stmt, read),
    takeRateSlot: rate.takeRateSlot,
    unalertedOutcomes: alerts.unalertedOutcomes,
    scheduleAlerts: alerts.scheduleAlerts,
    settleRateSlot: rate.settleRateSlot,
    acquireSendSlot: rate.acquireSendSlot,
    releaseSendSlot: rate.releaseSendSlot,
    pauseChannel: rate.pauseChannel,
    dialect: 'sqlite',
    created,

    async migrate() {
      const latest = Math.max(...SQLITE_MIGRATIONS.map((m) => m.version));
      await immediate(() => {
        // A file that is someone else's database: never mix our tables into it.
        const tables = (stmt("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all() as { name: string }[]).map(
          (r) => r.name,
        );
        // ours: a schema_migrations with a `name` column (a Rails one has only `version`)
        const ours =
          tables.includes('schema_migrations') &&
          (db.prepare("SELECT count(*) AS n FROM pragma_table_info('schema_migrations') WHERE name = 'name'").get() as { n: number }).n > 0;
        if (!ours && tables.length > 0) {
          throw new StoreError(foreignTablesMessage(`the SQLite database ${file}`, tables, 'give post-scheduler a database file of its own (DATABASE_URL=sqlite:PATH)'));
        }
        db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
          version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`);
      });
      await immediate(() => {
        const applied = new Set(
          (db.prepare('SELECT version FROM schema_migrations').all() as { version: number }[]).map((r) => r.version),
        );
        const newest = Math.max(0, ...applied);
        if (newest > latest) throw new StoreError(newerSchemaMessage(newest, latest, `sqlite:${file}`));
        for (const m of SQLITE_MIGRATIONS) {
          if (applied.has(m.version)) continue;
          db.exec(m.sql);
          db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(m.version, m.name, Date.now());
        }
      });
    },

    async connections() {
      return null;
    },

    async ping() {
      await read(() => stmt('SELECT 1').get());
    },

    async close() {
      if (db.open) db.close();
    },

    async addChannel(channel: NewChannel): Promise<Channel> {
      const row = (await immediate(() =>
        stmt('INSERT INTO channels (name, platform, settings, enabled, on_unknown, credentials, created_at) VALUES (?, ?, ?, 1, ?, ?, ?) RETURNING *').get(
          channel.name,
          channel.platform,
          JSON.stringify(channel.settings),
          channel.onUnknown,
          channel.credentials ?? null,
          Date.now(),
        ),
      )) as ChannelRow;
      return channelFromRow(row);
    },

    async listChannels() {
      return ((await read(() => stmt('SELECT * FROM channels WHERE removed_at IS NULL ORDER BY name').all())) as ChannelRow[]).map(channelFromRow);
    },

    async findChannel(name: string) {
      const row = (await read(() => stmt('SELECT * FROM channels WHERE name = ? AND removed_at IS NULL').get(name))) as ChannelRow | undefined;
      return row === undefined ? null : channelFromRow(row);
    },

    async updateChannel(name, changes) {
      const row = (await immediate(() =>
        stmt(
          `UPDATE channels SET on_unknown = COALESCE(?, on_unknown), enabled = COALESCE(?, enabled)
            WHERE name = ? AND removed_at IS NULL RETURNING *`,
        ).get(changes.onUnknown ?? null, changes.enabled === undefined ? null : changes.enabled ? 1 : 0, name),
      )) as ChannelRow | undefined;
      return row === undefined ? null : channelFromRow(row);
    },

    async replaceSettings(channelId, settings) {
      return immediate(() => stmt('UPDATE channels SET settings = ? WHERE id = ?').run(JSON.stringify(settings), channelId).changes > 0);
    },

    async saveCredentials(channelId, sealed, expected) {
      return immediate(() =>
        expected === undefined
          ? stmt('UPDATE channels SET credentials = ?, attention = NULL WHERE id = ?').run(sealed, channelId).changes > 0
          : stmt('UPDATE channels SET credentials = ? WHERE id = ? AND credentials IS ?').run(sealed, channelId, expected).changes > 0,
      );
    },

    async setAttention(channelId, reason) {
      await immediate(() => stmt('UPDATE channels SET attention = ? WHERE id = ? AND attention IS NOT ?').run(reason, channelId, reason));
    },

    async schedulePosts(posts: readonly NewPost[]) {
      const { randomUUID } = await import('node:crypto');
      const insertDetail = db.prepare('INSERT INTO post_details (text, parts, created_at) VALUES (?, ?, ?)');
      const insertSchedule = db.prepare(
        `INSERT INTO post_schedule (post_detail_id, channel_id, run_at, scheduled_at, status, idempotency_key, created_at, updated_at)
         VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)`,
      );
      return immediate(() => {
        const now = Date.now();
        return posts.map((p) => {
          const detailId = insertDetail.run(p.text, partsColumn(p), now).lastInsertRowid;
          const at = p.runAt.getTime();
          return Number(insertSchedule.run(detailId, p.channelId, at, at, randomUUID(), now, now).lastInsertRowid);
        });
      });
    },

    async getPost(id: number) {
      const row = (await read(() =>
        stmt(`SELECT s.*, d.text, d.parts, ch.name AS channel_name FROM post_schedule s LEFT JOIN post_details d ON d.id = s.post_detail_id
            LEFT JOIN channels ch ON ch.id = s.channel_id WHERE s.id = ?`).get(id),
      )) as PostRow | undefined;
      return row === undefined ? null : postFromRow(row);
    },

    async countDue(aheadMs = 0) {
      const row = (await read(() =>
        stmt(SQL.dueCount).get(Date.now() + aheadMs),
      )) as { n: number };
      return row.n;
    },

    async nextDue(after?: Date) {
      const row = (await read(() => stmt(SQL.nextDue).get(after?.getTime() ?? -1))) as { run_at: number } | undefined;
      // the database's clock is this host's (the store writes run_at with Date.now())
      return row === undefined ? null : { runAt: new Date(row.run_at), inMs: row.run_at - Date.now() };
    },

    watchDue(onChange: () => void) {
      // data_version changes when another connection commits: one read of shared memory,
      // no table touched, so it can be read often
      const version = () => db.pragma('data_version', { simple: true }) as number;
      let last = version();
      const timer = setInterval(() => {
        try {
          const now = version();
          if (now !== last) {
            last = now;
            onChange();
          }
        } catch {
          // the file is briefly unreadable: the next tick reads again
        }
      }, DUE_POLL_MS);
      timer.unref();
      queueMicrotask(onChange);
      return Promise.resolve({
        close: () => {
          clearInterval(timer);
          return Promise.resolve();
        },
      });
    },

    async claim(workerId: string, limit: number, leaseMs: number) {
      return (await exchange(workerId, [], limit, leaseMs)).claimed;
    },

    async recordOutcomes(workerId: string, outcomes: readonly Outcome[]) {
      return (await exchange(workerId, outcomes, 0, 0)).applied;
    },

    exchange: (workerId, outcomes, limit, leaseMs, claim) => exchange(workerId, outcomes, limit, leaseMs, claim),

    async renewLeases(workerId, held, leaseMs) {
      if (held.length === 0) return [];
      return immediate(() => {
        const now = Date.now();
        const renew = stmt(
          `UPDATE post_schedule SET lease_expires_at = ? WHERE id = ? AND ${fence}`,
        );
        return held.filter((h) => renew.run(now + leaseMs, h.postId, workerId, h.token).changes > 0).map((h) => h.postId);
      });
    },

    async recordPart(workerId, postId, token, index, part) {
      return immediate(
        () =>
          stmt(
            `UPDATE post_schedule SET published_parts = json_insert(published_parts, '$[#]', json(?)), updated_at = ?
              WHERE id = ? AND ${fence} AND json_array_length(published_parts) = ?`,
          ).run(publishedPartColumn(part), Date.now(), postId, workerId, token, index).changes > 0,
      );
    },

    async reconcile(workerId, ids) {
      const rows = (await read(() =>
        stmt(
          `SELECT id, status, worker_id, claim_token FROM post_schedule WHERE status = 'processing' AND worker_id = ?
           UNION
           SELECT id, status, worker_id, claim_token FROM post_schedule WHERE id IN (SELECT value FROM json_each(?))`,
        ).all(workerId, JSON.stringify(ids)),
      )) as { id: number; status: PostStatus; worker_id: string | null; claim_token: number }[];
      return rows.map((r): HeldPost => ({ id: r.id, status: r.status, workerId: r.worker_id, token: r.claim_token }));
    },

    async recoverExpired(maxAttempts: number) {
      return immediate(() => {
        const now = Date.now();
        const expired = stmt(
          `SELECT s.id, s.worker_id, s.attempts, s.attempts - s.attempts_base AS used, s.claim_token, s.locked_at, ch.on_unknown FROM post_schedule s
             LEFT JOIN channels ch ON ch.id = s.channel_id
            WHERE ${whereFrom('recover', 's.status')} AND s.lease_expires_at < ?`,
        ).all(now) as { id: number; worker_id: string | null; attempts: number; used: number; claim_token: number; locked_at: number | null; on_unknown: OnUnknown | null }[];
        const update = stmt(
          `UPDATE post_schedule SET status = ?, last_error = ?, unconfirmed = 1, worker_id = NULL, locked_at = NULL,
                  lease_expires_at = NULL, updated_at = ?
            WHERE id = ? AND status = 'processing' AND claim_token = ?`,
        );
        return expired.map((r): RecoveredPost => {
          const status = recoveredStatus(r.on_unknown, r.used, maxAttempts);
          const error = leaseExpiredMessage(r.worker_id, r.attempts, status === 'unknown');
          update.run(status, error, now, r.id, r.claim_token);
          stmt(SQL.attempt).run(r.id, r.attempts, r.worker_id, r.locked_at, now, 'expired', 'lease-expired', error, null, null);
          return { id: r.id, workerId: r.worker_id, attempts: r.attempts, status };
        });
      });
    },

    async requeue(ids: readonly number[] | 'allFailed') {
      const set = `SET status = '${TRANSITIONS.requeue.to}', run_at = ?, attempts_base = attempts, unconfirmed = 0, worker_id = NULL, locked_at = NULL,
                       lease_expires_at = NULL, updated_at = ?`;
      return immediate(() => {
        const now = Date.now();
        if (ids === 'allFailed') {
          return (
            db.prepare(`UPDATE post_schedule ${set} WHERE status = 'failed' RETURNING id`).all(now, now) as {
              id: number;
            }[]
          ).map((r) => r.id);
        }
        const stmt = db.prepare(`UPDATE post_schedule ${set} WHERE id = ? AND ${whereFrom('requeue')} RETURNING id`);
        return ids.flatMap((id) => (stmt.all(now, now, id) as { id: number }[]).map((r) => r.id));
      });
    },

    async confirmPublished(ids: readonly number[]) {
      return immediate(() => {
        const now = Date.now();
        const confirm = stmt(
          `UPDATE post_schedule SET status = '${TRANSITIONS.confirm.to}', published_at = ?, last_error = NULL, updated_at = ?
            WHERE id = ? AND ${whereFrom('confirm')} RETURNING id`,
        );
        return ids.flatMap((id) => (confirm.all(now, now, id) as { id: number }[]).map((r) => r.id));
      });
    },

    async cancel(id: number) {
      return immediate(() => {
        const row = db.prepare('SELECT status FROM post_schedule WHERE id = ?').get(id) as { status: PostStatus } | undefined;
        if (row === undefined) return { cancelled: false, status: null };
        const changes = db
          .prepare(
            `UPDATE post_schedule SET status = '${TRANSITIONS.cancel.to}', updated_at = ?
              WHERE id = ? AND ${whereFrom('cancel')}`,
          )
          .run(Date.now(), id).changes;
        return { cancelled: changes > 0, status: row.status };
      });
    },

    async tryLockCycle(host: string, ttlMs: number) {
      return immediate(() => {
        const now = Date.now();
        const held = stmt('SELECT holder, machine, pid, expires_at FROM cycle_locks WHERE host = ?').get(host) as
          | { holder: string; machine: string; pid: number; expires_at: number }
          | undefined;
        if (held !== undefined && held.holder !== holder.id && held.expires_at > now && !holderDead(held)) return false;
        stmt(
          `INSERT INTO cycle_locks (host, holder, machine, pid, locked_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (host) DO UPDATE SET holder = excluded.holder, machine = excluded.machine, pid = excluded.pid,
                                            locked_at = excluded.locked_at, expires_at = excluded.expires_at`,
        ).run(host, holder.id, holder.machine, holder.pid, now, now + ttlMs);
        return true;
      });
    },

    async renewCycleLock(host, ttlMs) {
      return immediate(() => stmt('UPDATE cycle_locks SET expires_at = ? WHERE host = ? AND holder = ?').run(Date.now() + ttlMs, host, holder.id).changes > 0);
    },

    async unlockCycle(host: string) {
      await immediate(() => stmt('DELETE FROM cycle_locks WHERE host = ? AND holder = ?').run(host, holder.id));
    },

    async acquireWorkerSlots(host, workers, cap, ttlMs) {
      if (workers.length === 0) return [];
      return immediate(() => {
        const now = Date.now();
        stmt('DELETE FROM worker_slots WHERE expires_at <= ?').run(now);
        const taken = new Set((stmt('SELECT slot FROM worker_slots').all() as { slot: number }[]).map((r) => r.slot));
        const free = Array.from({ length: cap }, (_, i) => i).filter((slot) => !taken.has(slot));
        const insert = stmt('INSERT INTO worker_slots (slot, holder, host, machine, pid, expires_at) VALUES (?, ?, ?, ?, ?, ?)');
        const got = workers.slice(0, free.length);
        got.forEach((worker, i) => insert.run(free[i], worker, host, holder.machine, holder.pid, now + ttlMs));
        return got;
      });
    },

    async renewWorkerSlots(workers, ttlMs) {
      if (workers.length === 0) return [];
      return immediate(() => {
        const renew = stmt('UPDATE worker_slots SET expires_at = ? WHERE holder = ?');
        const until = Date.now() + ttlMs;
        return workers.filter((w) => renew.run(until, w).changes > 0);
      });
    },

    async releaseWorkerSlots(workers) {
      if (workers.length === 0) return;
      await immediate(() => {
        const release = stmt('DELETE FROM worker_slots WHERE holder = ?');
        for (const w of workers) release.run(w);
      });
    },

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
        pausedChannels: rate.pausedChannels(),
        operatorPaused: (stmt('SELECT name, paused_at FROM channels WHERE paused_at IS NOT NULL AND removed_at IS NULL ORDER BY paused_at, name').all() as { name: string; paused_at: number }[]).map(
          (r) => ({ channel: r.name, since: new Date(r.paused_at) }),
        ),
        estimated: false,
      };
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
  };
  return store;
}
