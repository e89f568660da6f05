import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Dialect, RateKey, Store } from '../../src/store/store.ts';
import type { Channel } from '../../src/types.ts';
import { migratedStores } from '../helpers/conformance.ts';

/**
 * The rate-limit part of the storage conformance suite (Store.takeRateSlot,
 * settleRateSlot, acquireSendSlot, releaseSendSlot, pauseChannel, status's paused channels), run by test/store.conformance.ts on every dialect.
 */
export function testRateStore(dialect: Dialect): void {
  describe(`store conformance, rate limits: ${dialect}`, () => {
    const migrated = migratedStores(dialect);

    async function fresh(): Promise<{ store: Store; channel: Channel; connect: () => Promise<Store> }> {
      const { store, connect } = await migrated();
      const channel = await store.addChannel({ name: 'limited', platform: 'file', settings: { path: '/tmp/x.jsonl' }, onUnknown: 'retry' });
      return { store, channel, connect };
    }
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

    it('grants a window its limit, refuses the next with the time until its oldest slot leaves, then grants again', async () => {
      const { store, channel } = await fresh();
      const keys: RateKey[] = [{ key: 'w', limit: 3, windowMs: 600 }];
      for (let i = 0; i < 3; i++) assert.equal((await store.takeRateSlot(channel.id, keys)).granted, true);
      const refused = await store.takeRateSlot(channel.id, keys);
      assert.equal(refused.granted, false);
      assert.ok(!refused.granted && refused.waitMs > 0 && refused.waitMs <= 600, JSON.stringify(refused));
      assert.equal(!refused.granted && refused.paused, false);
      await sleep(refused.granted ? 0 : refused.waitMs + 20);
      assert.equal((await store.takeRateSlot(channel.id, keys)).granted, true);
    });

    it('takes every window of a send or none: a full window refuses the others too', async () => {
      const { store, channel } = await fresh();
      const posts: RateKey = { key: 'posts', limit: 1, windowMs: 60_000 };
      const requests: RateKey = { key: 'requests', limit: 2, windowMs: 60_000 };
      assert.equal((await store.takeRateSlot(channel.id, [posts, requests])).granted, true);
      // posts is full: requests keeps its one free slot
      assert.equal((await store.takeRateSlot(channel.id, [posts, requests])).granted, false);
      assert.equal((await store.takeRateSlot(channel.id, [requests])).granted, true);
      assert.equal((await store.takeRateSlot(channel.id, [requests])).granted, false);
      // windows are separate keys: another key is untouched
      assert.equal((await store.takeRateSlot(channel.id, [{ key: 'other', limit: 1, windowMs: 60_000 }])).granted, true);
    });

    it('10 concurrent takers on several connections of a limit of 3 get exactly 3 slots', async () => {
      const { store, channel, connect } = await fresh();
      const stores = [store, ...(await Promise.all([1, 2, 3, 4].map(() => connect())))];
      const keys: RateKey[] = [
        { key: 'b', limit: 3, windowMs: 60_000 },
        { key: 'a', limit: 5, windowMs: 60_000 },
      ];
      const grants = await Promise.all(Array.from({ length: 10 }, (_, i) => (stores[i % stores.length] ?? store).takeRateSlot(channel.id, keys)));
      assert.equal(grants.filter((g) => g.granted).length, 3);
      // the refused took nothing: "a" has 2 free slots left
      assert.equal((await store.takeRateSlot(channel.id, [{ key: 'a', limit: 5, windowMs: 60_000 }])).granted, true);
      assert.equal((await store.takeRateSlot(channel.id, [{ key: 'a', limit: 5, windowMs: 60_000 }])).granted, true);
      assert.equal((await store.takeRateSlot(channel.id, [{ key: 'a', limit: 5, windowMs: 60_000 }])).granted, false);
    });

    it('a settled slot counts from the end of its send: the window frees that much later', async () => {
      const { store, channel } = await fresh();
      const keys: RateKey[] = [{ key: 'w', limit: 1, windowMs: 500 }];
      const taken = await store.takeRateSlot(channel.id, keys);
      assert.ok(taken.granted);
      assert.ok(Math.abs(taken.at - Date.now()) < 5_000, 'the slot is dated on the database clock');
      await sleep(300);
      await store.settleRateSlot(['w'], taken.at);
      // free 500 ms after the settle, not after the take
      const refused = await store.takeRateSlot(channel.id, keys);
      assert.ok(!refused.granted && refused.waitMs > 300, JSON.stringify(refused));
      // a window that is not there is left alone
      await store.settleRateSlot(['absent'], taken.at);
      await sleep(refused.granted ? 0 : refused.waitMs + 20);
      assert.equal((await store.takeRateSlot(channel.id, keys)).granted, true);
    });

    it('takes and settles of the same windows from several connections at once never deadlock', async () => {
      const { store, channel, connect } = await fresh();
      const stores = [store, ...(await Promise.all([1, 2, 3, 4, 5].map(() => connect())))];
      // two windows per send, as a channel with posts and requests limits has
      const keys: RateKey[] = [
        { key: `channel:${channel.id}:posts`, limit: 1_000, windowMs: 60_000 },
        { key: `channel:${channel.id}:requests`, limit: 1_000, windowMs: 60_000 },
      ];
      let granted = 0;
      await Promise.all(
        stores.map(async (s) => {
          for (let i = 0; i < 25; i++) {
            const grant = await s.takeRateSlot(channel.id, keys);
            if (!grant.granted) continue;
            granted++;
            // settle in the other order of keys: the store must lock them in one order anyway
            await s.settleRateSlot(keys.map((k) => k.key).reverse(), grant.at);
          }
        }),
      );
      assert.equal(granted, 150, 'every take granted, none failed');
    });

    it('a send that outlives its window still counts at its end: the network never sees three in a window of two', async () => {
      const { store, channel } = await fresh();
      const keys: RateKey[] = [{ key: 'slow', limit: 2, windowMs: 200 }];
      const a = await store.takeRateSlot(channel.id, keys);
      assert.ok(a.granted);
      // A is still in flight when its window has passed: B is granted, and its take drops A's stamp
      await sleep(300);
      assert.ok((await store.takeRateSlot(channel.id, keys)).granted);
      // A ends now: its end is counted with B, so a third send waits
      await store.settleRateSlot(['slow'], a.at);
      const c = await store.takeRateSlot(channel.id, keys);
      assert.ok(!c.granted && c.waitMs > 100, JSON.stringify(c));
    });

    it('a concurrency cap of 2: of 10 concurrent senders on several connections exactly 2 get a send slot; a release or an expiry frees one', async () => {
      const { store, connect } = await fresh();
      const stores = [store, ...(await Promise.all([1, 2, 3].map(() => connect())))];
      const got = await Promise.all(Array.from({ length: 10 }, (_, i) => (stores[i % stores.length] ?? store).acquireSendSlot('c', 2, `send-${i}`, 60_000)));
      const holders = got.flatMap((ok, i) => (ok ? [`send-${i}`] : []));
      assert.equal(holders.length, 2);
      assert.equal(await store.acquireSendSlot('c', 2, 'late', 60_000), false);
      // another channel's cap is its own
      assert.equal(await store.acquireSendSlot('other', 1, 'elsewhere', 60_000), true);
      await store.releaseSendSlot('c', holders[0] ?? '');
      assert.equal(await store.acquireSendSlot('c', 2, 'late', 60_000), true);
      assert.equal(await store.acquireSendSlot('c', 2, 'later', 60_000), false);
      // a slot whose holder died (never released) is free once it expires
      assert.equal(await store.acquireSendSlot('short', 1, 'dies', 200), true);
      assert.equal(await store.acquireSendSlot('short', 1, 'next', 60_000), false);
      await sleep(250);
      assert.equal(await store.acquireSendSlot('short', 1, 'next', 60_000), true);
    });

    it('a lower limit than the slots already taken waits for enough of them to leave', async () => {
      const { store, channel } = await fresh();
      for (let i = 0; i < 4; i++) assert.equal((await store.takeRateSlot(channel.id, [{ key: 'w', limit: 4, windowMs: 60_000 }])).granted, true);
      const refused = await store.takeRateSlot(channel.id, [{ key: 'w', limit: 2, windowMs: 60_000 }]);
      assert.ok(!refused.granted && refused.waitMs > 50_000, JSON.stringify(refused));
    });

    it('a paused channel grants nothing until the pause is over; a shorter pause never cuts a longer one; status shows it', async () => {
      const { store, channel } = await fresh();
      const other = await store.addChannel({ name: 'free', platform: 'file', settings: { path: '/tmp/y.jsonl' }, onUnknown: 'retry' });
      const keys: RateKey[] = [{ key: 'w', limit: 100, windowMs: 60_000 }];
      await store.pauseChannel(channel.id, 700, 'mastodon: rate limited (HTTP 429)');
      await store.pauseChannel(channel.id, 100, 'shorter');
      const refused = await store.takeRateSlot(channel.id, keys);
      assert.ok(!refused.granted && refused.paused && refused.waitMs > 400 && refused.waitMs <= 700, JSON.stringify(refused));
      // the pause is the channel's: another channel is not paused
      assert.equal((await store.takeRateSlot(other.id, [{ key: 'x', limit: 1, windowMs: 1000 }])).granted, true);
      const report = await store.status(1);
      assert.equal(report.pausedChannels.length, 1);
      assert.equal(report.pausedChannels[0]?.channel, 'limited');
      assert.equal(report.pausedChannels[0]?.reason, 'mastodon: rate limited (HTTP 429)');
      assert.ok((report.pausedChannels[0]?.until.getTime() ?? 0) > Date.now());
      await sleep(refused.granted ? 0 : refused.waitMs + 20);
      assert.equal((await store.takeRateSlot(channel.id, keys)).granted, true);
      assert.deepEqual((await store.status(1)).pausedChannels, []);
    });
  });
}
