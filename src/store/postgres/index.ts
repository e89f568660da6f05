import postgres from 'postgres';
import { DEFAULT_SCHEMA, redactUrl } from '../../config.ts';
import { TRANSITIONS, whereFrom } from '../../states.ts';
import { latenessReport } from '../lateness.ts';
import type { HeldPost, NewChannel, NewPost, OnUnknown, Outcome, PostStatus, RecoveredPost, StatusReport } from '../../types.ts';
import { holderDead, makeHolder } from '../holder.ts';
import {
  channelFromRow,
  claimedFromRow,
  CLAIM_COLUMNS,
  cycleFromRow,
  cyclesQuery,
  OUTCOME_STATUS,
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
import { POSTGRES_MIGRATIONS } from './migrations.ts';
import { makePostgresHistory } from './history.ts';
import { makePostgresAlerts } from './alerts.ts';
import { makePostgresManage } from './manage.ts';
import { makePostgresMetrics } from './metrics.ts';
import { makePostgresSizing } from './sizing.ts';
import { makePostgresRate } from './rate.ts';
import { attemptRecord } from '../list.ts';
import { makePostgresTune } from './tune.ts';

/** int8 (ids, counts) as JavaScript numbers: exact up to 2^53, far beyond any id here. */
const types = {
  int8: { to: 20, from: [20], serialize: (n: number) => String(n), parse: (raw: string) => Number(raw) },
};

/** Every session uses the database's clock (now()) for run_at and leases. */
const MIGRATE_LOCK = "hashtext('post-scheduler:migrate')";

/** The tables of post-scheduler before it had a schema of its own (in `public`). */
const LEGACY_TABLES = ['schema_migrations', 'channels', 'post_details', 'post_schedule', 'cycles', 'worker_runs'];

/** The NOTIFY channel of a change to the due posts (trigger of migration 12), payload the schema. */
const DUE_CHANNEL = 'post_scheduler_due';

/** How long watchDue waits before listening again after its connection was lost. */
const WATCH_RETRY_MS = 1_000;

/** Above this many rows (the planner's estimate), status estimates the final states' counts. */
const ESTIMATE_ABOVE = 200_000;

/** Rows of a finished post deleted by one prune statement. */

const PRUNE_BATCH = 5_000;

export interface PostgresTarget {
  readonly url: string;
  /** the schema of post-scheduler's tables (search_path); post_scheduler unless the URL names one */
  readonly schema: string;
}

export interface PostgresOptions {
  /** the longest one round trip may take; then the connection is dropped and a new one made */
  readonly timeoutMs: number;
}

const POOLER_HINT = 'post-scheduler needs a session of its own: connect to PostgreSQL directly or through a session-mode pool';

/**
 * PostgreSQL store over one connection. Claims use FOR UPDATE SKIP LOCKED, so
 * workers on any number of hosts take disjoint sets of posts without waiting.
 * Every round trip has a client-side deadline: a database that goes silent (a
 * partition, a frozen server) costs `timeoutMs` and one error naming it.
 */
export async function openPostgresStore(target: PostgresTarget, options: PostgresOptions = { timeoutMs: 10_000 }): Promise<Store> {
  const where = `${redactUrl(target.url)} (schema ${target.schema})`;
  const serverTimeoutMs = Math.max(50, Math.floor(options.timeoutMs * 0.8));
  /** A migration may rewrite a large table: its own, longer deadline. */
  const migrateTimeoutMs = Math.max(options.timeoutMs, 15 * 60_000);
  const connect = () =>
    postgres(target.url, {
      max: 1,
      types,
      connect_timeout: Math.max(1, Math.ceil(options.timeoutMs / 1000)),
      prepare: true,
      onnotice: () => undefined,
      connection: {
        application_name: 'post-scheduler',
        // Plan each prepared statement once: re-planning the exchange (three CTEs) for
        // every call cost more than executing it.
        plan_cache_mode: 'force_generic_plan',
        search_path: target.schema,
        // The server gives up a little before the client does, so that a statement the
        // client abandoned cannot commit later behind its back (migrate lifts these).
        statement_timeout: serverTimeoutMs,
        lock_timeout: serverTimeoutMs,
      },
    });
  let sql = connect();
  type Sql = typeof sql;
  const connectError = (e: unknown): StoreError => {
    const message = (e as Error).message;
    const hint = /unsupported startup parameter/i.test(message) ? ` (a connection pooler? ${POOLER_HINT})` : '';
    return new StoreError(`cannot connect to PostgreSQL at ${where}: ${message}${hint}`);
  };

  /**
   * Runs `work` on a client within `ms`. Past it, that client is dropped (its socket
   * destroyed, whatever it was waiting for): the server, which gives up earlier
   * (statement_timeout), has cancelled the statement by then unless it is itself gone.
   */
  const within = async <T>(db: Sql, work: (db: Sql) => Promise<T>, ms: number, onExpired: () => void): Promise<T> => {
    const running = work(db);
    running.catch(() => undefined);
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        onExpired();
        db.end({ timeout: 0 }).catch(() => undefined);
        reject(new StoreError(`PostgreSQL at ${where} did not answer within ${ms} ms (DB_TIMEOUT_MS)`));
      }, ms);
    });
    try {
      return await Promise.race([running, expired]);
    } finally {
      clearTimeout(timer);
    }
  };
  /** `work` on this store's connection; past the deadline the next call connects afresh. */
  const bounded = <T>(work: (db: Sql) => Promise<T>, ms = options.timeoutMs): Promise<T> => {
    const db = sql;
    return within(db, work, ms, () => {
      if (sql === db) sql = connect();
    });
  };

  try {
    await bounded((db) => db.unsafe('SELECT 1'));
  } catch (e) {
    await sql.end({ timeout: 0 }).catch(() => undefined);
    throw e instanceof StoreError ? e : connectError(e);
  }

  /** One statement, prepared once per connection and reused. */
  type Db = Pick<Sql, 'unsafe'>;
  const run = async <R>(db: Db, text: string, values: unknown[] = []): Promise<R[]> =>
    (await db.unsafe(text, values as never[], { prepare: true })) as unknown as R[];
  const q = <R>(text: string, values: unknown[] = []): Promise<R[]> => bounded((db) => run<R>(db, text, values));
  /** a migration's transaction: no server-side timeouts, a deadline of its own */
  const migrationTx = <T>(fn: (db: Db) => Promise<T>): Promise<T> =>
    bounded(
      (db) =>
        db.begin(async (t) => {
          await t.unsafe('SET LOCAL statement_timeout = 0');
          await t.unsafe('SET LOCAL lock_timeout = 0');
          return fn(t);
        }) as Promise<T>,
      migrateTimeoutMs,
    );
  const holder = makeHolder();

  /**
   * Outcomes and the next claim in one statement (one round trip, one commit).
   * - done: the outcomes, fenced by the claim token: a row changes only while it is still
   *   processing under this worker and claim; a post recovered and claimed by another
   *   worker is left alone. A `published` also lands on a post recovery took back
   *   (pending or unknown) if nobody claimed it since (publishLate).
   *   The claim skips the posts of these outcomes (a row changed by `claimed` would be
   *   silently skipped by `done`).
   * - due / claimed: the claim. Locks the due rows picked, FOR UPDATE; rows another claim
   *   holds are skipped, not waited for. Posts `done` returns to pending are not seen by
   *   `due` (same snapshot), so they are never re-claimed by the same call.
   * Always returns at least one row: `applied` (comma-separated ids) on every row.
   */
  const EXCHANGE = `
    WITH v AS (
      SELECT id, token, kind, error, delay_ms, external_id, external_url, maybe_sent = 1 AS maybe_sent, uncounted = 1 AS uncounted,
             attempt_outcome, reason,
             CASE kind WHEN 'published' THEN '${OUTCOME_STATUS.published}'
                       WHEN 'retry' THEN '${OUTCOME_STATUS.retry}'
                       WHEN 'failed' THEN '${OUTCOME_STATUS.failed}'
                       WHEN 'unknown' THEN '${OUTCOME_STATUS.unknown}'
                       WHEN 'released' THEN '${OUTCOME_STATUS.released}' END AS status
        FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[], $11::int[], $13::int[], $14::text[], $15::text[])
             AS t(id, token, kind, error, delay_ms, external_id, external_url, maybe_sent, uncounted, attempt_outcome, reason)
    ), before AS (
      -- the attempts as they were (the same snapshot as done): who claimed them, when
      SELECT id, attempts, worker_id, locked_at FROM post_schedule WHERE id = ANY($2::bigint[])
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
             attempts = CASE WHEN v.kind = 'released' OR v.uncounted THEN s.attempts - 1 ELSE s.attempts END,
             lease_expires_at = NULL,
             updated_at = now()
        FROM v
       WHERE s.id = v.id AND s.claim_token = v.token
         AND (${whereFrom('publish', 's.status')} AND s.worker_id = $1
              OR v.kind = 'published' AND ${whereFrom('publishLate', 's.status')})
      RETURNING s.id
    ), attempt AS (
      -- posts show: one row per attempt that ended, with its reason (a release is none: attempt_outcome NULL)
      INSERT INTO post_attempts (post_id, attempt, worker_id, started_at, finished_at, outcome, reason, error, external_id, external_url)
      SELECT v.id, b.attempts, b.worker_id, b.locked_at, now(), v.attempt_outcome, v.reason, v.error, v.external_id, v.external_url
        FROM done JOIN v ON v.id = done.id JOIN before b ON b.id = done.id
       WHERE v.attempt_outcome IS NOT NULL
    ), slot AS (
      -- the worker's GLOBAL_MAX_WORKERS slot ($12), extended as long as the leases taken
      UPDATE worker_slots SET expires_at = now() + $10 * interval '1 millisecond'
       WHERE $12::boolean AND $9 > 0 AND holder = $1 AND expires_at > now()
      RETURNING 1
    ), due AS (
      SELECT id FROM post_schedule
       WHERE ${whereFrom('claim')} AND run_at <= now() AND (NOT $12::boolean OR EXISTS (SELECT 1 FROM slot))
         -- never a post of a channel an operator paused (read once per statement)
         AND NOT (channel_id = ANY (ARRAY(SELECT id FROM channels WHERE paused_at IS NOT NULL)))
         -- never a post this call records an outcome for: the same snapshot still sees a
         -- post recovery put back as pending, and a claim would hide its late publish
         AND NOT (id = ANY($2::bigint[]))
       ORDER BY run_at, id
       LIMIT $9
       FOR UPDATE SKIP LOCKED
    ), claimed AS (
      UPDATE post_schedule s
         SET status = '${TRANSITIONS.claim.to}', worker_id = $1, locked_at = now(),
             lease_expires_at = now() + $10 * interval '1 millisecond',
             attempts = s.attempts + 1, claim_token = s.claim_token + 1, updated_at = now()
        FROM due
       WHERE s.id = due.id
      RETURNING s.id, s.run_at, s.scheduled_at, s.attempts, s.attempts_base, s.claim_token, s.idempotency_key, s.unconfirmed,
                s.published_parts, s.post_detail_id, s.channel_id
    )
    SELECT (SELECT COALESCE(string_agg(id::text, ','), '') FROM done) AS applied, c.*
      FROM (SELECT 1) AS one
      LEFT JOIN (
        SELECT ${CLAIM_COLUMNS},
               -- a lookup by primary key per claimed row, never a scan of all content
               (SELECT d.text FROM post_details d WHERE d.id = s.post_detail_id) AS text,
               (SELECT d.parts FROM post_details d WHERE d.id = s.post_detail_id) AS parts
          FROM claimed s
          LEFT JOIN channels ch ON ch.id = s.channel_id
      ) AS c ON true
     ORDER BY c.run_at, c.id`;

  const exchange = async (workerId: string, outcomes: readonly Outcome[], limit: number, leaseMs: number, claim: ClaimOptions = {}): Promise<Exchange> => {
    // one row even when nothing was claimed: then every column but `applied` is null
    const rows = await q<(ClaimRow | { [K in keyof ClaimRow]: null }) & { applied: string }>(EXCHANGE, [
      workerId,
      outcomes.map((o) => o.postId),
      outcomes.map((o) => o.token),
      outcomes.map((o) => o.kind),
      outcomes.map((o) => (o.kind === 'failed' || o.kind === 'retry' || o.kind === 'unknown' ? o.error : null)),
      outcomes.map((o) => (o.kind === 'retry' ? o.delayMs : 0)),
      outcomes.map((o) => (o.kind === 'published' ? o.externalId : null)),
      outcomes.map((o) => (o.kind === 'published' ? o.externalUrl : null)),
      Math.max(0, limit),
      leaseMs,
      outcomes.map((o) => (o.kind === 'retry' && o.unconfirmed ? 1 : 0)),
      claim.slot === true,
      outcomes.map((o) => (o.kind === 'retry' && o.uncounted === true ? 1 : 0)),
      outcomes.map((o) => attemptRecord(o)?.outcome ?? null),
      outcomes.map((o) => attemptRecord(o)?.reason ?? null),
    ]);
    const applied = (rows[0]?.applied ?? '') === '' ? [] : (rows[0]?.applied ?? '').split(',').map(Number);
    return { applied, claimed: rows.filter((r): r is ClaimRow & { applied: string } => r.id !== null).map(claimedFromRow) };
  };

  /**
   * The schema version, and whether this connection is a session of its own: behind a
   * transaction-mode pooler (PgBouncer) two statements of one client may run on two
   * server sessions, and a second client may be handed this one's session.
   */
  const checkSession = async (): Promise<{ version: number | null; complete: boolean }> => {
    const [first] = await q<{ pid: number; search_path: string; has: boolean }>(
      "SELECT pg_backend_pid() AS pid, current_setting('search_path') AS search_path, to_regclass('schema_migrations') IS NOT NULL AS has",
    );
    const other = connect();
    let otherPid: number | undefined;
    try {
      const rows = await within(other, (db) => db.unsafe('SELECT pg_backend_pid() AS pid') as Promise<{ pid: number }[]>, options.timeoutMs, () => undefined);
      otherPid = rows[0]?.pid;
    } finally {
      await other.end({ timeout: 0 }).catch(() => undefined);
    }
    const [again] = await q<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    if (first === undefined || again === undefined || first.pid !== again.pid || first.pid === otherPid) {
      throw new StoreError(`PostgreSQL at ${where} is behind a transaction-mode connection pooler: ${POOLER_HINT}`);
    }
    const path = first.search_path.split(',').map((p) => p.trim().replace(/^"|"$/g, ''));
    if (!path.includes(target.schema)) {
      throw new StoreError(`PostgreSQL at ${where} did not take search_path=${target.schema} (a pooler dropping startup parameters?): ${POOLER_HINT}`);
    }
    if (!first.has) return { version: null, complete: false };
    const [mine] = await q<{ n: number }>(
      "SELECT count(*)::int AS n FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'schema_migrations' AND column_name = 'name'",
    );
    if ((mine?.n ?? 0) === 0) {
      const tables = await q<{ tablename: string }>('SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename', [target.schema]);
      throw new StoreError(
        foreignTablesMessage(
          `schema ${target.schema} of ${redactUrl(target.url)}`,
          tables.map((t) => t.tablename),
          `give post-scheduler a schema of its own (leave ?schema= out for ${DEFAULT_SCHEMA}, or name another)`,
        ),
      );
    }
    // the newest version, and whether every known migration is there (one merged later
    // than a newer one, on a database migrated in between, would otherwise be skipped)
    const known = POSTGRES_MIGRATIONS.map((m) => m.version);
    const [row] = await q<{ v: number | null; n: number }>('SELECT max(version) AS v, count(*) FILTER (WHERE version = ANY ($1::int[]))::int AS n FROM schema_migrations', [known]);
    return { version: row?.v ?? null, complete: (row?.n ?? 0) === known.length };
  };

  /** Tables of an older post-scheduler in `public` (before it had a schema of its own). */
  const legacyTables = async (): Promise<string[]> => {
    if (target.schema !== DEFAULT_SCHEMA) return [];
    // ours: public.schema_migrations with a `name` column and our first migration, and
    // public.post_schedule; any error here is a real one (never read as "none")
    const [found] = await q<{ ours: boolean }>(
      `SELECT to_regclass('public.post_schedule') IS NOT NULL AND EXISTS (
                SELECT 1 FROM information_schema.columns
                 WHERE table_schema = 'public' AND table_name = 'schema_migrations' AND column_name = 'name') AS ours`,
    );
    if (found?.ours !== true) return [];
    const [first] = await q<{ n: number }>("SELECT count(*)::int AS n FROM public.schema_migrations WHERE version = 1 AND name = 'initial'");
    if ((first?.n ?? 0) === 0) return [];
    const rows = await q<{ tablename: string }>("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename = ANY($1::text[])", [
      LEGACY_TABLES,
    ]);
    return rows.map((r) => r.tablename);
  };

  const rate = makePostgresRate(q);
  const alerts = makePostgresAlerts(q);
  const store: Store = {
    ...makePostgresManage(q),
    ...makePostgresMetrics(q),
    ...makePostgresTune(q),
    ...makePostgresHistory(q),
    ...makePostgresSizing(q),
    takeRateSlot: rate.takeRateSlot,
    unalertedOutcomes: alerts.unalertedOutcomes,
    scheduleAlerts: alerts.scheduleAlerts,
    settleRateSlot: rate.settleRateSlot,
    acquireSendSlot: rate.acquireSendSlot,
    releaseSendSlot: rate.releaseSendSlot,
    pauseChannel: rate.pauseChannel,
    dialect: 'postgres',
    created: false,

    async migrate() {
      // Every cycle starts with migrate(): when the schema is current (the usual case) a
      // few plain queries say so, and no transaction block is opened (see finishCycle).
      const latest = Math.max(...POSTGRES_MIGRATIONS.map((m) => m.version));
      const { version, complete } = await checkSession();
      if (version !== null && version > latest) throw new StoreError(newerSchemaMessage(version, latest, where));
      if (version === latest && complete) return;
      const legacy = version === null ? await legacyTables() : [];
      if (version === null && legacy.length === 0) {
        // a schema that is some application's (say ?schema=public): never mix our tables into it
        const foreign = await q<{ tablename: string }>('SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename', [target.schema]);
        if (foreign.length > 0) {
          throw new StoreError(
            foreignTablesMessage(
              `schema ${target.schema} of ${redactUrl(target.url)}`,
              foreign.map((t) => t.tablename),
              `give post-scheduler a schema of its own (leave ?schema= out for ${DEFAULT_SCHEMA}, or name another)`,
            ),
          );
        }
      }
      await migrationTx(async (db) => {
        await db.unsafe(`SELECT pg_advisory_xact_lock(${MIGRATE_LOCK})`);
        await db.unsafe(`CREATE SCHEMA IF NOT EXISTS ${target.schema}`);
        // An installation from before the schema of its own: its tables move here, data and all.
        const [moved] = await run<{ has: boolean }>(db, "SELECT to_regclass('schema_migrations') IS NOT NULL AS has");
        if (moved?.has !== true) {
          for (const table of legacy) await db.unsafe(`ALTER TABLE public.${table} SET SCHEMA ${target.schema}`);
        }
        await db.unsafe(`CREATE TABLE IF NOT EXISTS schema_migrations (
          version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
        const applied = new Set((await run<{ version: number }>(db, 'SELECT version FROM schema_migrations')).map((r) => r.version));
        const newest = Math.max(0, ...applied);
        if (newest > latest) throw new StoreError(newerSchemaMessage(newest, latest, where));
        for (const m of POSTGRES_MIGRATIONS) {
          if (applied.has(m.version)) continue;
          await db.unsafe(m.sql);
          await run(db, 'INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
        }
      });
    },

    async connections() {
      const [row] = await q<{ max: number; used: number }>(
        `SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int AS max,
                (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int AS used`,
      );
      return row ?? null;
    },

    async ping() {
      await q('SELECT 1');
    },

    async close() {
      await sql.end({ timeout: 1 }).catch(() => undefined);
    },

    async addChannel(channel: NewChannel) {
      const [row] = await q<ChannelRow>(
        'INSERT INTO channels (name, platform, settings, on_unknown, credentials) VALUES ($1, $2, $3, $4, $5) RETURNING *',
        [channel.name, channel.platform, channel.settings, channel.onUnknown, channel.credentials ?? null],
      );
      if (row === undefined) throw new StoreError('insert into channels returned no row');
      return channelFromRow(row);
    },

    async listChannels() {
      return (await q<ChannelRow>('SELECT * FROM channels WHERE removed_at IS NULL ORDER BY name')).map(channelFromRow);
    },

    async findChannel(name: string) {
      const [row] = await q<ChannelRow>('SELECT * FROM channels WHERE name = $1 AND removed_at IS NULL', [name]);
      return row === undefined ? null : channelFromRow(row);
    },

    async updateChannel(name, changes) {
      const [row] = await q<ChannelRow>(
        `UPDATE channels SET on_unknown = COALESCE($2, on_unknown), enabled = COALESCE($3::text::boolean, enabled)
          WHERE name = $1 AND removed_at IS NULL RETURNING *`,
        [name, changes.onUnknown ?? null, changes.enabled === undefined ? null : String(changes.enabled)],
      );
      return row === undefined ? null : channelFromRow(row);
    },

    async replaceSettings(channelId, settings) {
      return (await q('UPDATE channels SET settings = $2 WHERE id = $1 RETURNING id', [channelId, settings])).length > 0;
    },

    async saveCredentials(channelId, sealed, expected) {
      const rows =
        expected === undefined
          ? await q('UPDATE channels SET credentials = $2, attention = NULL WHERE id = $1 RETURNING id', [channelId, sealed])
          : await q('UPDATE channels SET credentials = $2 WHERE id = $1 AND credentials IS NOT DISTINCT FROM $3 RETURNING id', [channelId, sealed, expected]);
      return rows.length > 0;
    },

    async setAttention(channelId, reason) {
      await q('UPDATE channels SET attention = $2 WHERE id = $1 AND attention IS DISTINCT FROM $2', [channelId, reason]);
    },

    async schedulePosts(posts: readonly NewPost[]) {
      if (posts.length === 0) return [];
      const { randomUUID } = await import('node:crypto');
      // One statement for the whole batch: content rows first, then their schedule rows,
      // paired by ordinality so ids come back in input order.
      const rows = await q<{ id: number }>(
        `WITH input AS (
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::text[], $5::jsonb[])
                    WITH ORDINALITY AS t(text, channel_id, run_at, idempotency_key, parts, n)
         ), details AS (
           INSERT INTO post_details (text, parts) SELECT text, parts FROM input ORDER BY n RETURNING id
         ), numbered AS (
           SELECT id, row_number() OVER (ORDER BY id) AS n FROM details
         )
         INSERT INTO post_schedule (post_detail_id, channel_id, run_at, scheduled_at, status, idempotency_key)
         SELECT numbered.id, input.channel_id, input.run_at, input.run_at, 'pending', input.idempotency_key
           FROM input JOIN numbered USING (n)
          ORDER BY input.n
         RETURNING id`,
        [
          posts.map((p) => p.text),
          posts.map((p) => p.channelId),
          posts.map((p) => p.runAt.toISOString()),
          posts.map(() => randomUUID()),
          posts.map((p) => partsColumn(p)),
        ],
      );
      return rows.map((r) => r.id).sort((a, b) => a - b);
    },

    async getPost(id: number) {
      const [row] = await q<PostRow>(
        `SELECT s.*, d.text, d.parts, ch.name AS channel_name FROM post_schedule s LEFT JOIN post_details d ON d.id = s.post_detail_id
          LEFT JOIN channels ch ON ch.id = s.channel_id WHERE s.id = $1`,
        [id],
      );
      return row === undefined ? null : postFromRow(row);
    },

    async countDue(aheadMs = 0) {
      const [row] = await q<{ n: number }>(
        `SELECT count(*) AS n FROM post_schedule WHERE status = 'pending' AND run_at <= now() + $1 * interval '1 millisecond'
          AND NOT (channel_id = ANY (ARRAY(SELECT id FROM channels WHERE paused_at IS NOT NULL)))`,
        [aheadMs],
      );
      return row?.n ?? 0;
    },

    async nextDue(after?: Date) {
      // in_ms on the database's clock: the daemon never compares run_at to its host's
      const [row] = await q<{ run_at: Date; in_ms: number }>(
        `SELECT run_at, (extract(epoch FROM run_at - now()) * 1000)::float8 AS in_ms
           FROM post_schedule WHERE status = 'pending' AND ($1::timestamptz IS NULL OR run_at > $1::timestamptz)
            AND NOT (channel_id = ANY (ARRAY(SELECT id FROM channels WHERE paused_at IS NOT NULL)))
          ORDER BY run_at LIMIT 1`,
        [after?.toISOString() ?? null],
      );
      return row === undefined ? null : { runAt: row.run_at, inMs: Math.round(row.in_ms) };
    },

    async watchDue(onChange: () => void) {
      // A connection of its own, LISTENing; the trigger of migration 12 names the schema
      // in its payload (a database may hold several). A lost connection is opened again
      // every second until it listens again; then onChange, as notifications may be lost.
      let closed = false;
      let current: Sql | null = null;
      let retry: NodeJS.Timeout | undefined;
      const open = async (): Promise<void> => {
        // onnotify: an option of postgres.js (what its own listen() uses) its types leave out
        const notify = { onnotify: (_channel: string, payload: string) => payload === target.schema && onChange() };
        const listener: Sql = postgres(target.url, {
          ...(notify as object),
          types,
          max: 1,
          idle_timeout: 0,
          max_lifetime: null,
          connect_timeout: Math.max(1, Math.ceil(options.timeoutMs / 1000)),
          onnotice: () => undefined,
          onclose: () => {
            if (closed || current !== listener) return;
            current = null;
            listener.end({ timeout: 0 }).catch(() => undefined);
            reopen();
          },
          connection: { application_name: 'post-scheduler', search_path: target.schema },
        });
        try {
          await within(listener, (db) => db.unsafe(`LISTEN ${DUE_CHANNEL}`), options.timeoutMs, () => undefined);
        } catch (e) {
          await listener.end({ timeout: 0 }).catch(() => undefined);
          throw e instanceof StoreError ? e : connectError(e);
        }
        if (closed) {
          await listener.end({ timeout: 0 }).catch(() => undefined);
          return;
        }
        current = listener;
        onChange();
      };
      const reopen = (): void => {
        retry = setTimeout(() => {
          open().catch(() => {
            if (!closed) reopen();
          });
        }, WATCH_RETRY_MS);
      };
      await open();
      return {
        async close() {
          closed = true;
          clearTimeout(retry);
          const listener = current;
          current = null;
          await listener?.end({ timeout: 1 }).catch(() => undefined);
        },
      };
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
      const rows = await q<{ id: number }>(
        `UPDATE post_schedule s SET lease_expires_at = now() + $4 * interval '1 millisecond'
           FROM unnest($2::bigint[], $3::bigint[]) AS v(id, token)
          WHERE s.id = v.id AND s.status = 'processing' AND s.worker_id = $1 AND s.claim_token = v.token
         RETURNING s.id`,
        [workerId, held.map((h) => h.postId), held.map((h) => h.token), leaseMs],
      );
      return rows.map((r) => r.id);
    },

    async recordPart(workerId, postId, token, index, part) {
      const rows = await q<{ id: number }>(
        `UPDATE post_schedule SET published_parts = published_parts || jsonb_build_array($5::text::jsonb), updated_at = now()
          WHERE id = $1 AND status = 'processing' AND worker_id = $2 AND claim_token = $3 AND jsonb_array_length(published_parts) = $4
         RETURNING id`,
        [postId, workerId, token, index, publishedPartColumn(part)],
      );
      return rows.length > 0;
    },

    async reconcile(workerId, ids) {
      const rows = await q<{ id: number; status: PostStatus; worker_id: string | null; claim_token: number }>(
        `SELECT id, status, worker_id, claim_token FROM post_schedule WHERE status = 'processing' AND worker_id = $1
         UNION
         SELECT id, status, worker_id, claim_token FROM post_schedule WHERE id = ANY($2::bigint[])`,
        [workerId, ids],
      );
      return rows.map((r): HeldPost => ({ id: r.id, status: r.status, workerId: r.worker_id, token: r.claim_token }));
    },

    async recoverExpired(maxAttempts: number) {
      const rows = await q<{ id: number; worker_id: string | null; attempts: number; used: number; claim_token: number; locked_at: Date | null; on_unknown: OnUnknown | null }>(
        `SELECT s.id, s.worker_id, s.attempts, s.attempts - s.attempts_base AS used, s.claim_token, s.locked_at, ch.on_unknown FROM post_schedule s
           LEFT JOIN channels ch ON ch.id = s.channel_id
          WHERE ${whereFrom('recover', 's.status')} AND s.lease_expires_at < now()`,
      );
      if (rows.length === 0) return [];
      const recovered = rows.map((r): RecoveredPost => ({
        id: r.id,
        workerId: r.worker_id,
        attempts: r.attempts,
        status: recoveredStatus(r.on_unknown, r.used, maxAttempts),
      }));
      const tokens = new Map(rows.map((r) => [r.id, r.claim_token]));
      const started = new Map(rows.map((r) => [r.id, r.locked_at]));
      // Fenced by the claim token and by the lease still being out, as read by this
      // statement: a post renewed or recorded meanwhile is left alone.
      const applied = await q<{ id: number }>(
        `WITH v AS (
           SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::timestamptz[], $7::int[])
                    AS v(id, status, error, token, worker_id, locked_at, attempts)
         ), done AS (
           UPDATE post_schedule s
              SET status = v.status, last_error = v.error, unconfirmed = true, worker_id = NULL, locked_at = NULL,
                  lease_expires_at = NULL, updated_at = now()
             FROM v
            WHERE s.id = v.id AND s.status = 'processing' AND s.claim_token = v.token AND s.lease_expires_at < now()
           RETURNING s.id
         ), attempt AS (
           INSERT INTO post_attempts (post_id, attempt, worker_id, started_at, finished_at, outcome, reason, error)
           SELECT v.id, v.attempts, v.worker_id, v.locked_at, now(), 'expired', 'lease-expired', v.error FROM done JOIN v ON v.id = done.id
         )
         SELECT id FROM done`,
        [
          recovered.map((r) => r.id),
          recovered.map((r) => r.status),
          recovered.map((r) => leaseExpiredMessage(r.workerId, r.attempts, r.status === 'unknown')),
          recovered.map((r) => tokens.get(r.id) ?? 0),
          recovered.map((r) => r.workerId),
          recovered.map((r) => started.get(r.id)?.toISOString() ?? null),
          recovered.map((r) => r.attempts),
        ],
      );
      const ids = new Set(applied.map((r) => r.id));
      return recovered.filter((r) => ids.has(r.id));
    },

    async requeue(ids: readonly number[] | 'allFailed') {
      const set = `SET status = '${TRANSITIONS.requeue.to}', run_at = now(), attempts_base = attempts, unconfirmed = false, worker_id = NULL,
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

    async tryLockCycle(host, ttlMs) {
      // Taken when free, expired, or already ours; in one statement, so two dispatchers
      // racing for it cannot both win.
      const take = `INSERT INTO cycle_locks (host, holder, machine, pid, locked_at, expires_at)
                    VALUES ($1, $2, $3, $4, now(), now() + $5 * interval '1 millisecond')
                    ON CONFLICT (host) DO UPDATE
                      SET holder = excluded.holder, machine = excluded.machine, pid = excluded.pid,
                          locked_at = now(), expires_at = excluded.expires_at
                    WHERE cycle_locks.expires_at <= now() OR cycle_locks.holder = excluded.holder OR cycle_locks.holder = $6
                    RETURNING holder`;
      const values = [host, holder.id, holder.machine, holder.pid, ttlMs];
      if ((await q(take, [...values, holder.id])).length > 0) return true;
      // Held: by a process of this machine that died (free at once), or by a live one.
      const [row] = await q<{ holder: string; machine: string; pid: number }>('SELECT holder, machine, pid FROM cycle_locks WHERE host = $1', [host]);
      if (row === undefined || !holderDead(row)) return false;
      return (await q(take, [...values, row.holder])).length > 0;
    },

    async renewCycleLock(host, ttlMs) {
      const rows = await q(
        "UPDATE cycle_locks SET expires_at = now() + $3 * interval '1 millisecond' WHERE host = $1 AND holder = $2 RETURNING 1",
        [host, holder.id, ttlMs],
      );
      return rows.length > 0;
    },

    async unlockCycle(host) {
      await q('DELETE FROM cycle_locks WHERE host = $1 AND holder = $2', [host, holder.id]);
    },

    async acquireWorkerSlots(host, workers, cap, ttlMs) {
      if (workers.length === 0) return [];
      await q('DELETE FROM worker_slots WHERE expires_at <= now()');
      // Free slots, lowest first, paired with the workers in order. Two dispatchers that
      // pick the same free slot collide on its key: one row wins, the other is skipped
      // (ON CONFLICT DO NOTHING), so the cap is never exceeded, at worst under-used.
      const rows = await q<{ holder: string }>(
        `WITH free AS (
           SELECT g AS slot, row_number() OVER (ORDER BY g) AS n FROM generate_series(0, $1::int - 1) AS g
            WHERE NOT EXISTS (SELECT 1 FROM worker_slots w WHERE w.slot = g)
         ), wanted AS (
           SELECT holder, n FROM unnest($2::text[]) WITH ORDINALITY AS t(holder, n)
         )
         INSERT INTO worker_slots (slot, holder, host, machine, pid, expires_at)
         SELECT free.slot, wanted.holder, $3, $4, $5, now() + $6 * interval '1 millisecond' FROM free JOIN wanted USING (n)
         ON CONFLICT DO NOTHING
         RETURNING holder`,
        [cap, workers, host, holder.machine, holder.pid, ttlMs],
      );
      const got = new Set(rows.map((r) => r.holder));
      return workers.filter((w) => got.has(w));
    },

    async renewWorkerSlots(workers, ttlMs) {
      if (workers.length === 0) return [];
      const rows = await q<{ holder: string }>(
        "UPDATE worker_slots SET expires_at = now() + $2 * interval '1 millisecond' WHERE holder = ANY($1::text[]) RETURNING holder",
        [workers, ttlMs],
      );
      return rows.map((r) => r.holder);
    },

    async releaseWorkerSlots(workers) {
      if (workers.length === 0) return;
      await q('DELETE FROM worker_slots WHERE holder = ANY($1::text[])', [workers]);
    },

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
        pausedChannels: await rate.pausedChannels(),
        operatorPaused: (await q<{ name: string; paused_at: Date }>('SELECT name, paused_at FROM channels WHERE paused_at IS NOT NULL AND removed_at IS NULL ORDER BY paused_at, name')).map((r) => ({
          channel: r.name,
          since: r.paused_at,
        })),
        estimated: estimate,
      };
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
  };
  return store;
}
