import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import postgres from 'postgres';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import { POSTGRES_MIGRATIONS } from '../src/store/postgres/migrations.ts';
import { SQLITE_MIGRATIONS } from '../src/store/sqlite/migrations.ts';
import { createTestDatabase, DIALECTS, postgresUrl, type TestDatabase } from './helpers/databases.ts';

/**
 * Upgrading a database made by an earlier version (migrations 1 and 2, with posts in
 * every state) to the current schema keeps every row, and gives existing channels the
 * safe unknown-outcome policy of their platform.
 */
describe('migrations: upgrade from version 2', () => {
  const dbs: TestDatabase[] = [];
  after(async () => {
    await Promise.all(dbs.map((d) => d.drop()));
  });

  for (const dialect of DIALECTS) {
    it(`${dialect}: keeps posts and their states, and sets file channels to check, others to hold`, async () => {
      const db = await createTestDatabase(dialect);
      dbs.push(db);
      await applyVersion2(db);
      const store = await openStore(parseDatabaseUrl(db.url));
      try {
        await store.migrate();
        assert.equal((await store.findChannel('journal'))?.onUnknown, 'check');
        assert.equal((await store.findChannel('hook'))?.onUnknown, 'hold');
        const states = await Promise.all([1, 2, 3, 4].map(async (id) => (await store.getPost(id))?.status));
        assert.deepEqual(states, ['pending', 'processing', 'published', 'failed']);
        const processing = await store.getPost(2);
        assert.deepEqual([processing?.workerId, processing?.attempts, processing?.unconfirmed], ['worker-old', 1, false]);
        assert.equal(await store.countDue(), 1, 'the due index was made again');
        // the new state is accepted by the rebuilt CHECK
        // a claim made before the upgrade has claim token 0 (tokens start there and only go up)
        await store.recordOutcomes('worker-old', [{ kind: 'unknown', postId: 2, token: 0, error: 'outcome unknown: test' }]);
        assert.equal((await store.getPost(2))?.status, 'unknown');
        await store.migrate();
        assert.equal((await store.status(1)).counts.unknown, 1, 'a second migrate is a no-op');
      } finally {
        await store.close();
      }
    });
  }
});

