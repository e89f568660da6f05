import assert from 'node:assert/strict';
import { after, afterEach, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import type { Dialect, Store } from '../src/store/store.ts';
import { storesWithChannel } from './helpers/conformance.ts';
import { createTestDatabase, rawQuery, type TestDatabase } from './helpers/databases.ts';
import { testAlertStore } from './store.conformance/alerts.ts';
import { testChannelStore } from './store.conformance/channels.ts';
import { testCoordinationStore } from './store.conformance/coordination.ts';
import { testFiguresStore } from './store.conformance/figures.ts';
import { testHistoryStore } from './store.conformance/history.ts';
import { testPostsStore } from './store.conformance/posts.ts';
import { testQueueStore } from './store.conformance/queue.ts';
import { testRateStore } from './store.conformance/rate.ts';

/**
 * The storage conformance suite: every dialect runs exactly these tests against a
 * real database (test/store.sqlite.test.ts, test/store.postgres.test.ts, test/store.mysql.test.ts). Organised as
 * the Store is (src/store/concerns): one part per concern in test/store.conformance/,
 * and here the store's own schema (migrate).
 */
export function testStore(dialect: Dialect): void {
  describe(`store conformance: ${dialect}`, () => {
    const open: Store[] = [];
    const dbs: TestDatabase[] = [];
    const fresh = storesWithChannel(dialect);

    afterEach(async () => {
      await Promise.all(open.splice(0).map((s) => s.close()));
    });
    after(async () => {
      await Promise.all(dbs.splice(0).map((d) => d.drop()));
    });

    it('migrates once, and again as a no-op, from several processes at once', async () => {
      const db = await createTestDatabase(dialect);
      dbs.push(db);
      const stores = await Promise.all([1, 2, 3].map(() => openStore(parseDatabaseUrl(db.url))));
      open.push(...stores);
      await Promise.all(stores.map((s) => s.migrate()));
      await stores[0]?.migrate();
      assert.equal(await stores[1]?.countDue(), 0);
    });

    it('refuses a database migrated by a newer post-scheduler', async () => {
      const { db, store } = await fresh();
      await recordMigration(db, 99, 'from the future');
      await assert.rejects(store.migrate(), /schema version 99, newer than this post-scheduler knows \(\d+\): upgrade post-scheduler/);
    });

    it("refuses in one line, naming them, a database that holds another application's tables", async () => {
      const db = await createTestDatabase(dialect);
      dbs.push(db);
      const target = parseDatabaseUrl(db.url);
      if (target.dialect === 'postgres') await rawQuery(db.url, `CREATE SCHEMA "${target.schema}"`);
      // a Rails- or Laravel-style application: its own schema_migrations (no name column), channels, users
      for (const statement of [
        'CREATE TABLE schema_migrations (version varchar(20) PRIMARY KEY)',
        "INSERT INTO schema_migrations VALUES ('20240101000000')",
        'CREATE TABLE channels (id integer PRIMARY KEY, title text)',
        'CREATE TABLE users (id integer PRIMARY KEY)',
      ]) {
        await rawQuery(db.url, statement);
      }
      const store = await openStore(target);
      open.push(store);
      await assert.rejects(store.migrate(), (e: Error) => {
        assert.match(e.message, /already holds another application's tables \(channels, schema_migrations, users\) and none of post-scheduler's: give post-scheduler a/);
        assert.equal(e.message.split('\n').length, 1);
        return true;
      });
      assert.deepEqual((await rawQuery<{ n: number | string }>(db.url, 'SELECT count(*) AS n FROM users')).map((r) => Number(r.n)), [0], 'their tables untouched');
    });
  });
  testQueueStore(dialect);
  testPostsStore(dialect);
  testChannelStore(dialect);
  testCoordinationStore(dialect);
  testRateStore(dialect);
  testAlertStore(dialect);
  testHistoryStore(dialect);
  testFiguresStore(dialect);
}

/**
 * Records migration `version` as applied, as a newer post-scheduler would have: through a
 * connection of its own, applied_at in the dialect's type (SQLite epoch ms, PostgreSQL
 * timestamptz, MySQL DATETIME(3) on the server's clock).
 */
async function recordMigration(db: TestDatabase, version: number, name: string): Promise<void> {
  const statement = {
    sqlite: 'INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)',
    postgres: 'INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, now())',
    mysql: 'INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, NOW(3))',
  }[db.dialect];
  await rawQuery(db.url, statement, db.dialect === 'sqlite' ? [version, name, Date.now()] : [version, name]);
}
