import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import type { Store } from '../src/store/store.ts';
import { createTestDatabase } from './helpers/databases.ts';
import { killAll, processesMatching, ROOT, run, start, testEnv, waitFor } from './helpers/processes.ts';
import { startReceiver, type Receiver } from './helpers/receiver.ts';
import { mariadbSkip, startRestartableMysql, type RestartableMysql } from './helpers/restartable-mysql.ts';
import { startRestartablePostgres, type RestartablePostgres } from './helpers/restartable-postgres.ts';

/**
 * Database outages, on a server of the test's own that it stops and starts (an embedded
 * PostgreSQL; a MariaDB run from the machine's binaries, where they are installed): a
 * restart in the middle of a cycle, and a database down at the start; and a SQLite file
 * whose write lock another process holds.
 */
interface OutageServer {
  readonly name: string;
  /** why the server cannot run here, or false */
  readonly skip: string | false;
  /** the server; its URL holds SECRET as the password where `secret` says so */
  start(): Promise<RestartablePostgres | RestartableMysql>;
  /** whether the URL's password is SECRET (the PostgreSQL one's is "postgres") */
  readonly secret: boolean;
  /** the one line a cycle prints when the server is down */
  readonly unreachable: RegExp;
}

const SECRET = 's3cret-pw';

const SERVERS: readonly OutageServer[] = [
  {
    name: 'PostgreSQL',
    skip: false,
    start: () => startRestartablePostgres({ database: 'outage' }),
    secret: false,
    unreachable: /Database unreachable \(postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:\d+\/outage \(schema post_scheduler\)\): cannot connect to PostgreSQL/,
  },
  {
    name: 'MariaDB',
    skip: mariadbSkip(),
    start: () => startRestartableMysql({ database: 'outage', password: SECRET }),
    secret: true,
    unreachable: /Database unreachable \(mysql:\/\/root:\*\*\*@127\.0\.0\.1:\d+\/outage\): cannot connect to MySQL/,
  },
];

/** `url` with SECRET as its password. */
function withSecret(url: string): string {
  const u = new URL(url);
  u.password = SECRET;
  return u.toString();
}

