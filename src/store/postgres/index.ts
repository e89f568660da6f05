import postgres from 'postgres';
import { redactUrl } from '../../config.ts';
import { TRANSITIONS, whereFrom } from '../../states.ts';
import type { NewChannel, NewPost, OnUnknown, Outcome, PostStatus, RecoveredPost, StatusReport } from '../../types.ts';
import {
  channelFromRow,
  claimedFromRow,
  cycleFromRow,
  postFromRow,
  type ChannelRow,
  type ClaimRow,
  type CycleRow,
  type PostRow,
  type UnknownRow,
  UNKNOWN_POSTS,
} from '../rows.ts';
import { leaseExpiredMessage, recoveredStatus, StoreError, type Exchange, type Store } from '../store.ts';
import { POSTGRES_MIGRATIONS } from './migrations.ts';

/** int8 (ids, counts) as JavaScript numbers: exact up to 2^53, far beyond any id here. */
const types = {
  int8: { to: 20, from: [20], serialize: (n: number) => String(n), parse: (raw: string) => Number(raw) },
};

/** Every session uses the database's clock (now()) for run_at and leases. */
const MIGRATE_LOCK = "hashtext('post-scheduler:migrate')";

/** Outcome kind -> the status its transition leads to. */
const OUTCOME_STATUS = {
  published: TRANSITIONS.publish.to,
  retry: TRANSITIONS.retryLater.to,
  failed: TRANSITIONS.fail.to,
  unknown: TRANSITIONS.holdUnknown.to,
  released: TRANSITIONS.release.to,
} as const;

export interface PostgresTarget {
  readonly url: string;
  readonly schema: string | null;
}

/**
 * PostgreSQL store over one connection. Claims use FOR UPDATE SKIP LOCKED, so
 * workers on any number of hosts take disjoint sets of posts without waiting.
 */
