import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createTestDatabase, type TestDatabase } from './helpers/databases.ts';
import { killAll, run, testEnv } from './helpers/processes.ts';

/**
 * Every worker holds a database connection: a worker cap above what PostgreSQL has
 * free is a contradiction the cycle names in one warning line (the test server has
 * max_connections of at most a few hundred).
 */
describe('worker caps against max_connections', () => {
  const dbs: TestDatabase[] = [];
  after(async () => {
    killAll();
    await Promise.all(dbs.map((d) => d.drop()));
  });

  it('warns when MAX_WORKERS or GLOBAL_MAX_WORKERS exceeds the free connections, and not otherwise', async () => {
    const db = await createTestDatabase('postgres');
    dbs.push(db);
    const over = await run(['cron'], testEnv(db.url, { MAX_WORKERS: '1000' }), 30_000);
    assert.equal(over.code, 0, over.stdout + over.stderr);
    assert.match(over.stdout, /\[DISPATCHER\] MAX_WORKERS \(1000, per host\) workers and this dispatcher need more connections than PostgreSQL has free \(\d+ of max_connections less reserved, \d+\)/);
    const global = await run(['cron'], testEnv(db.url, { GLOBAL_MAX_WORKERS: '5000' }), 30_000);
    assert.match(global.stdout, /GLOBAL_MAX_WORKERS \(5000\) workers and this dispatcher need more connections/);
    const fine = await run(['cron'], testEnv(db.url), 30_000);
    assert.doesNotMatch(fine.stdout, /need more connections/);
  });
});
