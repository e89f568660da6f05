import type { Dialect } from '../../src/store/store.ts';
import Database from 'better-sqlite3';
import assert from 'node:assert/strict';
import { MAX_KEY } from '../../src/operations/posts.ts';
import { describe, it } from 'node:test';
import postgres from 'postgres';
import { parseDatabaseUrl } from '../../src/config.ts';
import { dueForClaim } from '../../src/store/mysql/queue.ts';
import { EXCHANGE } from '../../src/store/postgres/queue.ts';
import { SQL as SQLITE } from '../../src/store/sqlite/queue.ts';
import type { Outcome } from '../../src/types.ts';
import { migratedStores, storesWithChannel } from '../helpers/conformance.ts';
import { rawQuery, type TestDatabase } from '../helpers/databases.ts';
import { testStoreContent } from './content.ts';

/**
 * The queue part of the storage conformance suite (QueueStore: scheduling, claims,
 * outcomes, leases, recovery, an operator's requeue, confirm and cancel; the content
 * round trips of content.ts), run by test/store.conformance.ts on every dialect.
 */
export function testQueueStore(dialect: Dialect): void {
  describe(`store conformance, queue: ${dialect}`, () => {
    const fresh = storesWithChannel(dialect);
    const ago = (ms: number) => new Date(Date.now() - ms);
    const later = (ms: number) => new Date(Date.now() + ms);

    it('schedules posts and counts only the due pending ones', async () => {
      const { store, channel } = await fresh();
      const ids = await store.schedulePosts([
        { channelId: channel.id, text: 'a', runAt: ago(1000) },
        { channelId: channel.id, text: 'b', runAt: ago(10) },
        { channelId: channel.id, text: 'later', runAt: later(60_000) },
      ]);
      assert.equal(ids.length, 3);
      assert.deepEqual([...ids].sort((x, y) => x - y), ids);
      assert.equal(await store.countDue(), 2);
      const post = await store.getPost(ids[2] ?? 0);
      assert.equal(post?.status, 'pending');
      assert.equal(post?.text, 'later');
      assert.equal(post?.attempts, 0);
      const keys = new Set(await Promise.all(ids.map(async (id) => (await store.getPost(id))?.idempotencyKey)));
      assert.equal(keys.size, 3, 'each post has its own idempotency key');
    });

    it('claims due posts oldest first, up to the limit, with content and channel', async () => {
      const { store, channel } = await fresh();
      const [newer, older, , oldest] = await store.schedulePosts([
        { channelId: channel.id, text: 'newer', runAt: ago(1_000) },
        { channelId: channel.id, text: 'older', runAt: ago(5_000) },
        { channelId: channel.id, text: 'future', runAt: later(60_000) },
        { channelId: channel.id, text: 'oldest', runAt: ago(9_000) },
      ]);
      const first = await store.claim('w1', 2, 60_000);
      assert.deepEqual(
        first.map((p) => p.id),
        [oldest, older],
      );
      assert.equal(first[0]?.text, 'oldest');
      assert.equal(first[0]?.attempt, 1);
      assert.equal(first[0]?.channel?.name, 'main');
      const row = await store.getPost(oldest ?? 0);
      assert.equal(row?.status, 'processing');
      assert.equal(row?.workerId, 'w1');
      assert.ok(row?.lockedAt instanceof Date);
      assert.ok((row?.leaseExpiresAt?.getTime() ?? 0) > Date.now() + 50_000);
      const second = await store.claim('w2', 5, 60_000);
      assert.deepEqual(
        second.map((p) => p.id),
        [newer],
      );
      assert.deepEqual(await store.claim('w3', 5, 60_000), []);
    });

    it('claims ahead only when asked: the posts due within aheadMs of its now, never later ones', async () => {
      const { store, channel } = await fresh();
      const [soon, due, farther] = await store.schedulePosts([
        { channelId: channel.id, text: 'soon', runAt: later(3_000) },
        { channelId: channel.id, text: 'due', runAt: ago(10) },
        { channelId: channel.id, text: 'farther', runAt: later(60_000) },
      ]);
      const now = await store.exchange('w1', [], 5, 60_000);
      assert.deepEqual(
        now.claimed.map((p) => p.id),
        [due],
      );
      const ahead = await store.exchange('w2', [], 5, 60_000, { aheadMs: 30_000 });
      assert.deepEqual(
        ahead.claimed.map((p) => p.id),
        [soon],
      );
      assert.ok((ahead.claimed[0]?.runAt.getTime() ?? 0) > Date.now(), 'its run_at comes with it, to be held until');
      assert.equal((await store.getPost(farther ?? 0))?.status, 'pending');
    });

    it('gives each post of one claim its own channel, whatever channels the batch mixes', async () => {
      const { store, channel } = await fresh();
      const other = await store.addChannel({ name: 'other', platform: 'webhook', settings: { url: 'http://127.0.0.1:1/hook' }, onUnknown: 'retry' });
      const ids = await store.schedulePosts(Array.from({ length: 5 }, (_, i) => ({ channelId: i % 2 === 0 ? channel.id : other.id, text: `p${i}`, runAt: ago(5_000 - i) })));
      const claimed = await store.claim('w1', 5, 60_000);
      assert.deepEqual(claimed.map((c) => c.id), ids);
      assert.deepEqual(
        claimed.map((c) => [c.text, c.channel?.id, c.channel?.name, c.channel?.platform, c.channel?.onUnknown]),
        [
          ['p0', channel.id, 'main', channel.platform, channel.onUnknown],
          ['p1', other.id, 'other', 'webhook', 'retry'],
          ['p2', channel.id, 'main', channel.platform, channel.onUnknown],
          ['p3', other.id, 'other', 'webhook', 'retry'],
          ['p4', channel.id, 'main', channel.platform, channel.onUnknown],
        ],
      );
      assert.deepEqual(claimed[1]?.channel?.settings, { url: 'http://127.0.0.1:1/hook' });
      assert.deepEqual(claimed[0]?.channel?.settings, channel.settings);
    });

    it('never gives one post to two concurrent claimers', async () => {
      const { store, channel, connect } = await fresh();
      const total = 300;
      await store.schedulePosts(Array.from({ length: total }, (_, i) => ({ channelId: channel.id, text: `p${i}`, runAt: ago(1000) })));
      const claimers = await Promise.all([1, 2, 3].map(() => connect()));
      const taken = await Promise.all(
        claimers.map(async (s, n) => {
          const mine: number[] = [];
          for (;;) {
            const batch = await s.claim(`w${n}`, 7, 60_000);
            if (batch.length === 0) return mine;
            mine.push(...batch.map((p) => p.id));
          }
        }),
      );
      const all = taken.flat();
      assert.equal(all.length, total);
      assert.equal(new Set(all).size, total);
    });

    it('keeps the calls one store makes at once apart (a worker heartbeat during an exchange): claims on one connection are disjoint too', async () => {
      const { store, channel } = await fresh();
      const total = 60;
      await store.schedulePosts(Array.from({ length: total }, (_, i) => ({ channelId: channel.id, text: `p${i}`, runAt: ago(1000) })));
      const [held] = await store.claim('w0', 1, 60_000);
      // transactions and plain statements issued together on the same store
      const results = await Promise.all([
        ...Array.from({ length: 6 }, (_, n) => store.claim(`w${n + 1}`, 10, 60_000)),
        store.renewLeases('w0', [{ postId: held?.id ?? 0, token: held?.token ?? 0 }], 120_000),
        store.countDue(),
      ]);
      const claimed = results.slice(0, 6).flatMap((r) => (r as { id: number }[]).map((p) => p.id));
      assert.equal(claimed.length, total - 1);
      assert.equal(new Set(claimed).size, total - 1, 'no post in two claims');
      assert.deepEqual(results[6], [held?.id]);
    });

    it('exchanges from several connections at once, with recovery beside them: each post claimed by one live worker and published once', async () => {
      const { store, channel, connect } = await fresh();
      const total = 240;
      await store.schedulePosts(Array.from({ length: total }, (_, i) => ({ channelId: channel.id, text: `p${i}`, runAt: ago(1000) })));
      // a worker that dies holding 30 posts: its leases run out at once, and recovery
      // (another connection, in a loop) puts them back while the others exchange
      const dead = await store.claim('dead', 30, 1);
      const [recoverer, ...workers] = await Promise.all([0, 1, 2, 3].map(() => connect()));
      let running = true;
      const recovering = (async () => {
        let n = 0;
        while (running) {
          n += (await recoverer?.recoverExpired(5))?.length ?? 0;
          await new Promise((r) => setTimeout(r, 5));
        }
        return n;
      })();
      const claimedBy = new Map<number, string>();
      const deadline = Date.now() + 60_000;
      try {
        await Promise.all(
          workers.map(async (s, n) => {
            const me = `w${n}`;
            let outcomes: Outcome[] = [];
            while (claimedBy.size < total || outcomes.length > 0) {
              assert.ok(Date.now() < deadline, `${claimedBy.size} of ${total} claimed in 60 s`);
              const { applied, claimed } = await s.exchange(me, outcomes, claimedBy.size < total ? 5 : 0, 60_000);
              assert.deepEqual([...applied].sort((x, y) => x - y), outcomes.map((o) => o.postId).sort((x, y) => x - y), 'every outcome of a live claim lands');
              for (const c of claimed) {
                assert.equal(claimedBy.get(c.id), undefined, `post ${c.id} claimed by ${claimedBy.get(c.id) ?? ''} and ${me}`);
                claimedBy.set(c.id, me);
              }
              outcomes = claimed.map((c) => ({ kind: 'published', postId: c.id, token: c.token, externalId: `${me}-${c.id}`, externalUrl: null }));
              if (claimed.length === 0) await new Promise((r) => setTimeout(r, 5));
            }
          }),
        );
      } finally {
        running = false;
      }
      assert.equal(await recovering, dead.length, "the dead worker's posts, each recovered once");
      const published = await store.listPosts({ order: 'next', limit: total + 1, statuses: ['published'] });
      assert.equal(published.length, total);
      // the dead worker's late answer lands nowhere: every post was claimed again since
      const late = dead.map((c): Outcome => ({ kind: 'published', postId: c.id, token: c.token, externalId: null, externalUrl: null }));
      assert.deepEqual(await store.recordOutcomes('dead', late), []);
      const [first] = dead;
      const post = await store.getPost(first?.id ?? 0);
      assert.equal(post?.externalId, `${claimedBy.get(first?.id ?? 0) ?? ''}-${first?.id ?? 0}`);
      assert.deepEqual((await store.postAttempts(first?.id ?? 0)).map((a) => [a.attempt, a.outcome]), [
        [1, 'expired'],
        [2, 'published'],
      ]);
    });

    it('records outcomes, fenced by worker and attempt', async () => {
      const { store, channel } = await fresh();
      const [a, b, c, d] = await store.schedulePosts(
        ['a', 'b', 'c', 'd'].map((text, i) => ({ channelId: channel.id, text, runAt: ago(1000 - i) })),
      );
      const claimed = await store.claim('w1', 4, 60_000);
      assert.equal(claimed.length, 4);
      const outcomes: Outcome[] = [
        { kind: 'published', postId: a ?? 0, token: 1, externalId: 'ext-1', externalUrl: 'https://example.test/1' },
        { kind: 'retry', postId: b ?? 0, token: 1, error: 'HTTP 500', delayMs: 120_000, unconfirmed: false },
        { kind: 'failed', postId: c ?? 0, token: 1, error: 'HTTP 400' },
        { kind: 'published', postId: d ?? 0, token: 2, externalId: null, externalUrl: null },
      ];
      const applied = await store.recordOutcomes('w1', outcomes);
      assert.deepEqual([...applied].sort((x, y) => x - y), [a, b, c]);
      const pa = await store.getPost(a ?? 0);
      assert.equal(pa?.status, 'published');
      assert.equal(pa?.externalId, 'ext-1');
      assert.equal(pa?.externalUrl, 'https://example.test/1');
      assert.ok(pa?.publishedAt instanceof Date);
      const pb = await store.getPost(b ?? 0);
      assert.equal(pb?.status, 'pending');
      assert.equal(pb?.lastError, 'HTTP 500');
      assert.equal(pb?.workerId, null);
      assert.ok((pb?.runAt.getTime() ?? 0) > Date.now() + 100_000, 'retry pushed run_at out by the delay');
      const pc = await store.getPost(c ?? 0);
      assert.equal(pc?.status, 'failed');
      assert.equal(pc?.lastError, 'HTTP 400');
      assert.equal((await store.getPost(d ?? 0))?.status, 'processing', 'wrong attempt: fenced out');
      assert.deepEqual(
        await store.recordOutcomes('someone-else', [{ kind: 'failed', postId: d ?? 0, token: 1, error: 'x' }]),
        [],
        'wrong worker: fenced out',
      );
      assert.equal(await store.countDue(), 0);
    });

    it('records an error that holds U+0000 (with U+FFFD in its place), and the claim that rides with it', async () => {
      const { store, channel } = await fresh();
      const [a, b] = await store.schedulePosts(['a', 'b'].map((text, i) => ({ channelId: channel.id, text, runAt: ago(1000 - i) })));
      const [first] = await store.claim('w1', 1, 60_000);
      assert.equal(first?.id, a);
      const outcome: Outcome = { kind: 'failed', postId: a ?? 0, token: first?.token ?? 0, error: 'module said: bad\u0000byte', reason: 'other' };
      const { applied, claimed } = await store.exchange('w1', [outcome], 1, 60_000);
      assert.deepEqual(applied, [a]);
      assert.deepEqual(claimed.map((p) => p.id), [b]);
      const post = await store.getPost(a ?? 0);
      assert.equal(post?.status, 'failed');
      assert.equal(post?.lastError, 'module said: bad\uFFFDbyte');
      const attempts = await store.postAttempts(a ?? 0);
      assert.deepEqual(attempts.map((t) => [t.outcome, t.error]), [['failed', 'module said: bad\uFFFDbyte']]);
    });

    it('records ids, URLs and errors cut in the middle of an emoji (half a surrogate pair, with U+FFFD in its place)', async () => {
      const { store, channel } = await fresh();
      const [a, b, c] = await store.schedulePosts(['a', 'b', 'c'].map((text, i) => ({ channelId: channel.id, text, runAt: ago(1000 - i) })));
      const claimed = await store.claim('w1', 2, 60_000);
      assert.deepEqual(claimed.map((p) => p.id), [a, b]);
      const cut = ('x'.repeat(9) + '😀').slice(0, 10);
      const outcomes: Outcome[] = [
        { kind: 'published', postId: a ?? 0, token: claimed[0]?.token ?? 0, externalId: cut, externalUrl: `https://example.test/${cut}` },
        { kind: 'retry', postId: b ?? 0, token: claimed[1]?.token ?? 0, error: 'HTTP 500: \uDE00tail ' + cut, delayMs: 60_000, unconfirmed: false, reason: 'server' },
      ];
      const { applied, claimed: next } = await store.exchange('w1', outcomes, 1, 60_000);
      assert.deepEqual([...applied].sort((x, y) => x - y), [a, b]);
      assert.deepEqual(next.map((p) => p.id), [c], 'the claim beside them went through');
      const pa = await store.getPost(a ?? 0);
      assert.equal(pa?.status, 'published');
      assert.equal(pa?.externalId, 'xxxxxxxxx\uFFFD');
      assert.equal(pa?.externalUrl, 'https://example.test/xxxxxxxxx\uFFFD');
      const pb = await store.getPost(b ?? 0);
      assert.equal(pb?.status, 'pending');
      assert.equal(pb?.lastError, 'HTTP 500: \uFFFDtail xxxxxxxxx\uFFFD');
      // whole pairs stay as they are
      await store.recordOutcomes('w1', [{ kind: 'published', postId: c ?? 0, token: next[0]?.token ?? 0, externalId: '🧵 ok 😀', externalUrl: null }]);
      assert.equal((await store.getPost(c ?? 0))?.externalId, '🧵 ok 😀');
    });

    it('records outcomes and claims again in one exchange, never re-claiming a post it just retried', async () => {
      const { store, channel } = await fresh();
      const ids = await store.schedulePosts(['a', 'b', 'c', 'd'].map((text, i) => ({ channelId: channel.id, text, runAt: ago(1000 - i) })));
      const first = await store.exchange('w', [], 2, 60_000);
      assert.deepEqual(first.applied, []);
      assert.deepEqual(
        first.claimed.map((p) => p.id),
        ids.slice(0, 2),
      );
      const [a, b] = first.claimed;
      const second = await store.exchange(
        'w',
        [
          { kind: 'published', postId: a?.id ?? 0, token: 1, externalId: null, externalUrl: null },
          { kind: 'retry', postId: b?.id ?? 0, token: 1, error: 'HTTP 503', delayMs: 0, unconfirmed: false },
        ],
        5,
        60_000,
      );
      assert.deepEqual([...second.applied].sort((x, y) => x - y), ids.slice(0, 2));
      assert.deepEqual(
        second.claimed.map((p) => p.id),
        ids.slice(2, 4),
        'the post retried by this call is not claimed by it',
      );
      assert.equal((await store.getPost(a?.id ?? 0))?.status, 'published');
      assert.equal((await store.getPost(b?.id ?? 0))?.status, 'pending');
    });

    it('hands back claimed posts that were never started, without counting an attempt', async () => {
      const { store, channel } = await fresh();
      const runAt = ago(5_000);
      const [a, b] = await store.schedulePosts([
        { channelId: channel.id, text: 'a', runAt },
        { channelId: channel.id, text: 'b', runAt: ago(1_000) },
      ]);
      const claimed = await store.claim('w', 2, 60_000);
      assert.equal(claimed[0]?.attempt, 1);
      const applied = await store.recordOutcomes('w', [
        { kind: 'released', postId: a ?? 0, token: 1 },
        { kind: 'published', postId: b ?? 0, token: 1, externalId: null, externalUrl: null },
      ]);
      assert.deepEqual([...applied].sort((x, y) => x - y), [a, b]);
      assert.equal((await store.getPost(b ?? 0))?.status, 'published');
      const post = await store.getPost(a ?? 0);
      assert.equal(post?.status, 'pending');
      assert.equal(post?.attempts, 0);
      assert.equal(post?.workerId, null);
      assert.equal(post?.runAt.getTime(), runAt.getTime(), 'due again at once');
      assert.equal(await store.countDue(), 1);
    });

    it("recovers posts whose lease expired by their channel's policy, held as unknown on the last attempt", async () => {
      const { store, channel } = await fresh();
      const hold = await store.addChannel({ name: 'held', platform: 'webhook', settings: { url: 'http://127.0.0.1:1/x' }, onUnknown: 'hold' });
      const [a, b, c] = await store.schedulePosts(['a', 'b', 'c'].map((text, i) => ({ channelId: channel.id, text, runAt: ago(1000 - i) })));
      const [h] = await store.schedulePosts([{ channelId: hold.id, text: 'h', runAt: ago(500) }]);
      await store.claim('dead', 2, 1); // a, b: lease of 1 ms
      await store.claim('alive', 1, 60_000); // c
      await store.claim('dead', 1, 1); // h
      await new Promise((r) => setTimeout(r, 50));
      const back = await store.recoverExpired(5);
      assert.deepEqual(
        back.map((r) => [r.id, r.workerId, r.attempts, r.status]).sort((x, y) => Number(x[0]) - Number(y[0])),
        [
          [a, 'dead', 1, 'pending'],
          [b, 'dead', 1, 'pending'],
          [h, 'dead', 1, 'unknown'],
        ],
      );
      const pa = await store.getPost(a ?? 0);
      assert.equal(pa?.status, 'pending');
      assert.equal(pa?.unconfirmed, true, 'it may have been sent');
      assert.match(pa?.lastError ?? '', /lease expired: worker dead/);
      assert.equal((await store.getPost(c ?? 0))?.status, 'processing');
      const ph = await store.getPost(h ?? 0);
      assert.equal(ph?.status, 'unknown');
      assert.match(ph?.lastError ?? '', /may have been published/);

      // The dead worker's late outcome cannot overwrite the next claim.
      const again = await store.claim('next', 1, 1);
      assert.equal(again[0]?.id, a);
      assert.equal(again[0]?.attempt, 2);
      assert.equal(again[0]?.unconfirmed, true);
      assert.deepEqual(await store.recordOutcomes('dead', [{ kind: 'published', postId: a ?? 0, token: 1, externalId: null, externalUrl: null }]), []);
      await new Promise((r) => setTimeout(r, 50));
      const exhausted = await store.recoverExpired(2);
      assert.deepEqual(
        exhausted.map((r) => [r.id, r.status]),
        [[a, 'unknown']],
        'a post that may have been sent is never recorded as failed',
      );
      assert.equal((await store.getPost(a ?? 0))?.status, 'unknown');
    });

    it('records unknown outcomes, keeps retried posts that may have been sent unconfirmed, and clears that on publish', async () => {
      const { store, channel } = await fresh();
      const [a, b] = await store.schedulePosts(['a', 'b'].map((text, i) => ({ channelId: channel.id, text, runAt: ago(1000 - i) })));
      await store.claim('w', 2, 60_000);
      const applied = await store.recordOutcomes('w', [
        { kind: 'unknown', postId: a ?? 0, token: 1, error: 'outcome unknown: timeout' },
        { kind: 'retry', postId: b ?? 0, token: 1, error: 'timeout after sending', delayMs: 0, unconfirmed: true },
      ]);
      assert.deepEqual([...applied].sort((x, y) => x - y), [a, b]);
      const pa = await store.getPost(a ?? 0);
      assert.deepEqual([pa?.status, pa?.lastError, pa?.unconfirmed], ['unknown', 'outcome unknown: timeout', true]);
      const [again] = await store.claim('w', 5, 60_000);
      assert.deepEqual([again?.id, again?.attempt, again?.unconfirmed], [b, 2, true]);
      await store.recordOutcomes('w', [{ kind: 'published', postId: b ?? 0, token: 2, externalId: 'x', externalUrl: null }]);
      const pb = await store.getPost(b ?? 0);
      assert.deepEqual([pb?.status, pb?.unconfirmed, pb?.externalId], ['published', false, 'x']);
      const report = await store.status(1);
      assert.equal(report.counts.unknown, 1);
      assert.deepEqual(
        report.unknownPosts.map((u) => [u.id, u.channel, u.attempts]),
        [[a, 'main', 1]],
      );
    });

    it('requeues failed posts and cancels pending ones, and only those', async () => {
      const { store, channel } = await fresh();
      const [a, b, c, d] = await store.schedulePosts(['a', 'b', 'c', 'd'].map((text, i) => ({ channelId: channel.id, text, runAt: ago(1000 - i) })));
      await store.claim('w', 2, 60_000);
      await store.recordOutcomes('w', [
        { kind: 'failed', postId: a ?? 0, token: 1, error: 'x' },
        { kind: 'published', postId: b ?? 0, token: 1, externalId: null, externalUrl: null },
      ]);
      assert.deepEqual(await store.requeue([b ?? 0]), [], 'a published post is not requeued');
      assert.deepEqual(await store.requeue([a ?? 0]), [a]);
      const pa = await store.getPost(a ?? 0);
      assert.equal(pa?.status, 'pending');
      assert.deepEqual([pa?.attempts, pa?.attemptsBase], [1, 1], 'attempts keep counting; MAX_ATTEMPTS counts afresh');
      assert.equal(await store.countDue(), 3);

      assert.deepEqual(await store.cancel(c ?? 0), { cancelled: true, status: 'pending' });
      assert.equal((await store.getPost(c ?? 0))?.status, 'cancelled');
      assert.deepEqual(await store.cancel(b ?? 0), { cancelled: false, status: 'published' });
      assert.deepEqual(await store.cancel(999_999), { cancelled: false, status: null });

      await store.claim('w2', 5, 60_000);
      await store.recordOutcomes('w2', [
        { kind: 'failed', postId: a ?? 0, token: 2, error: 'x' },
        { kind: 'failed', postId: d ?? 0, token: 1, error: 'y' },
      ]);
      assert.deepEqual([...(await store.requeue('allFailed'))].sort((x, y) => x - y), [a, d]);
    });

    it('lets an operator resolve unknown posts: retry by id, mark published, or cancel', async () => {
      const { store, channel } = await fresh();
      const [a, b, c, d] = await store.schedulePosts(['a', 'b', 'c', 'd'].map((text, i) => ({ channelId: channel.id, text, runAt: ago(1000 - i) })));
      await store.claim('w', 4, 60_000);
      await store.recordOutcomes(
        'w',
        [a, b, c].map((id) => ({ kind: 'unknown' as const, postId: id ?? 0, token: 1, error: 'outcome unknown' })),
      );
      await store.recordOutcomes('w', [{ kind: 'failed', postId: d ?? 0, token: 1, error: 'HTTP 400' }]);
      assert.deepEqual(await store.requeue('allFailed'), [d], 'never unknown posts in bulk');
      assert.deepEqual(await store.requeue([a ?? 0]), [a]);
      const pa = await store.getPost(a ?? 0);
      assert.deepEqual([pa?.status, pa?.attempts, pa?.attemptsBase, pa?.unconfirmed], ['pending', 1, 1, false], 'the operator chose to send it again');
      assert.deepEqual(await store.confirmPublished([b ?? 0, a ?? 0]), [b], 'only unknown posts');
      const pb = await store.getPost(b ?? 0);
      assert.equal(pb?.status, 'published');
      assert.ok(pb?.publishedAt instanceof Date);
      assert.deepEqual(await store.cancel(c ?? 0), { cancelled: true, status: 'unknown' });
      assert.equal((await store.status(1)).counts.unknown, 0);
    });

    it('fences every write of a claim by a claim token that only goes up, so a retried release cannot land on a newer claim', async () => {
      const { store, channel } = await fresh();
      const [p] = await store.schedulePosts([{ channelId: channel.id, text: 'a', runAt: ago(1000) }]);
      const [first] = await store.claim('worker-1-1', 1, 60_000);
      assert.deepEqual([first?.attempt, first?.token], [1, 1]);
      // A's release commits (its answer is lost); B, with the same worker id, claims again:
      // the same attempt number, a new token
      assert.deepEqual(await store.recordOutcomes('worker-1-1', [{ kind: 'released', postId: p ?? 0, token: first?.token ?? 0 }]), [p]);
      const [second] = await store.claim('worker-1-1', 1, 60_000);
      assert.deepEqual([second?.attempt, second?.token], [1, 2]);
      // A retries its release: fenced out, B's claim stands
      assert.deepEqual(await store.recordOutcomes('worker-1-1', [{ kind: 'released', postId: p ?? 0, token: first?.token ?? 0 }]), []);
      const row = await store.getPost(p ?? 0);
      assert.deepEqual([row?.status, row?.claimToken], ['processing', 2]);
      assert.deepEqual(await store.claim('worker-x', 1, 60_000), [], 'no third claim while B holds it');
    });

    it('records a confirmed publish that arrives after recovery took the post back, until it is claimed again', async () => {
      const { store, channel } = await fresh();
      const hold = await store.addChannel({ name: 'held', platform: 'webhook', settings: { url: 'http://127.0.0.1:1/x' }, onUnknown: 'hold' });
      const [h] = await store.schedulePosts([{ channelId: hold.id, text: 'h', runAt: ago(1000) }]);
      const [r, again] = await store.schedulePosts(['r', 'again'].map((text, i) => ({ channelId: channel.id, text, runAt: ago(900 - i) })));
      const claimed = await store.claim('slow', 3, 1);
      const token = new Map(claimed.map((c) => [c.id, c.token]));
      await new Promise((res) => setTimeout(res, 50));
      const back = await store.recoverExpired(5);
      assert.deepEqual(back.map((b) => [b.id, b.status]).sort((x, y) => Number(x[0]) - Number(y[0])), [
        [h, 'unknown'],
        [r, 'pending'],
        [again, 'pending'],
      ]);
      // `again` is claimed anew before the slow worker's answer comes
      const [next] = await store.claim('next', 1, 60_000);
      assert.equal(next?.id, r, 'oldest first');
      const [next2] = await store.claim('next', 1, 60_000);
      assert.equal(next2?.id, again);
      const late = (id: number | undefined) =>
        ({ kind: 'published', postId: id ?? 0, token: token.get(id ?? 0) ?? 0, externalId: `ext-${id ?? 0}`, externalUrl: null }) as const;
      assert.deepEqual(await store.recordOutcomes('slow', [late(h)]), [h], 'held unknown, then confirmed');
      const ph = await store.getPost(h ?? 0);
      assert.deepEqual([ph?.status, ph?.externalId, ph?.unconfirmed], ['published', `ext-${h ?? 0}`, false]);
      // its history: the lease that expired, then the late publish, both the slow worker's first attempt
      assert.deepEqual(
        (await store.postAttempts(h ?? 0)).map((a) => [a.attempt, a.workerId, a.outcome, a.externalId]),
        [
          [1, 'slow', 'expired', null],
          [1, 'slow', 'published', `ext-${h ?? 0}`],
        ],
      );
      assert.deepEqual(await store.recordOutcomes('slow', [late(again)]), [], 'claimed again since: the new claim decides');
      assert.equal((await store.getPost(again ?? 0))?.status, 'processing');
      assert.deepEqual(
        await store.recordOutcomes('slow', [{ kind: 'failed', postId: h ?? 0, token: token.get(h ?? 0) ?? 0, error: 'x' }]),
        [],
        'only a confirmed publish lands late',
      );
    });

    it('lands a late publish sent together with a claim, and does not claim that post again', async () => {
      const { store, channel } = await fresh();
      const [x] = await store.schedulePosts([{ channelId: channel.id, text: 'x', runAt: ago(1000) }]);
      const [claimed] = await store.claim('slow', 1, 1);
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual((await store.recoverExpired(5)).map((b) => [b.id, b.status]), [[x, 'pending']], 'due again, same token');
      const result = await store.exchange(
        'slow',
        [{ kind: 'published', postId: x ?? 0, token: claimed?.token ?? 0, externalId: 'ext-x', externalUrl: null }],
        5,
        60_000,
      );
      assert.deepEqual(result.applied, [x]);
      assert.deepEqual(result.claimed, [], 'the post it just published is not claimed again');
      const post = await store.getPost(x ?? 0);
      assert.deepEqual([post?.status, post?.externalId], ['published', 'ext-x']);
    });

    it('tells a worker after a lost answer what it holds and what became of its posts', async () => {
      const { store, channel } = await fresh();
      const [a, b, c] = await store.schedulePosts(['a', 'b', 'c'].map((text, i) => ({ channelId: channel.id, text, runAt: ago(1000 - i) })));
      const mine = await store.claim('w', 2, 60_000);
      await store.claim('other', 1, 60_000);
      await store.recordOutcomes('w', [{ kind: 'published', postId: a ?? 0, token: mine[0]?.token ?? 0, externalId: null, externalUrl: null }]);
      const held = await store.reconcile('w', [a ?? 0]);
      assert.deepEqual(
        held.map((h) => [h.id, h.status, h.workerId, h.token]).sort((x, y) => Number(x[0]) - Number(y[0])),
        [
          [a, 'published', 'w', 1],
          [b, 'processing', 'w', 1],
        ],
      );
      assert.ok(!held.some((h) => h.id === c), "another worker's post is not listed");
    });

    it('keeps counting attempts and the scheduled time through retries and an operator retry', async () => {
      const { store, channel } = await fresh();
      const scheduled = ago(5_000);
      const [p] = await store.schedulePosts([{ channelId: channel.id, text: 'a', runAt: scheduled }]);
      const [one] = await store.claim('w', 1, 60_000);
      await store.recordOutcomes('w', [{ kind: 'retry', postId: p ?? 0, token: one?.token ?? 0, error: 'HTTP 503', delayMs: 0, unconfirmed: false }]);
      const [two] = await store.claim('w', 1, 60_000);
      assert.equal(two?.scheduledAt.getTime(), scheduled.getTime(), 'retries move run_at, not the scheduled time');
      assert.deepEqual([two?.attempt, two?.attemptsBase], [2, 0]);
      await store.recordOutcomes('w', [{ kind: 'failed', postId: p ?? 0, token: two?.token ?? 0, error: 'gave up' }]);
      assert.deepEqual(await store.requeue([p ?? 0]), [p]);
      const [three] = await store.claim('w', 1, 60_000);
      assert.deepEqual([three?.attempt, three?.attemptsBase], [3, 2], 'attempt 3 over its life, the first since the operator retry');
      assert.equal(three?.scheduledAt.getTime(), scheduled.getTime());
    });

    it('renews the leases a worker still holds, and only those', async () => {
      const { store, channel } = await fresh();
      const [a, b] = await store.schedulePosts(['a', 'b'].map((text, i) => ({ channelId: channel.id, text, runAt: ago(1000 - i) })));
      await store.claim('w', 2, 1_000);
      const renewed = await store.renewLeases(
        'w',
        [
          { postId: a ?? 0, token: 1 },
          { postId: b ?? 0, token: 2 },
        ],
        120_000,
      );
      assert.deepEqual(renewed, [a], 'the wrong attempt is fenced out');
      assert.ok(((await store.getPost(a ?? 0))?.leaseExpiresAt?.getTime() ?? 0) > Date.now() + 100_000);
      assert.deepEqual(await store.renewLeases('intruder', [{ postId: b ?? 0, token: 1 }], 120_000), []);
    });

    it('serves the due query from the due index, whatever is scheduled for later', async () => {
      const { db, store, channel } = await fresh();
      const future = later(86_400_000);
      for (let i = 0; i < 4; i++) {
        await store.schedulePosts(Array.from({ length: 5_000 }, (_, j) => ({ channelId: channel.id, text: `l${i}-${j}`, runAt: future })));
      }
      await store.schedulePosts([{ channelId: channel.id, text: 'due', runAt: ago(10) }]);
      assert.equal(await store.countDue(), 1);
      const plan = await explainDue(db);
      assert.match(plan, /post_schedule_due/, `plan: ${plan}`);
    });

    it("claims from the due index's head, not by sorting every due post, after a bulk load of one channel's posts", async () => {
      const { db, store, channel } = await fresh();
      await store.schedulePosts(Array.from({ length: 3_000 }, (_, i) => ({ channelId: channel.id, text: `bulk ${i}`, runAt: ago(60_000 - i) })));
      const plan = await explainClaim(db, 25);
      assert.ok(plan.index, `the claim reads post_schedule_due: ${plan.text}`);
      assert.ok(!plan.sorts, `the claim sorts no due posts: ${plan.text}`);
      if (plan.rowsRead !== null) assert.ok(plan.rowsRead <= 50, `read ${plan.rowsRead} due posts to claim 25: ${plan.text}`);
    });

    testStoreContent(fresh);
  });

  describe(`store conformance, queue, scheduling under a key: ${dialect}`, () => {
    const fresh = storesWithChannel(dialect);
    const past = (ms: number) => new Date(Date.now() - ms);

    it('scheduleWithKey: one post per key, also when many connections race with it', async () => {
      const { store, channel, connect } = await fresh();
      const post = { channelId: channel.id, text: 'keyed', runAt: past(1000), parts: [{ text: 'keyed', images: [{ source: '/tmp/a.png', alt: 'a' }] }] };
      const first = await store.scheduleWithKey(post, 'k-1');
      assert.equal(first.created, true);
      assert.deepEqual(await store.scheduleWithKey(post, 'k-1'), { id: first.id, created: false });
      const saved = await store.getPost(first.id);
      assert.equal(saved?.scheduleKey, 'k-1');
      assert.deepEqual(saved?.parts, post.parts);
      const stores = await Promise.all(Array.from({ length: 6 }, () => connect()));
      const results = await Promise.all(stores.map((s) => s.scheduleWithKey({ ...post, text: 'race' }, 'k-race')));
      assert.equal(new Set(results.map((r) => r.id)).size, 1);
      assert.equal(results.filter((r) => r.created).length, 1);
      const all = await store.listPosts({ order: 'next', limit: 100 });
      assert.equal(all.length, 2, 'no second post, no orphaned content');
    });

    it('takes a key as long as the API and the CLI allow (MAX_KEY), in any script', async () => {
      const { store, channel } = await fresh();
      const key = '🔑'.repeat(10) + 'k'.repeat(MAX_KEY - 20);
      assert.equal(key.length, MAX_KEY);
      const first = await store.scheduleWithKey({ channelId: channel.id, text: 'long key', runAt: past(1000) }, key);
      assert.deepEqual(await store.scheduleWithKey({ channelId: channel.id, text: 'long key', runAt: past(1000) }, key), { id: first.id, created: false });
      assert.equal((await store.getPost(first.id))?.scheduleKey, key);
    });
  });

  describe(`store conformance, due times: ${dialect}`, () => {
    const migrated = migratedStores(dialect);

    it('finds the earliest pending run_at of a channel not paused, and counts what falls due ahead', async () => {
      const { store } = await migrated();
      assert.equal(await store.nextDue(), null, 'nothing pending');
      const a = await store.addChannel({ name: 'a', platform: 'file', settings: { path: '/tmp/a.jsonl' }, onUnknown: 'retry' });
      const b = await store.addChannel({ name: 'b', platform: 'file', settings: { path: '/tmp/b.jsonl' }, onUnknown: 'retry' });
      const now = Date.now();
      const [past, soon, later] = await store.schedulePosts([
        { channelId: a.id, text: 'past', runAt: new Date(now - 60_000) },
        { channelId: b.id, text: 'soon', runAt: new Date(now + 30_000) },
        { channelId: a.id, text: 'later', runAt: new Date(now + 120_000) },
      ]);
      assert.ok(past !== undefined && soon !== undefined && later !== undefined);
      const first = await store.nextDue();
      assert.equal(first?.runAt.getTime(), now - 60_000, 'a post already due: its (past) run_at');
      // how far from the database's now (its clock is this machine's): about a minute ago
      assert.ok(first !== null && first.inMs <= -60_000 + 1_000 && first.inMs > -60_000 - 30_000, `inMs ${first?.inMs}`);
      const next = await store.nextDue(new Date(now - 60_000));
      assert.ok(next !== null && next.inMs > 0 && next.inMs <= 30_000, `inMs ${next?.inMs}: in the future, within 30 s`);
      assert.equal((await store.nextDue(new Date(now - 60_000)))?.runAt.getTime(), now + 30_000, 'the next after a time already handed out');
      assert.equal(await store.nextDue(new Date(now + 120_000)), null);
      assert.equal(await store.countDue(), 1);
      assert.equal(await store.countDue(60_000), 2, 'soon falls due within a minute');
      assert.equal(await store.countDue(600_000), 3);

      // claimed: no longer pending
      const [claimed] = await store.claim('w', 1, 60_000);
      assert.equal(claimed?.id, past);
      assert.equal((await store.nextDue())?.runAt.getTime(), now + 30_000);
      // a paused channel's posts wait: not due for the daemon either
      await store.setChannelPaused('b', true);
      assert.equal((await store.nextDue())?.runAt.getTime(), now + 120_000);
      assert.equal(await store.countDue(600_000), 1);
      await store.setChannelPaused('b', false);
      // an edit moves it
      await store.editPost(later, { runAt: new Date(now + 10_000) });
      assert.equal((await store.nextDue())?.runAt.getTime(), now + 10_000);
      await store.cancel(later);
      await store.cancel(soon);
      assert.equal(await store.nextDue(), null, 'cancelled and processing posts are not due');
    });
  });
}

