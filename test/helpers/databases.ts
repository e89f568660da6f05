import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { LOCAL_DEFAULT } from '../../scripts/test-postgres.mjs';

/**
 * A fresh, empty database for one test: a SQLite file in a temp directory, or a new
 * schema on the test PostgreSQL server (TEST_DATABASE_URL, set by scripts/test.mjs).
 */
export interface TestDatabase {
  readonly dialect: 'sqlite' | 'postgres';
  /** the DATABASE_URL to give the program */
  readonly url: string;
  /** a directory for this test's other files */
  readonly dir: string;
  drop(): Promise<void>;
}

export const DIALECTS = ['sqlite', 'postgres'] as const;

export function postgresUrl(): string {
  const url = process.env['TEST_DATABASE_URL'];
  return url === undefined || url === '' || url === 'embedded' ? LOCAL_DEFAULT : url;
}

export async function createTestDatabase(dialect: 'sqlite' | 'postgres'): Promise<TestDatabase> {
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
