import assert from 'node:assert/strict';
import { after, afterEach, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import postgres from 'postgres';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import type { Dialect, Store } from '../src/store/store.ts';
import { storesWithChannel } from './helpers/conformance.ts';
import { createTestDatabase, type TestDatabase } from './helpers/databases.ts';
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
      await rawExec(db, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'from the future', 0)");
      await assert.rejects(store.migrate(), /schema version 99, newer than this post-scheduler knows \(\d+\): upgrade post-scheduler/);
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

/** Runs one statement on the test database through a connection of its own. */
async function rawExec(db: TestDatabase, statement: string): Promise<void> {
  const target = parseDatabaseUrl(db.url);
  if (target.dialect === 'sqlite') {
    const raw = new Database(target.path);
    try {
      raw.exec(statement);
    } finally {
      raw.close();
    }
    return;
  }
  if (target.dialect === 'mysql') throw new Error('TODO mysql');
  const sql = postgres(target.url, { max: 1, onnotice: () => undefined, connection: { search_path: target.schema } });
  try {
    await sql.unsafe(statement.replace(', applied_at', '').replace(', 0)', ')'));
  } finally {
    await sql.end({ timeout: 1 });
  }
}
