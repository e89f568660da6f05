import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import postgres from 'postgres';

/**
 * A fresh database for one group of runs: a SQLite file in a new temp directory, or
 * a new schema bench_<random> on the local PostgreSQL server (the program creates it
 * on first use; drop() removes it with CASCADE). Every database made is tracked so
 * that dropAll() can clean up after a failure.
 */
export type Dialect = 'sqlite' | 'postgres';
export const DIALECTS: readonly Dialect[] = ['sqlite', 'postgres'];

export const POSTGRES_URL = 'postgres://postgres@127.0.0.1:5432/test';

export interface BenchDatabase {
  readonly dialect: Dialect;
  /** DATABASE_URL for the program */
  readonly url: string;
  /** a temp directory for this database's other files (file-publisher output) */
  readonly dir: string;
  drop(): Promise<void>;
}

const open = new Set<BenchDatabase>();
let admin: postgres.Sql | null = null;

function adminSql(): postgres.Sql {
  admin ??= postgres(POSTGRES_URL, { max: 1, connect_timeout: 5, idle_timeout: 30, onnotice: () => undefined });
  return admin;
}

export async function postgresAvailable(): Promise<string | null> {
  try {
    await adminSql().unsafe('SELECT 1');
    return null;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

export async function freshDatabase(dialect: Dialect): Promise<BenchDatabase> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'post-scheduler-bench-'));
  let db: BenchDatabase;
  if (dialect === 'sqlite') {
    db = {
      dialect,
      url: `sqlite:${path.join(dir, 'bench.db')}`,
      dir,
      drop: async () => {
        open.delete(db);
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  } else {
    const schema = `bench_${randomBytes(6).toString('hex')}`;
    const u = new URL(POSTGRES_URL);
    u.searchParams.set('schema', schema);
    db = {
      dialect,
      url: u.toString(),
      dir,
      drop: async () => {
        open.delete(db);
        try {
          await adminSql().unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
        } finally {
          fs.rmSync(dir, { recursive: true, force: true });
        }
      },
    };
  }
  open.add(db);
  return db;
}

/** Drops every database still open, then closes the admin connection. */
export async function dropAll(): Promise<void> {
  for (const db of [...open]) {
    try {
      await db.drop();
    } catch (e) {
      process.stderr.write(`bench: could not drop ${db.url}: ${e instanceof Error ? e.message : String(e)}\n`);
    }
  }
  if (admin !== null) {
    const sql = admin;
    admin = null;
    await sql.end({ timeout: 2 }).catch(() => undefined);
  }
}
