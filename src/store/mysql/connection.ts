import { AsyncLocalStorage } from 'node:async_hooks';
import mysql from 'mysql2/promise';
import { redactUrl } from '../../config.ts';
import { StoreError } from '../store.ts';

export interface MysqlTarget {
  /** mysql:// URL (a mariadb:// one is rewritten to it); may hold a password */
  readonly url: string;
  /** the database of post-scheduler's tables (the URL's path) */
  readonly database: string;
}

export interface MysqlOptions {
  /** the longest one round trip (or one transaction) may take; then the connection is dropped and a new one made */
  readonly timeoutMs: number;
}

/** What a statement that changes rows answers (mysql2's ResultSetHeader). */
export interface Changed {
  readonly affectedRows: number;
  readonly insertId: number;
}

/** Statements inside one transaction (see MysqlConnection.tx). */
export interface MysqlTx {
  /** a statement that returns rows; `?` placeholders, an array value expands to a list (`IN (?)`) */
  readonly q: <R>(text: string, values?: unknown[]) => Promise<R[]>;
  /** a statement that changes rows */
  readonly exec: (text: string, values?: unknown[]) => Promise<Changed>;
}

/** One MySQL/MariaDB connection and the helpers every concern's statements run through. */
export interface MysqlConnection extends MysqlTx {
  readonly target: MysqlTarget;
  readonly options: MysqlOptions;
  /** the database (password redacted), as errors name it */
  readonly where: string;
  /** the server, as read at connect: `MariaDB 10.11.6` or `MySQL 8.0.36` */
  readonly server: ServerVersion;
  /**
   * A transaction (READ COMMITTED, this store's connection) within DB_TIMEOUT_MS: committed
   * when `fn` returns, rolled back when it throws. A deadlock the server broke (1213) runs
   * `fn` again, up to three times: `fn` must be free of side effects outside the database.
   */
  readonly tx: <T>(fn: (t: MysqlTx) => Promise<T>) => Promise<T>;
  /** work on this store's connection with no server-side limits and a deadline of its own (migrations) */
  readonly session: <T>(fn: (t: MysqlTx) => Promise<T>) => Promise<T>;
  /** a new, separate connection with the same settings (another session, as another process would) */
  readonly connectOther: () => Promise<mysql.Connection>;
  readonly end: () => Promise<void>;
}

export interface ServerVersion {
  readonly product: 'MariaDB' | 'MySQL';
  readonly major: number;
  readonly minor: number;
  readonly patch: number;
  readonly text: string;
}

/** `10.11.19-MariaDB-0+deb12u1` or `8.0.36`: product and version. */
export function parseServerVersion(version: string): ServerVersion {
  // MariaDB 10+ may put `5.5.5-` in front for clients that expect a 5.x server
  const m = /^(?:5\.5\.5-(?=\d+\.\d+\.\d+-MariaDB))?(\d+)\.(\d+)\.(\d+)/i.exec(version);
  const [major, minor, patch] = m === null ? [0, 0, 0] : [Number(m[1]), Number(m[2]), Number(m[3])];
  const product = /mariadb/i.test(version) ? 'MariaDB' : 'MySQL';
  return { product, major, minor, patch, text: `${product} ${major}.${minor}.${patch}` };
}

/**
 * What the store needs of the server, or null when it has it: FOR UPDATE SKIP LOCKED
 * (MySQL 8.0.1, MariaDB 10.6) and JSON_TABLE (MySQL 8.0.4, MariaDB 10.6). Neither has
 * UPDATE ... RETURNING, so the store never uses it.
 */
export function unsupportedServer(v: ServerVersion): string | null {
  const at = (a: number, b: number, c: number) => v.major * 1_000_000 + v.minor * 1_000 + v.patch >= a * 1_000_000 + b * 1_000 + c;
  if (v.product === 'MariaDB' && !at(10, 6, 0)) return `MariaDB 10.6 or later (FOR UPDATE SKIP LOCKED, JSON_TABLE)`;
  if (v.product === 'MySQL' && !at(8, 0, 4)) return `MySQL 8.0.4 or later (FOR UPDATE SKIP LOCKED, JSON_TABLE)`;
  return null;
}

/**
 * mysql2 hands DATETIME as Date (UTC: the session's time_zone is +00:00), BIGINT as a
 * number, DECIMAL (what SUM() answers) as a number, and TINYINT(1) (BOOLEAN) as a boolean.
 */
const typeCast: mysql.TypeCast = (field, next) => {
  if (field.type === 'TINY' && field.length === 1) {
    const value = field.string();
    return value === null ? null : value === '1';
  }
  return next();
};