for (const server of SERVERS) {
  describe(`database outages (${server.name})`, { skip: server.skip }, () => {
    let db: RestartablePostgres | RestartableMysql;
    let store: Store | undefined;
    let receiver: Receiver;

    before(async () => {
      db = await server.start();
      receiver = await startReceiver(() => ({ status: 200, delayMs: 1_000 }));
    });
    after(async () => {
      killAll();
      await store?.close();
      await receiver.close();
      await db.destroy();
    });

    it('a restart mid-cycle: workers and dispatcher exit 1 naming the database error, nothing is lost or sent twice', async () => {
      store = await openStore(parseDatabaseUrl(db.url));
      await store.migrate();
      const channel = await store.addChannel({ name: 'hook', platform: 'webhook', settings: { url: receiver.url }, onUnknown: 'retry' });
      const ids = await store.schedulePosts(Array.from({ length: 12 }, (_, i) => ({ channelId: channel.id, text: `post ${i}`, runAt: new Date(Date.now() - 1_000) })));
      const env = testEnv(db.url, { MAX_WORKERS: '2', BATCH_SIZE: '3', RETRY_BASE_MS: '0', RETRY_MAX_MS: '0', LEASE_MS: '3000' });

      const cycle = start(['cron'], env, 60_000);
      await waitFor('the first posts to be in flight', () => receiver.deliveries.length >= 2);
      // Down for longer than the receiver takes to answer, so the workers' next round trip
      // finds no server (a restart between two queries goes unnoticed: the client reconnects).
      await db.restart(1_800);
      const r = await cycle.done;
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stdout, /\[WORKER worker-\d+-[0-9a-f]+-\d\] database error while (recording outcomes|claiming posts): .+; no more claims, outcomes kept/);
      assert.match(r.stdout, /Worker worker-\d+-[0-9a-f]+-\d failed with code 1/);
      if (server.secret) assert.doesNotMatch(r.stdout + r.stderr, new RegExp(SECRET));
      // this checkout's workers only: other checkouts on the machine may be running theirs
      assert.deepEqual(
        processesMatching('--worker-id worker-').filter((line) => line.includes(ROOT)),
        [],
        'no worker left behind',
      );

      // The worker wrote its outcomes once the server was back; later cycles publish the rest.
      const open = store;
      await waitFor(
        'every post published',
        async () => {
          const next = await run(['cron'], env, 60_000);
          assert.notEqual(next.code, 2, next.stdout);
          if (server.secret) assert.doesNotMatch(next.stdout + next.stderr, new RegExp(SECRET));
          const s = await open.status(1);
          return s.counts.published === ids.length;
        },
        60_000,
      );
      const s = await store.status(1);
      assert.equal(s.counts.processing + s.counts.unknown + s.counts.failed, 0);
      assert.deepEqual([...receiver.accepted.keys()].sort((a, b) => a - b), ids, 'every post delivered');
      assert.deepEqual([...receiver.accepted.values()].filter((n) => n > 1), [], 'none accepted twice');
      if (server.secret) {
        // what status prints names the database with its password hidden
        for (const args of [['status'], ['status', '--json']]) {
          const shown = await run(args, env, 30_000);
          assert.equal(shown.code, 0, shown.stdout + shown.stderr);
          assert.match(shown.stdout, /root:\*\*\*@127\.0\.0\.1:\d+\/outage/);
          assert.doesNotMatch(shown.stdout + shown.stderr, new RegExp(SECRET));
        }
      }
    });

    it('down at the start: one line naming the database, exit 1, no worker spawned, no password shown', async () => {
      await db.stop();
      try {
        const r = await run(['cron'], testEnv(withSecret(db.url)), 30_000);
        assert.equal(r.code, 1);
        const errors = (r.stdout + r.stderr).split('\n').filter((l) => /✗|error/i.test(l));
        assert.equal(errors.length, 1, r.stdout + r.stderr);
        assert.match(errors[0] ?? '', server.unreachable);
        assert.doesNotMatch(r.stdout + r.stderr, new RegExp(SECRET));
        assert.doesNotMatch(r.stdout, /Spawning worker/);
      } finally {
        await db.start();
      }
    });
  });
}

describe('SQLite busy', () => {
  it("waits for another process's write lock (bounded) and then runs the cycle, losing nothing", async () => {
    const db = await createTestDatabase('sqlite');
    const store = await openStore(parseDatabaseUrl(db.url));
    const target = parseDatabaseUrl(db.url);
    const locker = new Database(target.dialect === 'sqlite' ? target.path : '');
    try {
      await store.migrate();
      const out = path.join(db.dir, 'out.jsonl');
      const channel = await store.addChannel({ name: 'journal', platform: 'file', settings: { path: out }, onUnknown: 'check' });
      await store.schedulePosts(Array.from({ length: 5 }, (_, i) => ({ channelId: channel.id, text: `post ${i}`, runAt: new Date(Date.now() - 1_000) })));
      // Another process holds the write lock for 1.5 s while the cycle starts.
      locker.exec('BEGIN IMMEDIATE');
      const cycle = start(['cron'], testEnv(db.url), 30_000);
      await new Promise((r) => setTimeout(r, 1_500));
      locker.exec('COMMIT');
      const r = await cycle.done;
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal((await store.status(1)).counts.published, 5);
      assert.equal(fs.readFileSync(out, 'utf8').trim().split('\n').length, 5);
      assert.equal((locker.pragma('integrity_check') as { integrity_check: string }[])[0]?.integrity_check, 'ok');
    } finally {
      locker.close();
      await store.close();
      await db.drop();
    }
  });
});
