import Database from 'better-sqlite3';
import { StoreError } from '../store.ts';
import { prepareDatabaseFile } from './database-file.ts';
import { nativeBindingOption } from './native-binding.ts';

/** How long a write waits for another process's write lock before failing. */
const BUSY_TIMEOUT_MS = 15_000;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function isBusy(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'));
}

/** One SQLite connection and the helpers every concern's statements run through. */
export interface SqliteConnection {
  readonly db: Database.Database;
  readonly file: string;
  /** opening it created the database file */
  readonly created: boolean;
  /** A prepared statement, prepared once per connection. */
  readonly stmt: (text: string) => Database.Statement;
  /** A write transaction that takes the lock up front (BEGIN IMMEDIATE). */
  readonly immediate: <T>(fn: () => T) => Promise<T>;
  readonly read: <T>(fn: () => T) => Promise<T>;
}

/**
 * Opens `file` (WAL journal, synchronous=NORMAL, foreign keys; see openSqliteStore). A
 * writer that finds the lock taken retries in the event loop (retryBusy).
 */
export function openSqliteConnection(file: string): SqliteConnection {
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

  return { db, file, created, stmt, immediate, read };
}