/** The database's plan for the due count, read through a separate connection. */
async function explainDue(db: TestDatabase): Promise<string> {
  const target = parseDatabaseUrl(db.url);
  if (target.dialect === 'sqlite') {
    const raw = new Database(target.path, { readonly: true });
    try {
      raw.exec('ANALYZE');
    } catch {
      // read-only: the plan is still meaningful without statistics
    }
    const rows = raw
      .prepare("EXPLAIN QUERY PLAN SELECT count(*) FROM post_schedule WHERE status = 'pending' AND run_at <= ?")
      .all(Date.now()) as { detail: string }[];
    raw.close();
    return rows.map((r) => r.detail).join(' | ');
  }
  if (target.dialect === 'mysql') {
    // MySQL's EXPLAIN is a table: the index the plan reads is its `key` column (a range of
    // post_schedule_due, status then run_at), after fresh statistics
    await rawQuery(target.url, 'ANALYZE TABLE post_schedule');
    const rows = await rawQuery<{ table: string; type: string; key: string | null }>(
      target.url,
      "EXPLAIN SELECT count(*) FROM post_schedule WHERE status = 'pending' AND run_at <= NOW(3)",
    );
    return rows.map((r) => `${r.table}: ${r.type} on ${r.key ?? '(no index)'}`).join(' | ');
  }
  const sql = postgres(target.url, { max: 1, onnotice: () => undefined, connection: { search_path: target.schema } });
  try {
    await sql.unsafe('ANALYZE post_schedule');
    const rows = await sql.unsafe("EXPLAIN SELECT count(*) FROM post_schedule WHERE status = 'pending' AND run_at <= now()");
    return rows.map((r) => String(Object.values(r)[0])).join(' | ');
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/**
 * The plan of a claim of `limit` posts, read through a separate connection: whether it
 * reads post_schedule_due, whether it sorts, and (PostgreSQL, which runs it: EXPLAIN
 * ANALYZE, rolled back) how many rows it read from post_schedule.
 */
async function explainClaim(db: TestDatabase, limit: number): Promise<{ index: boolean; sorts: boolean; rowsRead: number | null; text: string }> {
  const target = parseDatabaseUrl(db.url);
  if (target.dialect === 'sqlite') {
    const raw = new Database(target.path, { readonly: true });
    try {
      const rows = raw.prepare(`EXPLAIN QUERY PLAN ${SQLITE.claim}`).all('w', 0, 0, 0, Date.now(), '[]', limit) as { detail: string }[];
      const text = rows.map((r) => r.detail).join(' | ');
      return { index: /post_schedule USING INDEX post_schedule_due/.test(text), sorts: /TEMP B-TREE FOR ORDER BY/.test(text), rowsRead: null, text };
    } finally {
      raw.close();
    }
  }
  if (target.dialect === 'mysql') {
    const rows = await rawQuery<{ table: string; key: string | null; Extra: string | null }>(target.url, `EXPLAIN ${dueForClaim(false)}`, [0, limit]);
    const text = rows.map((r) => `${r.table}: ${r.key ?? '(no index)'} ${r.Extra ?? ''}`).join(' | ');
    return { index: rows.some((r) => r.table === 'post_schedule' && r.key === 'post_schedule_due'), sorts: /filesort/.test(text), rowsRead: null, text };
  }
  // one connection: the claim it runs is rolled back
  const sql = postgres(target.url, { max: 1, onnotice: () => undefined, connection: { search_path: target.schema } });
  try {
    await sql.unsafe('BEGIN');
    const [row] = await sql.unsafe(`EXPLAIN (ANALYZE, FORMAT JSON) ${EXCHANGE}`, ['w-plan', [], '[]', limit, 60_000, false, 0]);
    await sql.unsafe('ROLLBACK');
    const nodes: PgPlan[] = [];
    const walk = (n: PgPlan | undefined): void => {
      if (n === undefined) return;
      nodes.push(n);
      for (const c of n.Plans ?? []) walk(c);
    };
    walk((Object.values(row ?? {})[0] as { Plan: PgPlan }[])[0]?.Plan);
    // the part that picks the due posts (the CTE `due`), and its scans: of the due index or the table
    const due: PgPlan[] = [];
    const pick = (n: PgPlan | undefined): void => {
      if (n === undefined) return;
      due.push(n);
      for (const c of n.Plans ?? []) pick(c);
    };
    pick(nodes.find((n) => n['Subplan Name'] === 'CTE due'));
    const scans = due.filter((n) => n['Index Name'] === 'post_schedule_due' || (n['Relation Name'] === 'post_schedule' && n['Node Type'] === 'Seq Scan'));
    const text = due.map((n) => `${n['Node Type']}${n['Index Name'] === undefined ? '' : ` on ${n['Index Name']}`} (${n['Actual Rows'] ?? '?'} rows)`).join(' > ');
    return {
      index: scans.some((n) => n['Index Name'] === 'post_schedule_due'),
      // a sort of the table's rows (the final one sorts the claimed rows, c.run_at)
      sorts: due.some((n) => n['Node Type'] === 'Sort'),
      rowsRead: scans.reduce((sum, n) => sum + (n['Actual Rows'] ?? 0) * (n['Actual Loops'] ?? 1), 0),
      text,
    };
  } finally {
    await sql.end({ timeout: 1 });
  }
}

interface PgPlan {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Actual Rows'?: number;
  'Actual Loops'?: number;
  'Subplan Name'?: string;
  Plans?: PgPlan[];
}