describe('migrations: PostgreSQL tables move out of public', () => {
  it('moves an install from before the schema of its own (tables in public) to post_scheduler, rows and all', async () => {
    const name = `legacy_${Date.now().toString(36)}`;
    const admin = postgres(postgresUrl(), { max: 1, onnotice: () => undefined });
    await admin.unsafe(`CREATE DATABASE ${name}`);
    const url = new URL(postgresUrl());
    url.pathname = `/${name}`;
    try {
      // version 2 of the program, in public; and an application table beside it
      const legacy = postgres(url.toString(), { max: 1, onnotice: () => undefined });
      try {
        await legacy.unsafe('CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
        for (const m of POSTGRES_MIGRATIONS.filter((x) => x.version <= 2)) {
          await legacy.unsafe(m.sql);
          await legacy.unsafe('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
        }
        await legacy.unsafe(ROWS.postgres);
        await legacy.unsafe("SELECT setval('post_schedule_id_seq', 4), setval('post_details_id_seq', 4), setval('channels_id_seq', 2)");
        await legacy.unsafe('CREATE TABLE users (id int)');
      } finally {
        await legacy.end({ timeout: 1 });
      }
      const target = parseDatabaseUrl(url.toString());
      assert.equal(target.dialect === 'postgres' ? target.schema : '', 'post_scheduler', 'the default schema');
      const store = await openStore(target);
      try {
        await store.migrate();
        assert.deepEqual(
          await Promise.all([1, 2, 3, 4].map(async (id) => (await store.getPost(id))?.status)),
          ['pending', 'processing', 'published', 'failed'],
        );
        assert.equal((await store.findChannel('hook'))?.onUnknown, 'hold');
        const [id] = await store.schedulePosts([{ channelId: 1, text: 'new', runAt: new Date() }]);
        assert.equal(id, 5, 'sequences moved with their tables');
      } finally {
        await store.close();
      }
      const check = postgres(url.toString(), { max: 1, onnotice: () => undefined });
      try {
        const tables = await check<{ schemaname: string; tablename: string }[]>`
          SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN ('public', 'post_scheduler') ORDER BY 1, 2`;
        const inPublic = tables.filter((t) => t.schemaname === 'public').map((t) => t.tablename);
        assert.deepEqual(inPublic, ['users'], "only the application's table stays in public");
        assert.ok(tables.some((t) => t.schemaname === 'post_scheduler' && t.tablename === 'post_schedule'));
      } finally {
        await check.end({ timeout: 1 });
      }
    } finally {
      await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end({ timeout: 1 });
    }
  });
});

describe("migrations: another application's tables", () => {
  const dbs: TestDatabase[] = [];
  after(async () => {
    await Promise.all(dbs.map((d) => d.drop()));
  });

  for (const dialect of DIALECTS) {
    it(`${dialect}: refuses in one line to mix its tables into a database or schema that holds another application's`, async () => {
      const db = await createTestDatabase(dialect);
      dbs.push(db);
      const target = parseDatabaseUrl(db.url);
      // a Rails- or Laravel-style application: its own schema_migrations, channels, users
      const app = [
        'CREATE TABLE schema_migrations (version varchar(20) PRIMARY KEY)',
        "INSERT INTO schema_migrations VALUES ('20240101000000')",
        'CREATE TABLE channels (id integer PRIMARY KEY, title text)',
        'CREATE TABLE users (id integer PRIMARY KEY)',
      ];
      if (target.dialect === 'sqlite') {
        const raw = new Database(target.path);
        for (const statement of app) raw.exec(statement);
        raw.close();
      } else if (target.dialect === 'postgres') {
        const sql = postgres(postgresUrl(), { max: 1, onnotice: () => undefined, connection: { search_path: target.schema } });
        await sql.unsafe(`CREATE SCHEMA ${target.schema}`);
        for (const statement of app) await sql.unsafe(statement);
        await sql.end({ timeout: 1 });
      }
      const store = await openStore(target);
      try {
        await assert.rejects(store.migrate(), (e: Error) => {
          assert.match(e.message, /already holds another application's tables \(channels, schema_migrations, users\) and none of post-scheduler's: give post-scheduler a/);
          assert.equal(e.message.split('\n').length, 1);
          return true;
        });
      } finally {
        await store.close();
      }
    });
  }
});

const ROWS = {
  sqlite: `
    INSERT INTO channels (id, name, platform, settings, created_at) VALUES (1, 'journal', 'file', '{"path":"/tmp/j"}', 0),
                                                                          (2, 'hook', 'webhook', '{"url":"http://127.0.0.1:1/"}', 0);
    INSERT INTO post_details (id, text, created_at) VALUES (1, 'a', 0), (2, 'b', 0), (3, 'c', 0), (4, 'd', 0);
    INSERT INTO post_schedule (id, post_detail_id, channel_id, run_at, status, worker_id, lease_expires_at, attempts, idempotency_key, created_at, updated_at)
    VALUES (1, 1, 1, 0, 'pending', NULL, NULL, 0, 'k1', 0, 0),
           (2, 2, 2, 0, 'processing', 'worker-old', 9999999999999, 1, 'k2', 0, 0),
           (3, 3, 2, 0, 'published', NULL, NULL, 1, 'k3', 0, 0),
           (4, 4, 1, 0, 'failed', NULL, NULL, 5, 'k4', 0, 0);`,
  postgres: `
    INSERT INTO channels (id, name, platform, settings) VALUES (1, 'journal', 'file', '{"path":"/tmp/j"}'),
                                                                (2, 'hook', 'webhook', '{"url":"http://127.0.0.1:1/"}');
    INSERT INTO post_details (id, text) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd');
    INSERT INTO post_schedule (id, post_detail_id, channel_id, run_at, status, worker_id, lease_expires_at, attempts, idempotency_key)
    VALUES (1, 1, 1, now() - interval '1 minute', 'pending', NULL, NULL, 0, 'k1'),
           (2, 2, 2, now() - interval '1 minute', 'processing', 'worker-old', now() + interval '1 hour', 1, 'k2'),
           (3, 3, 2, now() - interval '1 minute', 'published', NULL, NULL, 1, 'k3'),
           (4, 4, 1, now() - interval '1 minute', 'failed', NULL, NULL, 5, 'k4');`,
};

/** The schema as version 2 of the program left it, with rows in it. */
async function applyVersion2(db: TestDatabase): Promise<void> {
  if (db.dialect === 'sqlite') {
    const target = parseDatabaseUrl(db.url);
    if (target.dialect !== 'sqlite') throw new Error('expected a SQLite target');
    const sqlite = new Database(target.path);
    try {
      sqlite.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)');
      for (const m of SQLITE_MIGRATIONS.filter((x) => x.version <= 2)) {
        sqlite.exec(m.sql);
        sqlite.prepare('INSERT INTO schema_migrations VALUES (?, ?, 0)').run(m.version, m.name);
      }
      sqlite.exec(ROWS.sqlite);
    } finally {
      sqlite.close();
    }
    return;
  }
  const schema = new URL(db.url).searchParams.get('schema') ?? '';
  const sql = postgres(postgresUrl(), { max: 1, onnotice: () => undefined, connection: { search_path: schema } });
  try {
    await sql.unsafe(`CREATE SCHEMA ${schema}`);
    await sql.unsafe('CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())');
    for (const m of POSTGRES_MIGRATIONS.filter((x) => x.version <= 2)) {
      await sql.unsafe(m.sql);
      await sql.unsafe('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
    }
    await sql.unsafe(ROWS.postgres);
    // ids were given explicitly: move the sequences past them, as real inserts would have
    await sql.unsafe("SELECT setval('post_schedule_id_seq', 4), setval('post_details_id_seq', 4), setval('channels_id_seq', 2)");
  } finally {
    await sql.end({ timeout: 1 });
  }
}

describe('migrations: one merged below the newest', () => {
  for (const dialect of DIALECTS) {
    it(`${dialect}: a database at the newest version but missing an older migration gets it`, async () => {
      const db = await createTestDatabase(dialect);
      const store = await openStore(parseDatabaseUrl(db.url));
      try {
        await store.migrate();
        // as a database migrated between two merges would be: migration 5 (channels'
        // sealed credentials) absent, every later one there
        const target = parseDatabaseUrl(db.url);
        if (target.dialect === 'sqlite') {
          const raw = new Database(target.path);
          try {
            raw.exec('ALTER TABLE channels DROP COLUMN credentials; ALTER TABLE channels DROP COLUMN attention; DELETE FROM schema_migrations WHERE version = 6');
          } finally {
            raw.close();
          }
        } else if (target.dialect === 'postgres') {
          const sql = postgres(postgresUrl(), { max: 1, onnotice: () => undefined });
          try {
            await sql.unsafe(`SET search_path = ${target.schema}; ALTER TABLE channels DROP COLUMN credentials, DROP COLUMN attention; DELETE FROM schema_migrations WHERE version = 5`);
          } finally {
            await sql.end();
          }
        }
        await store.migrate();
        const channel = await store.addChannel({ name: 'back', platform: 'file', settings: {}, onUnknown: 'check', credentials: 'plain.e30=' });
        assert.equal(channel.credentials, 'plain.e30=', 'the missing migration ran');
      } finally {
        await store.close();
        await db.drop();
      }
    });
  }
});
