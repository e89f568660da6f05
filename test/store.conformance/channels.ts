import type { Dialect } from '../../src/store/store.ts';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { storesWithChannel } from '../helpers/conformance.ts';

/**
 * The channels part of the storage conformance suite (ChannelStore), run by
 * test/store.conformance.ts on every dialect.
 */
export function testChannelStore(dialect: Dialect): void {
  describe(`store conformance, channels: ${dialect}`, () => {
    const fresh = storesWithChannel(dialect);

    it('stores channels with their settings', async () => {
      const { store, channel } = await fresh();
      await store.addChannel({ name: 'hook', platform: 'webhook', settings: { url: 'http://127.0.0.1:1/x', secret: 's' }, onUnknown: 'hold' });
      assert.equal(channel.name, 'main');
      assert.equal(channel.enabled, true);
      assert.equal(channel.onUnknown, 'retry');
      const found = await store.findChannel('hook');
      assert.deepEqual(found?.settings, { url: 'http://127.0.0.1:1/x', secret: 's' });
      assert.equal(found?.onUnknown, 'hold');
      const changed = await store.updateChannel('hook', { onUnknown: 'retry', enabled: false });
      assert.deepEqual([changed?.onUnknown, changed?.enabled], ['retry', false]);
      assert.deepEqual([(await store.findChannel('hook'))?.onUnknown, (await store.findChannel('hook'))?.enabled], ['retry', false]);
      assert.equal((await store.updateChannel('hook', { enabled: true }))?.onUnknown, 'retry', 'what is not given stays');
      assert.equal(await store.updateChannel('nope', { enabled: true }), null);
      assert.equal(await store.findChannel('nope'), null);
      assert.deepEqual(
        (await store.listChannels()).map((c) => c.name),
        ['hook', 'main'],
      );
    });
  });

  describe(`store conformance, channels, paused and removed: ${dialect}`, () => {
    const fresh = storesWithChannel(dialect);
    const past = (ms: number) => new Date(Date.now() - ms);

    it("an operator's pause: its posts are neither counted due nor claimed, and wait with their attempts until resume", async () => {
      const { store, channel } = await fresh();
      const [id = 0] = await store.schedulePosts([{ channelId: channel.id, text: 'x', runAt: past(1000) }]);
      const paused = await store.setChannelPaused('main', true);
      assert.ok(paused?.pausedAt instanceof Date);
      assert.equal(await store.countDue(), 0);
      assert.deepEqual(await store.claim('w1', 5, 60_000), []);
      assert.equal((await store.getPost(id))?.attempts, 0);
      assert.ok((await store.findChannel('main'))?.pausedAt instanceof Date);
      // status says so, with the time it was paused
      const shown = (await store.status(1)).operatorPaused;
      assert.deepEqual(shown.map((p) => [p.channel, p.since.getTime()]), [['main', paused?.pausedAt?.getTime()]]);
      assert.equal((await store.setChannelPaused('main', false))?.pausedAt, null);
      assert.deepEqual((await store.status(1)).operatorPaused, []);
      assert.equal(await store.countDue(), 1);
      assert.deepEqual((await store.claim('w1', 5, 60_000)).map((c) => c.id), [id]);
      assert.equal(await store.setChannelPaused('nope', true), null);
    });

    it('removeChannel: refused while posts wait, cancels them when asked, keeps the history and frees the name', async () => {
      const { store, channel } = await fresh();
      const [a = 0, b = 0, c = 0] = await store.schedulePosts([
        { channelId: channel.id, text: 'a', runAt: past(1000) },
        { channelId: channel.id, text: 'b', runAt: new Date(Date.now() + 3_600_000) },
        { channelId: channel.id, text: 'c', runAt: past(500) },
      ]);
      const [claimed] = await store.claim('w1', 1, 60_000);
      assert.equal(claimed?.id, a);
      await store.recordOutcomes('w1', [{ kind: 'published', postId: a, token: claimed?.token ?? 0, externalId: 'e', externalUrl: null }]);
      assert.deepEqual(await store.removeChannel('main', false), { removed: false, cancelled: 0, blocking: { pending: 2 } });
      const [held] = await store.claim('w2', 1, 60_000);
      assert.equal(held?.id, c);
      const refused = await store.removeChannel('main', true);
      assert.equal(refused?.removed, false);
      assert.deepEqual(refused?.blocking, { pending: 1, processing: 1 });
      assert.equal((await store.getPost(b))?.status, 'pending', 'nothing cancelled while one is processing');
      await store.recordOutcomes('w2', [{ kind: 'failed', postId: c, token: held?.token ?? 0, error: 'no' }]);
      assert.deepEqual(await store.removeChannel('main', true), { removed: true, cancelled: 1, blocking: {} });
      assert.equal((await store.getPost(b))?.status, 'cancelled');
      assert.equal(await store.findChannel('main'), null);
      assert.equal((await store.listChannels()).length, 0);
      const shown = await store.getPost(a);
      assert.equal(shown?.status, 'published');
      assert.equal(shown?.channelName, `main (removed #${channel.id})`);
      assert.equal(await store.removeChannel('main', false), null);
      const again = await store.addChannel({ name: 'main', platform: 'file', settings: {}, onUnknown: 'retry' });
      assert.notEqual(again.id, channel.id);
    });
  });
}
