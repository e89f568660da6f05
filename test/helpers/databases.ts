import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import Database from 'better-sqlite3';
import mysql from 'mysql2/promise';
import { LOCAL_DEFAULT } from '../../scripts/test-postgres.mjs';
import { MYSQL_LOCAL_DEFAULT } from '../../scripts/test-mysql.mjs';
import { parseDatabaseUrl } from '../../src/config.ts';
import type { Dialect } from '../../src/store/store.ts';

/**
 * A fresh, empty database for one test: a SQLite file in a temp directory, a new schema
 * on the test PostgreSQL server (TEST_DATABASE_URL, set by scripts/test.mjs), or a new
 * database on the test MySQL/MariaDB server (TEST_MYSQL_URL, set by scripts/test.mjs
 * when it found one).
 */
export interface TestDatabase {
  readonly dialect: Dialect;
  /** the DATABASE_URL to give the program */
  readonly url: string;
  /** a directory for this test's other files */
  readonly dir: string;
  drop(): Promise<void>;
}

export const DIALECTS = ['sqlite', 'postgres'] as const;

/**
 * The dialects of the store's own suites (conformance, pipeline, outage, chaos): the two
 * above, and MySQL/MariaDB when scripts/test.mjs found a server (TEST_MYSQL_URL); where
 * none was found, npm test ends with one line saying these did not run on it.
 */
export const STORE_DIALECTS: readonly Dialect[] = [...DIALECTS, ...(mysqlAvailable() ? (['mysql'] as const) : [])];

export function mysqlAvailable(): boolean {
  const url = process.env['TEST_MYSQL_URL'];
  return url !== undefined && url !== '' && url !== 'none';
}

/** The test MySQL/MariaDB server (any database on it: each test makes its own). */
export function mysqlUrl(): string {
  const url = process.env['TEST_MYSQL_URL'];
  return url === undefined || url === '' || url === 'none' ? MYSQL_LOCAL_DEFAULT : url;
}

export function postgresUrl(): string {
  const url = process.env['TEST_DATABASE_URL'];
  return url === undefined || url === '' || url === 'embedded' ? LOCAL_DEFAULT : url;
}

export async function createTestDatabase(dialect: Dialect): Promise<TestDatabase> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'post-scheduler-test-'));
  if (dialect === 'sqlite') {
    return {
      dialect,
      url: `sqlite:${path.join(dir, 'test.db')}`,
      dir,
      drop: async () => fs.rmSync(dir, { recursive: true, force: true }),
    };
  }
  const schema = `t_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  if (dialect === 'mysql') {
    const u = new URL(mysqlUrl());
    u.pathname = `/${schema}`;
    await rawQuery(mysqlUrl(), `CREATE DATABASE ${schema} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
    return {
      dialect,
      url: u.toString(),
      dir,
      drop: async () => {
        await rawQuery(mysqlUrl(), `DROP DATABASE IF EXISTS ${schema}`);
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const base = postgresUrl();
  const u = new URL(base);
  u.searchParams.set('schema', schema);
  return {
    dialect,
    url: u.toString(),
    dir,
    drop: async () => {
      const sql = postgres(base, { max: 1, onnotice: () => undefined });
      try {
        await sql.unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      } finally {
        await sql.end({ timeout: 1 });
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * One statement on a test database through a connection of its own (as an operator's
 * client would): the rows it returns, or none. Times come back as Date (PostgreSQL,
 * MySQL: UTC) or epoch ms (SQLite).
 */
export async function rawQuery<R = Record<string, unknown>>(url: string, statement: string, params: readonly unknown[] = []): Promise<R[]> {
  const target = parseDatabaseUrl(url);
  if (target.dialect === 'sqlite') {
    const raw = new Database(target.path);
    try {
      const prepared = raw.prepare(statement);
      if (prepared.reader) return prepared.all(...params) as R[];
      prepared.run(...params);
      return [];
    } finally {
      raw.close();
    }
  }
  if (target.dialect === 'mysql') {
    const conn = await mysql.createConnection({ uri: target.url, timezone: 'Z', supportBigNumbers: true, decimalNumbers: true, connectTimeout: 10_000 });
    try {
      await conn.query("SET time_zone = '+00:00'");
      const [rows] = await conn.query(statement, [...params]);
      return Array.isArray(rows) ? (rows as R[]) : [];
    } finally {
      conn.destroy();
    }
  }
  const sql = postgres(target.url, { max: 1, onnotice: () => undefined, connection: { search_path: target.schema } });
  try {
    return (await sql.unsafe(statement, [...params] as never[])) as unknown as R[];
  } finally {
    await sql.end({ timeout: 1 });
  }
}