export async function openPostgresStore(target: PostgresTarget): Promise<Store> {
  const sql = postgres(target.url, {
    max: 1,
    types,
    connect_timeout: 10,
    prepare: true,
    onnotice: () => undefined,
    connection: {
      application_name: 'post-scheduler',
      // Plan each prepared statement once: re-planning the exchange (three CTEs) for
      // every call cost more than executing it.
      plan_cache_mode: 'force_generic_plan',
      ...(target.schema === null ? {} : { search_path: target.schema }),
    },
  });
  try {
    await sql.unsafe('SELECT 1');
  } catch (e) {
    await sql.end({ timeout: 0 }).catch(() => undefined);
    throw new StoreError(`cannot connect to PostgreSQL at ${redactUrl(target.url)}: ${(e as Error).message}`);
  }

  /** One statement, prepared once per connection and reused. */
  type Db = Pick<typeof sql, 'unsafe'>;
  const run = async <R>(db: Db, text: string, values: unknown[] = []): Promise<R[]> =>
    (await db.unsafe(text, values as never[], { prepare: true })) as unknown as R[];
  const q = <R>(text: string, values: unknown[] = []): Promise<R[]> => run<R>(sql, text, values);
  const tx = <T>(fn: (db: Db) => Promise<T>): Promise<T> => sql.begin(fn) as Promise<T>;

  /**
   * Outcomes and the next claim in one statement (one round trip, one commit).
   * - done: the outcomes, fenced: a row changes only while it is still processing under
   *   this worker and attempt; a post recovered and claimed by another worker is left alone.
   * - due / claimed: the claim. Locks the due rows picked, FOR UPDATE; rows another claim
   *   holds are skipped, not waited for. Posts `done` returns to pending are not seen by
   *   `due` (same snapshot), so they are never re-claimed by the same call.
   * Always returns at least one row: `applied` (comma-separated ids) on every row.
   */
  const EXCHANGE = `
    WITH v AS (
      SELECT id, attempt, kind, error, delay_ms, external_id, external_url, maybe_sent = 1 AS maybe_sent,
             CASE kind WHEN 'published' THEN '${OUTCOME_STATUS.published}'
                       WHEN 'retry' THEN '${OUTCOME_STATUS.retry}'
                       WHEN 'failed' THEN '${OUTCOME_STATUS.failed}'
                       WHEN 'unknown' THEN '${OUTCOME_STATUS.unknown}'
                       WHEN 'released' THEN '${OUTCOME_STATUS.released}' END AS status
        FROM unnest($2::bigint[], $3::int[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[], $11::int[])
             AS t(id, attempt, kind, error, delay_ms, external_id, external_url, maybe_sent)
    ), done AS (
      UPDATE post_schedule s
         SET status = v.status,
             run_at = CASE WHEN v.kind = 'retry' THEN now() + v.delay_ms * interval '1 millisecond' ELSE s.run_at END,
             published_at = CASE WHEN v.kind = 'published' THEN now() ELSE s.published_at END,
             external_id = COALESCE(v.external_id, s.external_id),
             external_url = COALESCE(v.external_url, s.external_url),
             last_error = CASE WHEN v.kind IN ('retry', 'failed', 'unknown') THEN v.error ELSE s.last_error END,
             unconfirmed = CASE WHEN v.kind = 'published' THEN false
                                WHEN v.kind = 'unknown' THEN true
                                ELSE s.unconfirmed OR v.maybe_sent END,
             worker_id = CASE WHEN v.status = 'pending' THEN NULL ELSE s.worker_id END,
             locked_at = CASE WHEN v.status = 'pending' THEN NULL ELSE s.locked_at END,
             attempts = CASE WHEN v.kind = 'released' THEN s.attempts - 1 ELSE s.attempts END,
             lease_expires_at = NULL,
             updated_at = now()
        FROM v
       WHERE s.id = v.id AND ${whereFrom('publish', 's.status')} AND s.worker_id = $1 AND s.attempts = v.attempt
      RETURNING s.id
    ), due AS (
      SELECT id FROM post_schedule
       WHERE ${whereFrom('claim')} AND run_at <= now()
       ORDER BY run_at, id
       LIMIT $9
       FOR UPDATE SKIP LOCKED
    ), claimed AS (
      UPDATE post_schedule s
         SET status = '${TRANSITIONS.claim.to}', worker_id = $1, locked_at = now(),
             lease_expires_at = now() + $10 * interval '1 millisecond',
             attempts = s.attempts + 1, updated_at = now()
        FROM due
       WHERE s.id = due.id
      RETURNING s.id, s.run_at, s.attempts, s.idempotency_key, s.unconfirmed, s.post_detail_id, s.channel_id
    )
    SELECT (SELECT COALESCE(string_agg(id::text, ','), '') FROM done) AS applied, c.*
      FROM (SELECT 1) AS one
      LEFT JOIN (
        SELECT s.id, s.run_at, s.attempts, s.idempotency_key, s.unconfirmed,
               -- a lookup by primary key per claimed row, never a scan of all content
               (SELECT d.text FROM post_details d WHERE d.id = s.post_detail_id) AS text,
               ch.id AS ch_id, ch.name AS ch_name, ch.platform AS ch_platform, ch.settings AS ch_settings,
               ch.enabled AS ch_enabled, ch.on_unknown AS ch_on_unknown, ch.created_at AS ch_created_at
          FROM claimed s
          LEFT JOIN channels ch ON ch.id = s.channel_id
      ) AS c ON true
     ORDER BY c.run_at, c.id`;

  const exchange = async (workerId: string, outcomes: readonly Outcome[], limit: number, leaseMs: number): Promise<Exchange> => {
    // one row even when nothing was claimed: then every column but `applied` is null
    const rows = await q<(ClaimRow | { [K in keyof ClaimRow]: null }) & { applied: string }>(EXCHANGE, [
      workerId,
      outcomes.map((o) => o.postId),
      outcomes.map((o) => o.attempt),
      outcomes.map((o) => o.kind),
      outcomes.map((o) => (o.kind === 'failed' || o.kind === 'retry' || o.kind === 'unknown' ? o.error : null)),
      outcomes.map((o) => (o.kind === 'retry' ? o.delayMs : 0)),
      outcomes.map((o) => (o.kind === 'published' ? o.externalId : null)),
      outcomes.map((o) => (o.kind === 'published' ? o.externalUrl : null)),
      Math.max(0, limit),
      leaseMs,
      outcomes.map((o) => (o.kind === 'retry' && o.unconfirmed ? 1 : 0)),
    ]);
    const applied = (rows[0]?.applied ?? '') === '' ? [] : (rows[0]?.applied ?? '').split(',').map(Number);
    return { applied, claimed: rows.filter((r): r is ClaimRow & { applied: string } => r.id !== null).map(claimedFromRow) };
  };

  /** worker slots (advisory locks) this connection holds */
  const heldSlots = new Set<number>();

  const store: Store = {
    dialect: 'postgres',

    async migrate() {
      // Every cycle starts with migrate(): when the schema is current (the usual case) one
      // plain query says so, and no transaction block is opened (see finishCycle).
      const latest = Math.max(...POSTGRES_MIGRATIONS.map((m) => m.version));
      const current = await q<{ v: number | null }>('SELECT max(version) AS v FROM schema_migrations').catch(() => null);
      if (current?.[0]?.v === latest) return;
      await tx(async (db) => {
        await db.unsafe(`SELECT pg_advisory_xact_lock(${MIGRATE_LOCK})`);
        if (target.schema !== null) await db.unsafe(`CREATE SCHEMA IF NOT EXISTS ${target.schema}`);
        await db.unsafe(`CREATE TABLE IF NOT EXISTS schema_migrations (
          version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
        const applied = new Set((await run<{ version: number }>(db, 'SELECT version FROM schema_migrations')).map((r) => r.version));
        for (const m of POSTGRES_MIGRATIONS) {
          if (applied.has(m.version)) continue;
          await db.unsafe(m.sql);
          await run(db, 'INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
        }
      });
    },

    async ping() {
      await sql.unsafe('SELECT 1');
    },

    async close() {
      await sql.end({ timeout: 1 }).catch(() => undefined);
    },

    async addChannel(channel: NewChannel) {
      const [row] = await q<ChannelRow>('INSERT INTO channels (name, platform, settings, on_unknown) VALUES ($1, $2, $3, $4) RETURNING *', [
        channel.name,
        channel.platform,
        channel.settings,
        channel.onUnknown,
      ]);
      if (row === undefined) throw new StoreError('insert into channels returned no row');
      return channelFromRow(row);
    },

    async listChannels() {
      return (await q<ChannelRow>('SELECT * FROM channels ORDER BY name')).map(channelFromRow);
    },

    async findChannel(name: string) {
      const [row] = await q<ChannelRow>('SELECT * FROM channels WHERE name = $1', [name]);
      return row === undefined ? null : channelFromRow(row);
    },

    async updateChannel(name, changes) {
      const [row] = await q<ChannelRow>(
        `UPDATE channels SET on_unknown = COALESCE($2, on_unknown), enabled = COALESCE($3::text::boolean, enabled)
          WHERE name = $1 RETURNING *`,
        [name, changes.onUnknown ?? null, changes.enabled === undefined ? null : String(changes.enabled)],
      );
      return row === undefined ? null : channelFromRow(row);
    },

    async schedulePosts(posts: readonly NewPost[]) {
      if (posts.length === 0) return [];
      const { randomUUID } = await import('node:crypto');
      // One statement for the whole batch: content rows first, then their schedule rows,
      // paired by ordinality so ids come back in input order.
      const rows = await q<{ id: number }>(
        `WITH input AS (
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::text[])
                    WITH ORDINALITY AS t(text, channel_id, run_at, idempotency_key, n)
         ), details AS (
           INSERT INTO post_details (text) SELECT text FROM input ORDER BY n RETURNING id
         ), numbered AS (
           SELECT id, row_number() OVER (ORDER BY id) AS n FROM details
         )
         INSERT INTO post_schedule (post_detail_id, channel_id, run_at, status, idempotency_key)
         SELECT numbered.id, input.channel_id, input.run_at, 'pending', input.idempotency_key
           FROM input JOIN numbered USING (n)
          ORDER BY input.n
         RETURNING id`,
        [
          posts.map((p) => p.text),
          posts.map((p) => p.channelId),
          posts.map((p) => p.runAt.toISOString()),
          posts.map(() => randomUUID()),
        ],
      );
      return rows.map((r) => r.id).sort((a, b) => a - b);
    },

    async getPost(id: number) {
      const [row] = await q<PostRow>(
        'SELECT s.*, d.text FROM post_schedule s LEFT JOIN post_details d ON d.id = s.post_detail_id WHERE s.id = $1',
        [id],
      );
      return row === undefined ? null : postFromRow(row);
    },

    async countDue() {
      const [row] = await q<{ n: number }>("SELECT count(*) AS n FROM post_schedule WHERE status = 'pending' AND run_at <= now()");
      return row?.n ?? 0;
    },

    async claim(workerId: string, limit: number, leaseMs: number) {
      return (await exchange(workerId, [], limit, leaseMs)).claimed;
    },

    async recordOutcomes(workerId: string, outcomes: readonly Outcome[]) {
      return (await exchange(workerId, outcomes, 0, 0)).applied;
    },

    exchange: (workerId, outcomes, limit, leaseMs) => exchange(workerId, outcomes, limit, leaseMs),

    async renewLeases(workerId, held, leaseMs) {
      if (held.length === 0) return [];
      const rows = await q<{ id: number }>(
        `UPDATE post_schedule s SET lease_expires_at = now() + $4 * interval '1 millisecond'
           FROM unnest($2::bigint[], $3::int[]) AS v(id, attempt)
          WHERE s.id = v.id AND s.status = 'processing' AND s.worker_id = $1 AND s.attempts = v.attempt
         RETURNING s.id`,
        [workerId, held.map((h) => h.postId), held.map((h) => h.attempt), leaseMs],
      );
      return rows.map((r) => r.id);
    },

    async recoverExpired(maxAttempts: number) {
      const rows = await q<{ id: number; worker_id: string | null; attempts: number; on_unknown: OnUnknown | null }>(
        `SELECT s.id, s.worker_id, s.attempts, ch.on_unknown FROM post_schedule s
           LEFT JOIN channels ch ON ch.id = s.channel_id
          WHERE ${whereFrom('recover', 's.status')} AND s.lease_expires_at < now()`,
      );
      if (rows.length === 0) return [];
      const recovered = rows.map((r): RecoveredPost => ({
        id: r.id,
        workerId: r.worker_id,
        attempts: r.attempts,
        status: recoveredStatus(r.on_unknown, r.attempts, maxAttempts),
      }));
      // Fenced by attempt and by the lease still being out, as read by this statement:
      // a post renewed or recorded meanwhile is left alone.
      const applied = await q<{ id: number }>(
        `UPDATE post_schedule s
            SET status = v.status, last_error = v.error, unconfirmed = true, worker_id = NULL, locked_at = NULL,
                lease_expires_at = NULL, updated_at = now()
           FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[]) AS v(id, status, error, attempts)
          WHERE s.id = v.id AND s.status = 'processing' AND s.attempts = v.attempts AND s.lease_expires_at < now()
         RETURNING s.id`,
        [
          recovered.map((r) => r.id),
          recovered.map((r) => r.status),
          recovered.map((r) => leaseExpiredMessage(r.workerId, r.attempts, r.status === 'unknown')),
          recovered.map((r) => r.attempts),
        ],
      );
      const ids = new Set(applied.map((r) => r.id));
      return recovered.filter((r) => ids.has(r.id));
    },

    async requeue(ids: readonly number[] | 'allFailed') {
      const set = `SET status = '${TRANSITIONS.requeue.to}', run_at = now(), attempts = 0, unconfirmed = false, worker_id = NULL,
                       locked_at = NULL, lease_expires_at = NULL, updated_at = now()`;
      const rows =
        ids === 'allFailed'
          ? await q<{ id: number }>(`UPDATE post_schedule ${set} WHERE status = 'failed' RETURNING id`)
          : await q<{ id: number }>(
              `UPDATE post_schedule ${set} WHERE id = ANY($1::bigint[]) AND ${whereFrom('requeue')} RETURNING id`,
              [ids],
            );
      return rows.map((r) => r.id).sort((a, b) => a - b);
    },

    async confirmPublished(ids: readonly number[]) {
      const rows = await q<{ id: number }>(
        `UPDATE post_schedule SET status = '${TRANSITIONS.confirm.to}', published_at = now(), last_error = NULL, updated_at = now()
          WHERE id = ANY($1::bigint[]) AND ${whereFrom('confirm')} RETURNING id`,
        [ids],
      );
      return rows.map((r) => r.id).sort((a, b) => a - b);
    },

    async cancel(id: number) {
      // One statement: `before` reads the status the update sees (same snapshot).
      const [row] = await q<{ status: PostStatus | null; cancelled: number }>(
        `WITH before AS (SELECT status FROM post_schedule WHERE id = $1),
              done AS (
                UPDATE post_schedule SET status = '${TRANSITIONS.cancel.to}', updated_at = now()
                 WHERE id = $1 AND ${whereFrom('cancel')} RETURNING id)
         SELECT (SELECT status FROM before) AS status, (SELECT count(*) FROM done) AS cancelled`,
        [id],
      );
      if (row?.status == null) return { cancelled: false, status: null };
      return { cancelled: row.cancelled > 0, status: row.status };
    },

    async tryLockCycle(host: string) {
      // A session advisory lock on this store's one connection: released by unlockCycle,
      // or by PostgreSQL the moment the dispatcher's connection ends (crash included).
      // Keyed by schema and host, so that schemas sharing a server do not collide.
      const [row] = await q<{ locked: boolean }>(
        "SELECT pg_try_advisory_lock(hashtext('post-scheduler:cycle:' || current_schema() || ':' || $1)) AS locked",
        [host],
      );
      return row?.locked === true;
    },

    async unlockCycle(host: string) {
      await q("SELECT pg_advisory_unlock(hashtext('post-scheduler:cycle:' || current_schema() || ':' || $1))", [host]);
    },

    async acquireWorkerSlots(_host, wanted, cap) {
      if (wanted <= 0) return 0;
      // Slot i is the session advisory lock (slot key, i): held by this store's one
      // connection, so a dispatcher that dies frees its slots at once. Slots are tried
      // in order and the scan stops at `wanted` (no ORDER BY: rows are pulled lazily).
      // Advisory locks are re-entrant in a session, so slots this one holds are skipped
      // (CASE fixes the order: the lock is only tried on the others).
      const rows = await q<{ slot: number }>(
        `SELECT slot FROM generate_series(0, $1::int - 1) AS slot
          WHERE CASE WHEN slot = ANY($3::int[]) THEN false
                     ELSE pg_try_advisory_lock(hashtext('post-scheduler:slot:' || current_schema()), slot) END
          LIMIT $2`,
        [cap, wanted, [...heldSlots]],
      );
      for (const r of rows) heldSlots.add(r.slot);
      return rows.length;
    },

    async releaseWorkerSlots() {
      if (heldSlots.size === 0) return;
      const slots = [...heldSlots];
      heldSlots.clear();
      await q(
        "SELECT pg_advisory_unlock(hashtext('post-scheduler:slot:' || current_schema()), slot) FROM unnest($1::int[]) AS slot",
        [slots],
      );
    },

    async startCycle(startedAt: Date, host: string) {
      const [row] = await q<{ id: number }>('INSERT INTO cycles (host, started_at) VALUES ($1, $2) RETURNING id', [host, startedAt]);
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

    async status(cycles: number): Promise<StatusReport> {
      const [counts] = await q<Record<string, number>>(
        `SELECT count(*) FILTER (WHERE status = 'pending' AND run_at <= now()) AS due,
                count(*) FILTER (WHERE status = 'pending' AND run_at > now()) AS later,
                count(*) FILTER (WHERE status = 'processing') AS processing,
                count(*) FILTER (WHERE status = 'published') AS published,
                count(*) FILTER (WHERE status = 'failed') AS failed,
                count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
                count(*) FILTER (WHERE status = 'unknown') AS unknown
           FROM post_schedule`,
      );
      const cycleRows = await q<CycleRow>('SELECT * FROM cycles ORDER BY id DESC LIMIT $1', [cycles]);
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
      };
    },
  };
  return store;
}
