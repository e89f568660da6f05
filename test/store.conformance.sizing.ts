import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import postgres from 'postgres';
import { parseDatabaseUrl } from '../src/config.ts';
import type { Store } from '../src/store/store.ts';
import { DUE_BY_CHANNEL } from '../src/store/postgres/sizing.ts';
import { RECENT_PUBLISH_TIMES } from '../src/store/sqlite/sizing.ts';
import { migratedStores } from './helpers/conformance.ts';
import type { TestDatabase } from './helpers/databases.ts';

/** The sizing part of the storage conformance suite (Store.dueByChannel), run by test/store.conformance.ts on every dialect. */
export function testSizingStore(dialect: 'sqlite' | 'postgres'): void {
  describe(`store conformance, sizing: ${dialect}`, () => {
    const migrated = migratedStores(dialect);
    const ago = (s: number) => new Date(Date.now() - s * 1000);

    /** Claims `n` due posts and records them published `afterMs` later; returns their ids. */
    async function publish(store: Store, n: number, afterMs: number): Promise<number[]> {
      const claimed = await store.claim('w', n, 60_000);
      await sleep(afterMs);
      await store.recordOutcomes('w', claimed.map((p) => ({ kind: 'published' as const, postId: p.id, token: p.token, externalId: null, externalUrl: null })));
      return claimed.map((p) => p.id);
    }

    it('counts due posts by channel as countDue does, without history at first', async () => {
      const { store } = await migrated();
      assert.deepEqual(await store.dueByChannel(20), []);
      const a = await store.addChannel({ name: 'a', platform: 'file', settings: { path: '/tmp/a.jsonl' }, onUnknown: 'retry' });
      const b = await store.addChannel({ name: 'b', platform: 'file', settings: { path: '/tmp/b.jsonl' }, onUnknown: 'retry' });
      const c = await store.addChannel({ name: 'c', platform: 'file', settings: { path: '/tmp/c.jsonl' }, onUnknown: 'retry' });
      await store.schedulePosts([
        ...Array.from({ length: 3 }, (_, i) => ({ channelId: a.id, text: `a${i}`, runAt: ago(10) })),
        { channelId: a.id, text: 'later', runAt: new Date(Date.now() + 3_600_000) },
        { channelId: b.id, text: 'b', runAt: ago(5) },
        { channelId: c.id, text: 'c', runAt: ago(5) },
      ]);
      await store.setChannelPaused('c', true);
      const loads = await store.dueByChannel(20);
      assert.deepEqual(loads, [
        { channelId: a.id, due: 3, latencyMs: null, samples: 0 },
        { channelId: b.id, due: 1, latencyMs: null, samples: 0 },
      ]);
      assert.equal(loads.reduce((n, l) => n + l.due, 0), await store.countDue(), 'the paused channel is left out, as countDue leaves it');
    });

    it("measures each channel's publish time from its recent published attempts, at most `samples` of them", async () => {
      const { store } = await migrated();
      const fast = await store.addChannel({ name: 'fast', platform: 'file', settings: { path: '/tmp/f.jsonl' }, onUnknown: 'retry' });
      const slow = await store.addChannel({ name: 'slow', platform: 'file', settings: { path: '/tmp/s.jsonl' }, onUnknown: 'retry' });
      // history: 4 fast posts (published at once), 2 slow ones (published after 300 ms), one slow failure
      await store.schedulePosts(Array.from({ length: 4 }, (_, i) => ({ channelId: fast.id, text: `f${i}`, runAt: ago(60) })));
      await publish(store, 4, 0);
      await store.schedulePosts(Array.from({ length: 2 }, (_, i) => ({ channelId: slow.id, text: `s${i}`, runAt: ago(60) })));
      await publish(store, 2, 300);
      await store.schedulePosts([{ channelId: slow.id, text: 'bad', runAt: ago(60) }]);
      const [bad] = await store.claim('w', 1, 60_000);
      assert.ok(bad !== undefined);
      await sleep(1_000);
      await store.recordOutcomes('w', [{ kind: 'failed', postId: bad.id, token: bad.token, error: 'HTTP 400' }]);
      // now due: 5 on each channel
      await store.schedulePosts([
        ...Array.from({ length: 5 }, (_, i) => ({ channelId: fast.id, text: `F${i}`, runAt: ago(1) })),
        ...Array.from({ length: 5 }, (_, i) => ({ channelId: slow.id, text: `S${i}`, runAt: ago(1) })),
      ]);
      const loads = await store.dueByChannel(20);
      const byId = new Map(loads.map((l) => [l.channelId, l]));
      const f = byId.get(fast.id);
      const s = byId.get(slow.id);
      assert.ok(f !== undefined && s !== undefined, JSON.stringify(loads));
      assert.deepEqual([f.due, f.samples, s.due, s.samples], [5, 4, 5, 2], 'the failed attempt is no publish time');
      assert.ok(f.latencyMs !== null && f.latencyMs < 250, `fast: ${f.latencyMs} ms`);
      assert.ok(s.latencyMs !== null && s.latencyMs >= 290 && s.latencyMs < 950, `slow: ${s.latencyMs} ms`);
      const few = await store.dueByChannel(3);
      assert.equal(few.find((l) => l.channelId === fast.id)?.samples, 3, 'at most `samples` posts per channel');
    });

    it('reads published posts through their index by channel', async () => {
      const { db, store } = await migrated();
      // 20 channels with 100 published posts each: one channel's are a twentieth of them
      const channels = [];
      for (let c = 0; c < 20; c++) channels.push(await store.addChannel({ name: `c${c}`, platform: 'file', settings: { path: '/tmp/m.jsonl' }, onUnknown: 'retry' }));
      await store.schedulePosts(channels.flatMap((ch) => Array.from({ length: 100 }, (_, i) => ({ channelId: ch.id, text: `p${i}`, runAt: ago(60) }))));
      while ((await publish(store, 500, 0)).length > 0);
      const channel = channels[7];
      assert.ok(channel !== undefined);
      const plan = await explainRecent(db, channel.id);
      assert.match(plan, /post_schedule_published/, `plan: ${plan}`);
    });
  });
}

/** The database's plan for the store's own statement reading one channel's most recently published posts, through a separate connection. */
async function explainRecent(db: TestDatabase, channelId: number): Promise<string> {
  const target = parseDatabaseUrl(db.url);
  if (target.dialect === 'sqlite') {
    const raw = new Database(target.path);
    try {
      raw.exec('ANALYZE');
      return (raw.prepare(`EXPLAIN QUERY PLAN ${RECENT_PUBLISH_TIMES}`).all(channelId, 20) as { detail: string }[]).map((r) => r.detail).join(' | ');
    } finally {
      raw.close();
    }
  }
  const sql = postgres(target.url, { max: 1, onnotice: () => undefined, connection: { search_path: target.schema } });
  try {
    await sql.unsafe('ANALYZE post_schedule');
    // Store.dueByChannel's whole statement: the published index is read inside its lateral join
    const rows = await sql.unsafe(`EXPLAIN ${DUE_BY_CHANNEL}`, [20]);
    return rows.map((r) => String(Object.values(r)[0])).join(' | ');
  } finally {
    await sql.end({ timeout: 1 });
  }
}