/** One connection to `target`, in UTC, READ COMMITTED, utf8mb4. */
async function connectTo(target: MysqlTarget, options: MysqlOptions): Promise<mysql.Connection> {
  /** with `bare`, the server without a database (to create ours) */
  const settings = (bare = false): mysql.ConnectionOptions => ({
    uri: bare ? withoutDatabase(target.url) : target.url,
    charset: 'UTF8MB4_BIN',
    timezone: 'Z',
    dateStrings: false,
    supportBigNumbers: true,
    bigNumberStrings: false,
    decimalNumbers: true,
    typeCast,
    connectTimeout: Math.max(1000, options.timeoutMs),
    multipleStatements: false,
  });
  let conn: mysql.Connection;
  try {
    conn = await mysql.createConnection(settings());
  } catch (e) {
    if ((e as { errno?: number }).errno !== UNKNOWN_DATABASE) throw e;
    // a database that is not there yet is made, as PostgreSQL's schema is (it needs the CREATE privilege)
    const first = await mysql.createConnection(settings(true));
    try {
      await first.query(`CREATE DATABASE IF NOT EXISTS \`${target.database}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
    } finally {
      first.destroy();
    }
    conn = await mysql.createConnection(settings());
  }
  // the database's clock in UTC for every DATETIME; strict (a value that does not fit is an error)
  await conn.query("SET time_zone = '+00:00', sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')");
  // no gap locks: claims skip what others hold rather than wait for ranges
  await conn.query('SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED');
  await setServerLimits(conn, options.timeoutMs);
  return conn;
}

const UNKNOWN_DATABASE = 1049;

/**
 * The server gives up a little before the client does, so that a statement the client
 * abandoned cannot commit later behind its back: lock waits (both servers; whole seconds,
 * at least 1, so with DB_TIMEOUT_MS under 1250 a lock wait may outlast the client) and, on
 * MariaDB, any statement (max_statement_time). MySQL 8 has no such variable (its
 * max_execution_time covers SELECT only) and refuses a SET that names one, so it is sent
 * to MariaDB alone. Migrations lift these (session()).
 */
async function setServerLimits(conn: mysql.Connection, timeoutMs: number): Promise<void> {
  const seconds = Math.max(0.05, (timeoutMs * 0.8) / 1000);
  const lockWait = Math.max(1, Math.floor(seconds));
  if (isMariaDb(conn)) await conn.query('SET SESSION innodb_lock_wait_timeout = ?, SESSION max_statement_time = ?', [lockWait, seconds]);
  else await conn.query('SET SESSION innodb_lock_wait_timeout = ?', [lockWait]);
}

/** The server's product, from the version its handshake gave (mysql2 keeps it). */
function isMariaDb(conn: mysql.Connection): boolean {
  const version = (conn as unknown as { connection?: { serverVersion?: unknown } }).connection?.serverVersion;
  return typeof version === 'string' && /mariadb/i.test(version);
}

const DEADLOCK = 1213;

/**
 * Opens one connection to `target`, checks the server's version and the database, and
 * returns the helpers. Every round trip has a client-side deadline: a database that goes
 * silent costs `timeoutMs` and one error naming it, and the next call connects afresh.
 */
export async function openMysqlConnection(target: MysqlTarget, options: MysqlOptions): Promise<MysqlConnection> {
  const where = redactUrl(target.url);
  const migrateTimeoutMs = Math.max(options.timeoutMs, 15 * 60_000);
  const connectError = (e: unknown): StoreError => new StoreError(`cannot connect to MySQL at ${where}: ${(e as Error).message}`);

  let current: Promise<mysql.Connection> | null = null;
  const connection = (): Promise<mysql.Connection> => {
    if (current === null) {
      const made: Promise<mysql.Connection> = connectTo(target, options).then(
        (conn) => {
          // a connection the server or the network closed (a restart, wait_timeout, KILL)
          // is made anew by the next call, rather than fail it
          const lost = () => {
            if (current === made) current = null;
          };
          conn.on('error', lost);
          conn.on('end', lost);
          return conn;
        },
        (e: unknown) => {
          if (current === made) current = null;
          throw connectError(e);
        },
      );
      current = made;
    }
    return current;
  };
  /**
   * Drops the connection `made` (its socket destroyed, whatever it was waiting for, or as
   * soon as it is made when it is still connecting); the next call connects afresh.
   */
  const drop = (made: Promise<mysql.Connection>): void => {
    if (current === made) current = null;
    made.then(
      (conn) => conn.destroy(),
      () => undefined,
    );
  };

  /**
   * One caller at a time on the connection, in call order: a transaction's statements
   * must not interleave with another caller's (a START TRANSACTION in the middle of
   * another would commit it; a plain statement would run inside it). Each turn ends
   * within its own deadline, so the wait is bounded; the deadline counts from the turn.
   * A call made within a turn (c.q inside c.tx's callback) is part of it: it runs at once,
   * on the same connection, rather than wait for the turn it is in.
   */
  let turn: Promise<void> = Promise.resolve();
  /** the turn a call runs in: a call made from it joins it only while it lasts (a timer it left behind does not) */
  const inTurn = new AsyncLocalStorage<{ active: boolean; inTx: boolean }>();
  const bounded = async <T>(work: (conn: mysql.Connection) => Promise<T>, ms = options.timeoutMs): Promise<T> => {
    if (inTurn.getStore()?.active === true) return boundedNow(work, ms);
    const previous = turn;
    let release = (): void => undefined;
    turn = new Promise<void>((resolve) => (release = resolve));
    await previous;
    const mine = { active: true, inTx: false };
    try {
      return await inTurn.run(mine, () => boundedNow(work, ms));
    } finally {
      mine.active = false;
      release();
    }
  };

  /** `work` on this store's connection within `ms`; past it, the connection is dropped. */
  const boundedNow = async <T>(work: (conn: mysql.Connection) => Promise<T>, ms: number): Promise<T> => {
    const made = connection();
    const call = { timedOut: false };
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        call.timedOut = true;
        drop(made);
        reject(new StoreError(`MySQL at ${where} did not answer within ${ms} ms (DB_TIMEOUT_MS)`));
      }, ms);
    });
    const running = (async () => {
      const conn = await made;
      // the caller was told this call failed while it was connecting: it must not run after all
      if (call.timedOut) throw new StoreError(`MySQL at ${where} did not answer within ${ms} ms (DB_TIMEOUT_MS)`);
      return work(conn);
    })();
    running.catch(() => undefined);
    try {
      return await Promise.race([running, expired]);
    } catch (e) {
      // a connection the server or the network closed is made anew by the next call
      if (isConnectionLost(e)) drop(made);
      throw asStoreError(e, where);
    } finally {
      clearTimeout(timer);
    }
  };

  const txOf = (conn: mysql.Connection): MysqlTx => ({
    q: async <R>(text: string, values: unknown[] = []) => (await conn.query(text, values))[0] as R[],
    exec: async (text: string, values: unknown[] = []) => (await conn.query(text, values))[0] as unknown as Changed,
  });

  const [row] = await bounded(async (conn) => (await conn.query('SELECT VERSION() AS v'))[0] as { v: string }[]);
  const server = parseServerVersion(row?.v ?? '');
  const needs = unsupportedServer(server);
  if (needs !== null) {
    const made = current as Promise<mysql.Connection> | null;
    if (made !== null) drop(made);
    throw new StoreError(`${server.text} at ${where} is too old: post-scheduler needs ${needs}`);
  }

  const q = <R>(text: string, values: unknown[] = []): Promise<R[]> => bounded(async (conn) => txOf(conn).q<R>(text, values));
  const exec = (text: string, values: unknown[] = []): Promise<Changed> => bounded(async (conn) => txOf(conn).exec(text, values));

  const tx = <T>(fn: (t: MysqlTx) => Promise<T>): Promise<T> => {
    // START TRANSACTION inside a transaction would commit the outer one half-way
    if (inTurn.getStore()?.inTx === true) return Promise.reject(new StoreError('MySQL store: a transaction inside a transaction (a bug)'));
    return bounded(async (conn) => {
      const mine = inTurn.getStore();
      if (mine !== undefined) mine.inTx = true;
      try {
        for (let attempt = 1; ; attempt++) {
          await conn.query('START TRANSACTION');
          try {
            const result = await fn(txOf(conn));
            await conn.query('COMMIT');
            return result;
          } catch (e) {
            await conn.query('ROLLBACK').catch(() => undefined);
            if ((e as { errno?: number }).errno === DEADLOCK && attempt < 3) continue;
            throw e;
          }
        }
      } finally {
        if (mine !== undefined) mine.inTx = false;
      }
    });
  };

  const session = <T>(fn: (t: MysqlTx) => Promise<T>): Promise<T> =>
    bounded(async (conn) => {
      await setServerLimits(conn, migrateTimeoutMs);
      try {
        return await fn(txOf(conn));
      } finally {
        await setServerLimits(conn, options.timeoutMs);
      }
    }, migrateTimeoutMs);

  const end = async (): Promise<void> => {
    const made = current;
    current = null;
    if (made === null) return;
    const conn = await made.catch(() => null);
    if (conn === null) return;
    // a polite COM_QUIT, at most 1 s; the timer is cleared, or it would keep the process
    // (a CLI command, a worker) alive for that second after everything is done
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([conn.end(), new Promise((resolve) => (timer = setTimeout(resolve, 1000)))]).catch(() => undefined);
    clearTimeout(timer);
    conn.destroy();
  };

  return { target, options, where, server, q, exec, tx, session, connectOther: () => connectTo(target, options), end };
}

/**
 * A driver's error as the store's, naming the database (password redacted); the
 * statement's text with its values filled in (mysql2's `sql`: settings, sealed
 * credentials) is taken off the cause. Errors of the store's own code pass as they are.
 */
function asStoreError(e: unknown, where: string): unknown {
  if (e instanceof StoreError) return e;
  const driver = e as { errno?: unknown; code?: unknown; sql?: unknown };
  if (!(e instanceof Error) || (driver.errno === undefined && driver.code === undefined)) return e;
  delete driver.sql;
  return new StoreError(`MySQL at ${where}: ${e.message}`, { cause: e });
}

function isConnectionLost(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  const fatal = (e as { fatal?: unknown }).fatal;
  return fatal === true || code === 'PROTOCOL_CONNECTION_LOST' || code === 'ECONNRESET' || code === 'EPIPE' || code === 'ECONNREFUSED';
}

function withoutDatabase(url: string): string {
  const u = new URL(url);
  u.pathname = '/';
  return u.toString();
}
