import assert from 'node:assert/strict';
import { after, afterEach, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import type { Store } from '../src/store/store.ts';
import { createTestDatabase, type TestDatabase } from './helpers/databases.ts';
import { killAll, run, start, testEnv, waitFor } from './helpers/processes.ts';
import { startReceiver, type Receiver } from './helpers/receiver.ts';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy.ts';

/**
 * A database that stops answering without closing anything (a partition, a frozen
 * server): every round trip has a client-side deadline (DB_TIMEOUT_MS), so it costs
 * seconds and one line naming the database, never the cycle's guard. The silence is a
 * proxy on 127.0.0.1 that stops passing bytes.
 */
describe('a PostgreSQL that goes silent', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    killAll();
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  after(() => killAll());

  async function behindProxy(): Promise<{ db: TestDatabase; proxy: TcpProxy; url: string }> {
    const db = await createTestDatabase('postgres');
    cleanups.push(() => db.drop());
    const direct = new URL(db.url);
    const proxy = await startTcpProxy(Number(direct.port === '' ? 5432 : direct.port), direct.hostname);
    cleanups.push(() => proxy.close());
    const via = new URL(db.url);
    via.port = String(proxy.port);
    return { db, proxy, url: via.toString() };
  }

  it('fails a round trip on a silent connection within DB_TIMEOUT_MS, naming the database, then connects afresh', async () => {
    const { proxy, url } = await behindProxy();
    const store: Store = await openStore(parseDatabaseUrl(url), { dbTimeoutMs: 800 });
    cleanups.push(() => store.close());
    await store.migrate();
    proxy.freeze();
    await assert.rejects(store.countDue(), (e: Error) => {
      assert.match(e.message, /^PostgreSQL at postgres:\/\/.+ did not answer within 800 ms \(DB_TIMEOUT_MS\)$/);
      return true;
    });
    proxy.thaw();
    assert.equal(await store.countDue(), 0, 'the next round trip runs on a new connection');
  });

  it('`status` on a silent database exits 1 with one line, not hanging', async () => {
    const { db, proxy, url } = await behindProxy();
    assert.equal((await run(['migrate'], testEnv(db.url))).code, 0);
    proxy.freeze();
    const r = await run(['status'], testEnv(url, { DB_TIMEOUT_MS: '1000' }), 30_000);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.equal(r.signal, null, 'ended by itself, not by the test');
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /PostgreSQL at postgres:\/\/.+ did not answer within 1000 ms/);
  });

  it('a cycle whose database goes silent mid-cycle ends well inside its guard, and later cycles publish everything once', async () => {
    const { db, proxy, url } = await behindProxy();
    let receiver: Receiver | null = null;
    receiver = await startReceiver(() => ({ status: 200, delayMs: 800 }));
    const r0 = receiver;
    cleanups.push(() => r0.close());
    const store = await openStore(parseDatabaseUrl(db.url));
    cleanups.push(() => store.close());
    await store.migrate();
    const channel = await store.addChannel({ name: 'hook', platform: 'webhook', settings: { url: r0.url }, onUnknown: 'retry' });
    const ids = await store.schedulePosts(Array.from({ length: 8 }, (_, i) => ({ channelId: channel.id, text: `p${i}`, runAt: new Date(Date.now() - 1000) })));
    const env = testEnv(url, {
      DB_TIMEOUT_MS: '1000',
      MAX_WORKERS: '2',
      BATCH_SIZE: '2',
      LEASE_MS: '1500',
      TIMEOUT_MS: '30000',
      WORKER_TIMEOUT_MS: '25000',
      RETRY_BASE_MS: '0',
      RETRY_MAX_MS: '0',
    });
    const cycle = start(['cron'], env, 60_000);
    await waitFor('the first posts to reach the receiver', () => r0.deliveries.length >= 1);
    proxy.freeze();
    const first = await cycle.done;
    assert.equal(first.code, 1, first.stdout);
    assert.match(first.stdout, /did not answer within 1000 ms/);
    assert.doesNotMatch(first.stdout, /Exceeded \d+ms timeout/, 'the guard never had to fire');
    proxy.thaw();
    await waitFor(
      'every post to be published',
      async () => {
        await run(['cron'], testEnv(db.url, { LEASE_MS: '1500', RETRY_BASE_MS: '0', RETRY_MAX_MS: '0' }), 30_000);
        return (await store.status(1)).counts.published === ids.length;
      },
      40_000,
    );
    assert.equal(r0.accepted.size, ids.length, 'every post delivered');
    // Posts sent before the silence whose outcome could not be written are sent again
    // after their lease (this is a `retry` channel), always under the post's one key.
    const keys = new Map<number, Set<string>>();
    for (const d of r0.deliveries) keys.set(d.postId, (keys.get(d.postId) ?? new Set()).add(d.idempotencyKey));
    assert.deepEqual([...keys.values()].filter((k) => k.size > 1), [], 'one idempotency key per post');
  });
});
