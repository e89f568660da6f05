import type { Dialect } from '../../src/store/store.ts';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { storesWithChannel } from '../helpers/conformance.ts';

/**
 * The posts part of the storage conformance suite (PostsStore: listPosts, postAttempts,
 * editPost), run by test/store.conformance.ts on every dialect.
 */
export function testPostsStore(dialect: Dialect): void {
  describe(`store conformance, posts: ${dialect}`, () => {
    const fresh = storesWithChannel(dialect);
    const past = (ms: number) => new Date(Date.now() - ms);

    it('listPosts: filters by status, channel and time, in both orders, page by page without repeats', async () => {
      const { store, channel } = await fresh();
      const other = await store.addChannel({ name: 'other', platform: 'file', settings: { path: '/tmp/y.jsonl' }, onUnknown: 'retry' });
      const base = Date.now() - 60_000;
      const ids = await store.schedulePosts(
        Array.from({ length: 7 }, (_, i) => ({ channelId: i % 2 === 0 ? channel.id : other.id, text: `post ${i}\nsecond line`, runAt: new Date(base + (i % 3) * 1000) })),
      );
      await store.cancel(ids[0] ?? 0);
      const pages: number[][] = [];
      let after: { runAt: Date; id: number } | undefined;
      for (;;) {
        const page = await store.listPosts({ order: 'next', limit: 3, ...(after === undefined ? {} : { after }) });
        if (page.length === 0) break;
        pages.push(page.map((p) => p.id));
        const last = page[page.length - 1];
        if (last === undefined) break;
        after = { runAt: last.runAt, id: last.id };
      }
      const flat = pages.flat();
      assert.equal(flat.length, 7);
      assert.equal(new Set(flat).size, 7);
      const all = await store.listPosts({ order: 'next', limit: 10 });
      assert.deepEqual(all.map((p) => p.id), flat);
      for (let i = 1; i < all.length; i++) assert.ok((all[i - 1]?.runAt.getTime() ?? 0) <= (all[i]?.runAt.getTime() ?? 0));
      const newest = await store.listPosts({ order: 'newest', limit: 10 });
      assert.deepEqual(newest.map((p) => p.id), [...flat].reverse());
      assert.deepEqual((await store.listPosts({ order: 'next', limit: 10, statuses: ['cancelled'] })).map((p) => p.id), [ids[0]]);
      const others = await store.listPosts({ order: 'next', limit: 10, channelId: other.id });
      assert.equal(others.length, 3);
      assert.ok(others.every((p) => p.channel === 'other'));
      const window = await store.listPosts({ order: 'next', limit: 10, from: new Date(base + 1000), to: new Date(base + 2000) });
      assert.ok(window.length > 0 && window.every((p) => p.runAt.getTime() === base + 1000));
      assert.equal(all[0]?.text.startsWith('post '), true);
    });

    it('records each attempt that ends, with its outcome and error; a release is none', async () => {
      const { store, channel } = await fresh();
      const [id = 0] = await store.schedulePosts([{ channelId: channel.id, text: 'x', runAt: past(1000) }]);
      let [c] = await store.claim('w1', 1, 60_000);
      await store.recordOutcomes('w1', [{ kind: 'retry', postId: id, token: c?.token ?? 0, error: 'HTTP 503', delayMs: -1000, unconfirmed: false }]);
      [c] = await store.claim('w2', 1, 60_000);
      await store.recordOutcomes('w2', [{ kind: 'released', postId: id, token: c?.token ?? 0 }]);
      [c] = await store.claim('w3', 1, 60_000);
      await store.recordOutcomes('w3', [{ kind: 'published', postId: id, token: c?.token ?? 0, externalId: 'ext-1', externalUrl: 'https://x/1' }]);
      const attempts = await store.postAttempts(id);
      assert.deepEqual(
        attempts.map((a) => [a.attempt, a.workerId, a.outcome, a.error, a.externalId, a.externalUrl]),
        [
          [1, 'w1', 'retry', 'HTTP 503', null, null],
          [2, 'w3', 'published', null, 'ext-1', 'https://x/1'],
        ],
      );
      assert.ok(attempts.every((a) => a.startedAt !== null && a.startedAt.getTime() <= a.finishedAt.getTime()));
    });

    it("an attempt claimed ahead starts when its publish did: its claim's time plus what it waited in the worker", async () => {
      const { store, channel } = await fresh();
      const ids = await store.schedulePosts(['now', 'ahead', 'failed ahead'].map((text) => ({ channelId: channel.id, text, runAt: past(1000) })));
      const claimed = await store.claim('w1', 3, 60_000);
      const token = (id: number) => claimed.find((c) => c.id === id)?.token ?? 0;
      const [now = 0, ahead = 0, failedAhead = 0] = ids;
      await store.recordOutcomes('w1', [
        { kind: 'published', postId: now, token: token(now), externalId: null, externalUrl: null },
        { kind: 'published', postId: ahead, token: token(ahead), externalId: null, externalUrl: null, waitedMs: 40_000 },
        { kind: 'failed', postId: failedAhead, token: token(failedAhead), error: 'HTTP 400', waitedMs: 30_000 },
      ]);
      const [atOnce, waited, failed] = (await Promise.all(ids.map((id) => store.postAttempts(id)))).map((list) => list[0]);
      const startOf = (a: typeof atOnce) => a?.startedAt?.getTime() ?? Number.NaN;
      // the three were claimed by one statement: the same start but for what they waited
      assert.equal(startOf(waited) - startOf(atOnce), 40_000);
      assert.equal(startOf(failed) - startOf(atOnce), 30_000);
      assert.equal(failed?.outcome, 'failed');
    });

    it('records one attempt per outcome an exchange lands, none for one it does not (a stale claim)', async () => {
      const { store, channel } = await fresh();
      const ids = await store.schedulePosts(Array.from({ length: 6 }, (_, i) => ({ channelId: channel.id, text: `p${i}`, runAt: past(1000 - i) })));
      const claimed = await store.claim('w1', 6, 60_000);
      assert.equal(claimed.length, 6);
      const [stale, ...rest] = claimed;
      const published = rest.slice(0, 4).map((c) => ({ kind: 'published', postId: c.id, token: c.token, externalId: `ext-${c.id}`, externalUrl: `https://x/${c.id}` }) as const);
      const failed = rest[4];
      const applied = await store.recordOutcomes('w1', [
        ...published,
        { kind: 'published', postId: stale?.id ?? 0, token: (stale?.token ?? 0) - 1, externalId: 'old', externalUrl: null },
        { kind: 'failed', postId: failed?.id ?? 0, token: failed?.token ?? 0, error: 'HTTP 400' },
      ]);
      assert.deepEqual([...applied].sort((a, b) => a - b), [...published.map((p) => p.postId), failed?.id ?? 0].sort((a, b) => a - b));
      const attempts = await Promise.all(ids.map((id) => store.postAttempts(id)));
      for (const [i, id] of ids.entries()) {
        const list = attempts[i] ?? [];
        if (id === stale?.id) {
          assert.deepEqual(list, [], 'a stale claim records no attempt');
          assert.equal((await store.getPost(id))?.status, 'processing');
        } else if (id === failed?.id) {
          assert.deepEqual(list.map((a) => [a.attempt, a.outcome, a.error, a.externalId]), [[1, 'failed', 'HTTP 400', null]]);
        } else {
          assert.deepEqual(list.map((a) => [a.attempt, a.workerId, a.outcome, a.error, a.externalId, a.externalUrl]), [[1, 'w1', 'published', null, `ext-${id}`, `https://x/${id}`]]);
          assert.ok(list[0]?.startedAt instanceof Date && list[0].startedAt.getTime() <= list[0].finishedAt.getTime());
          assert.equal((await store.getPost(id))?.externalId, `ext-${id}`);
        }
      }
    });

    it('records one attempt for a post whose outcome an exchange carries twice, and none from its older claim', async () => {
      const { store, channel } = await fresh();
      const [id = 0] = await store.schedulePosts([{ channelId: channel.id, text: 'x', runAt: past(1000) }]);
      const [c] = await store.claim('w1', 1, 60_000);
      const token = c?.token ?? 0;
      const current = { kind: 'published', postId: id, token, externalId: 'ext', externalUrl: null } as const;
      const applied = await store.recordOutcomes('w1', [{ ...current, token: token - 1, externalId: 'stale' }, current, current]);
      assert.deepEqual([...new Set(applied)], [id]);
      assert.deepEqual((await store.postAttempts(id)).map((a) => [a.attempt, a.outcome, a.externalId]), [[1, 'published', 'ext']]);
      assert.equal((await store.getPost(id))?.externalId, 'ext');
    });

    it('records a lease that expired as an attempt', async () => {
      const { store, channel } = await fresh();
      const [id = 0] = await store.schedulePosts([{ channelId: channel.id, text: 'x', runAt: past(1000) }]);
      await store.claim('dead', 1, 1);
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal((await store.recoverExpired(5)).length, 1);
      const [a] = await store.postAttempts(id);
      assert.equal(a?.outcome, 'expired');
      assert.equal(a?.workerId, 'dead');
      assert.match(a?.error ?? '', /lease expired/);
    });

    it('editPost: a pending post only; a claimed one is left alone', async () => {
      const { store, channel } = await fresh();
      const [id = 0, other = 0] = await store.schedulePosts([
        { channelId: channel.id, text: 'old', runAt: new Date(Date.now() + 3_600_000) },
        { channelId: channel.id, text: 'due', runAt: past(1000) },
      ]);
      const at = new Date(Date.now() + 7_200_000);
      assert.deepEqual(await store.editPost(id, { content: { text: 'new', parts: [{ text: 'new', images: [] }] }, runAt: at }), { edited: true, status: 'pending' });
      const post = await store.getPost(id);
      assert.equal(post?.text, 'new');
      assert.equal(post?.runAt.getTime(), at.getTime());
      assert.equal(post?.scheduledAt.getTime(), at.getTime());
      await store.claim('w1', 5, 60_000);
      assert.deepEqual(await store.editPost(other, { runAt: at }), { edited: false, status: 'processing' });
      assert.deepEqual(await store.editPost(999_999, { runAt: at }), { edited: false, status: null });
    });
  });
}
