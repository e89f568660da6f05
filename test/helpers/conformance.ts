import { after, afterEach } from 'node:test';
import { parseDatabaseUrl } from '../../src/config.ts';
import { openStore } from '../../src/store/open.ts';
import type { Dialect, Store } from '../../src/store/store.ts';
import type { Channel } from '../../src/types.ts';
import { createTestDatabase, type TestDatabase } from './databases.ts';

/**
 * Fresh migrated databases for one part of the storage conformance suite. Call it inside
 * the part's `describe`: each test's stores are closed after it, and its databases are
 * dropped after the part. `connect` opens another store (another connection, as another
 * process would) on the same database.
 */
export function migratedStores(dialect: Dialect): () => Promise<{ db: TestDatabase; store: Store; connect: () => Promise<Store> }> {
  const open: Store[] = [];
  const dbs: TestDatabase[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });
  after(async () => {
    await Promise.all(dbs.splice(0).map((d) => d.drop()));
  });
  return async () => {
    const db = await createTestDatabase(dialect);
    dbs.push(db);
    const connect = async (): Promise<Store> => {
      const s = await openStore(parseDatabaseUrl(db.url));
      open.push(s);
      return s;
    };
    const store = await connect();
    await store.migrate();
    return { db, store, connect };
  };
}

/**
 * migratedStores, each fresh database with one channel, `main` (file, on_unknown retry):
 * where most tests of the suite start from.
 */
export function storesWithChannel(
  dialect: Dialect,
): () => Promise<{ db: TestDatabase; store: Store; channel: Channel; connect: () => Promise<Store> }> {
  const migrated = migratedStores(dialect);
  return async () => {
    const { db, store, connect } = await migrated();
    const channel = await store.addChannel({ name: 'main', platform: 'file', settings: { path: '/tmp/x.jsonl' }, onUnknown: 'retry' });
    return { db, store, channel, connect };
  };
}
