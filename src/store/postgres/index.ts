import { DEFAULT_SCHEMA, redactUrl } from '../../config.ts';
import { foreignTablesMessage, newerSchemaMessage, StoreError, type Store } from '../store.ts';
import { makePostgresAlerts } from './alerts.ts';
import { makePostgresChannels } from './channels.ts';
import { openPostgresConnection, POOLER_HINT, type PostgresOptions, type PostgresTarget } from './connection.ts';
import { makePostgresCoordination } from './coordination.ts';
import { makePostgresFigures } from './figures.ts';
import { makePostgresHistory } from './history.ts';
import { POSTGRES_MIGRATIONS } from './migrations.ts';
import { makePostgresPosts } from './posts.ts';
import { makePostgresQueue } from './queue.ts';
import { makePostgresRate } from './rate.ts';

export type { PostgresOptions, PostgresTarget } from './connection.ts';

/** Every session uses the database's clock (now()) for run_at and leases. */
const MIGRATE_LOCK = "hashtext('post-scheduler:migrate')";

/** The tables of post-scheduler before it had a schema of its own (in `public`). */
const LEGACY_TABLES = ['schema_migrations', 'channels', 'post_details', 'post_schedule', 'cycles', 'worker_runs'];

/**
 * PostgreSQL store over one connection. Claims use FOR UPDATE SKIP LOCKED, so
 * workers on any number of hosts take disjoint sets of posts without waiting.
 * Every round trip has a client-side deadline: a database that goes silent (a
 * partition, a frozen server) costs `timeoutMs` and one error naming it.
 */
export async function openPostgresStore(target: PostgresTarget, options: PostgresOptions = { timeoutMs: 10_000 }): Promise<Store> {
  const c = await openPostgresConnection(target, options);
  const { where, connect, within, run, q, migrationTx } = c;

  /**
   * The schema version, and whether this connection is a session of its own: behind a
   * transaction-mode pooler (PgBouncer) two statements of one client may run on two
   * server sessions, and a second client may be handed this one's session.
   */
  const checkSession = async (): Promise<{ version: number | null; complete: boolean }> => {
    // `ours`: schema_migrations has the `name` column ours has (pg_attribute: the
    // information_schema view cost 2-4 ms here, at every cycle's start)
    const [first] = await q<{ pid: number; search_path: string; has: boolean; ours: boolean }>(
      `SELECT pg_backend_pid() AS pid, current_setting('search_path') AS search_path, to_regclass('schema_migrations') IS NOT NULL AS has,
              EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('schema_migrations') AND attname = 'name' AND attnum > 0 AND NOT attisdropped) AS ours`,
    );
    const other = connect();
    let otherPid: number | undefined;
    try {
      const rows = await within(other, (db) => db.unsafe('SELECT pg_backend_pid() AS pid') as Promise<{ pid: number }[]>, options.timeoutMs, () => undefined);
      otherPid = rows[0]?.pid;
    } catch (e) {
      await other.end({ timeout: 0 }).catch(() => undefined);
      throw e;
    }
    // the newest version, and whether every known migration is there (one merged later
    // than a newer one, on a database migrated in between, would otherwise be skipped):
    // read with the second look at this session when the table is ours, while the other
    // client says goodbye
    const known = POSTGRES_MIGRATIONS.map((m) => m.version);
    const withVersion = first?.has === true && first.ours;
    type Look = { pid: number; v: number | null; n: number };
    const look = (): Promise<Look[]> => q<Look>('SELECT pg_backend_pid() AS pid, NULL::int AS v, 0 AS n');
    // a version query the server refuses (behind a pooler, another session may not see the
    // table) must not hide what the checks below say: they run on a plain second look, then
    // it is thrown. A deadline or a lost connection (StoreError) ends the check at once.
    const second: Promise<{ rows: Look[]; refused: Error | null }> = withVersion
      ? q<Look>(
          'SELECT pg_backend_pid() AS pid, max(version) AS v, count(*) FILTER (WHERE version = ANY ($1::int[]))::int AS n FROM schema_migrations',
          [known],
        ).then(
          (rows) => ({ rows, refused: null }),
          async (e: unknown) => {
            if (e instanceof StoreError) throw e;
            return { rows: await look(), refused: e instanceof Error ? e : new Error(String(e)) };
          },
        )
      : look().then((rows) => ({ rows, refused: null }));
    const [
      {
        rows: [again],
        refused,
      },
    ] = await Promise.all([second, other.end({ timeout: 0 }).catch(() => undefined)]);
    if (first === undefined || again === undefined || first.pid !== again.pid || first.pid === otherPid) {
      throw new StoreError(`PostgreSQL at ${where} is behind a transaction-mode connection pooler: ${POOLER_HINT}`);
    }
    const path = first.search_path.split(',').map((p) => p.trim().replace(/^"|"$/g, ''));
    if (!path.includes(target.schema)) {
      throw new StoreError(`PostgreSQL at ${where} did not take search_path=${target.schema} (a pooler dropping startup parameters?): ${POOLER_HINT}`);
    }
    if (refused !== null) throw refused;
    if (!first.has) return { version: null, complete: false };
    if (!first.ours) {
      const tables = await q<{ tablename: string }>('SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename', [target.schema]);
      throw new StoreError(
        foreignTablesMessage(
          `schema ${target.schema} of ${redactUrl(target.url)}`,
          tables.map((t) => t.tablename),
          `give post-scheduler a schema of its own (leave ?schema= out for ${DEFAULT_SCHEMA}, or name another)`,
        ),
      );
    }
    return { version: again.v, complete: again.n === known.length };
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

  const store: Store = {
    ...makePostgresQueue(c),
    ...makePostgresPosts(c),
    ...makePostgresChannels(c),
    ...makePostgresCoordination(c),
    ...makePostgresRate(c),
    ...makePostgresAlerts(c),
    ...makePostgresHistory(c),
    ...makePostgresFigures(c),
    dialect: 'postgres',
    inProcess: false,
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
      await c.end();
    },
  };
  return store;
}
