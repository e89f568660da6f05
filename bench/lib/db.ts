import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mysql from 'mysql2/promise';
import postgres from 'postgres';
import { probeMysql } from '../../scripts/test-mysql.mjs';

/**
 * A fresh database for one group of runs: a SQLite file in a new temp directory, a new
 * schema bench_<random> on the local PostgreSQL server, or a new database bench_<random>
 * on the local MySQL/MariaDB server (the program creates either on first use; drop()
 * removes it). Every database made is tracked so that dropAll() can clean up after a
 * failure.
 */
export type Dialect = 'sqlite' | 'postgres' | 'mysql';
/** mysql only where a server answers (see mysqlAvailable); PostgreSQL is always expected */
export const DIALECTS: readonly Dialect[] = ['sqlite', 'postgres', 'mysql'];

export const POSTGRES_URL = 'postgres://postgres@127.0.0.1:5432/test';
/** the local MySQL/MariaDB server (each run makes a database of its own there) */
export const MYSQL_URL = 'mysql://root@127.0.0.1:3306/test';

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

/** The server's version when the local MySQL/MariaDB answers, else the reason it does not. */
export function mysqlAvailable(): Promise<{ ok: true; version: string } | { ok: false; reason: string }> {
  return probeMysql(MYSQL_URL);
}

async function mysqlAdmin(statement: string): Promise<void> {
  const conn = await mysql.createConnection({ uri: MYSQL_URL, connectTimeout: 5_000 });
  try {
    await conn.query(statement);
  } finally {
    conn.destroy();
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
  } else if (dialect === 'mysql') {
    const name = `bench_${randomBytes(6).toString('hex')}`;
    const u = new URL(MYSQL_URL);
    u.pathname = `/${name}`;
    db = serverDatabase(dialect, u.toString(), dir, () => mysqlAdmin(`DROP DATABASE IF EXISTS ${name}`));
  } else {
    const schema = `bench_${randomBytes(6).toString('hex')}`;
    const u = new URL(POSTGRES_URL);
    u.searchParams.set('schema', schema);
    db = serverDatabase(dialect, u.toString(), dir, () => adminSql().unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`));
  }
  open.add(db);
  return db;
}

/** A database on a server: drop() runs dropStatement, then removes the temp directory whatever it did. */
function serverDatabase(dialect: Dialect, url: string, dir: string, dropStatement: () => Promise<unknown>): BenchDatabase {
  const db: BenchDatabase = {
    dialect,
    url,
    dir,
    drop: async () => {
      open.delete(db);
      try {
        await dropStatement();
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  };
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
