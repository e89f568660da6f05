import postgres from 'postgres';
import { redactUrl } from '../../config.ts';
import { StoreError } from '../store.ts';
import { arrayTypes } from './arrays.ts';

/**
 * The driver's types, for every client of the store: int8 (ids, counts) as JavaScript
 * numbers, exact up to 2^53, far beyond any id here; the arrays the store uses, known
 * here rather than fetched from the server by each new connection (arrays.ts).
 */
export const typeOptions = {
  types: {
    int8: { to: 20, from: [20], serialize: (n: number) => String(n), parse: (raw: string) => Number(raw) },
    ...arrayTypes,
  },
  fetch_types: false,
};

export interface PostgresTarget {
  readonly url: string;
  /** the schema of post-scheduler's tables (search_path); post_scheduler unless the URL names one */
  readonly schema: string;
}

export interface PostgresOptions {
  /** the longest one round trip may take; then the connection is dropped and a new one made */
  readonly timeoutMs: number;
}

export const POOLER_HINT = 'post-scheduler needs a session of its own: connect to PostgreSQL directly or through a session-mode pool';

/** A client of one connection to `target`, on its schema, with its deadlines (see openPostgresConnection). */
function connectTo(target: PostgresTarget, options: PostgresOptions) {
  const serverTimeoutMs = Math.max(50, Math.floor(options.timeoutMs * 0.8));
  return postgres(target.url, {
    max: 1,
    ...typeOptions,
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
}

export type Sql = ReturnType<typeof connectTo>;
type Db = Pick<Sql, 'unsafe'>;

/** One PostgreSQL connection and the helpers every concern's statements run through. */
export interface PostgresConnection {
  readonly target: PostgresTarget;
  readonly options: PostgresOptions;
  /** the database (password redacted) and schema, as errors name them */
  readonly where: string;
  /** a new client of one connection, as this store's own is made */
  readonly connect: () => Sql;
  readonly connectError: (e: unknown) => StoreError;
  /** Runs `work` on a client within `ms`; past it, that client is dropped. */
  readonly within: <T>(db: Sql, work: (db: Sql) => Promise<T>, ms: number, onExpired: () => void) => Promise<T>;
  /** One statement on `db`, prepared once per connection and reused. */
  readonly run: <R>(db: Db, text: string, values?: unknown[]) => Promise<R[]>;
  /** One statement on this store's connection, within DB_TIMEOUT_MS. */
  readonly q: <R>(text: string, values?: unknown[]) => Promise<R[]>;
  /** a migration's transaction: no server-side timeouts, a deadline of its own */
  readonly migrationTx: <T>(fn: (db: Db) => Promise<T>) => Promise<T>;
  /** ends this store's connection */
  readonly end: () => Promise<void>;
}

/**
 * Opens one connection to `target` and checks it answers. Every round trip has a
 * client-side deadline: a database that goes silent (a partition, a frozen server) costs
 * `timeoutMs` and one error naming it.
 */
export async function openPostgresConnection(target: PostgresTarget, options: PostgresOptions): Promise<PostgresConnection> {
  const where = `${redactUrl(target.url)} (schema ${target.schema})`;
  /** A migration may rewrite a large table: its own, longer deadline. */
  const migrateTimeoutMs = Math.max(options.timeoutMs, 15 * 60_000);
  const connect = () => connectTo(target, options);
  let sql = connect();
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
  const end = async (): Promise<void> => {
    await sql.end({ timeout: 1 }).catch(() => undefined);
  };
  return { target, options, where, connect, connectError, within, run, q, migrationTx, end };
}
