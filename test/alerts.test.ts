import assert from 'node:assert/strict';
import { after, afterEach, describe, it } from 'node:test';
import { alertText, fitText } from '../src/alerts/text.ts';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import type { Store } from '../src/store/store.ts';
import { createTestDatabase, DIALECTS } from './helpers/databases.ts';
import { killAll, run, testEnv } from './helpers/processes.ts';
import { startReceiver } from './helpers/receiver.ts';

/**
 * ALERT_CHANNEL end to end: real `cron` processes and workers, a real database, a local
 * webhook receiver standing in for both the failing channel and the alert channel.
 */
const SECRET = 'sk_live_9f8e7d6c5b4a39281706f5e4d3c2b1a0';
const ALERT = /^post-scheduler: post (\d+) on (\S+) (failed|outcome unknown)/;

for (const dialect of DIALECTS) {
  describe(`alerts on ${dialect}`, () => {
    const cleanups: (() => Promise<void>)[] = [];
    afterEach(async () => {
      killAll();
      for (const c of cleanups.splice(0).reverse()) await c();
    });
    after(() => killAll());

    it('reports each failed and unknown post once to the alert channel, never a published one nor the alert channel own, without secrets', async () => {
      const db = await createTestDatabase(dialect);
      cleanups.push(() => db.drop());
      // the network edge: answers by the post's text
      const receiver = await startReceiver((d) => {
        if (ALERT.test(d.text) || d.text.startsWith('ok')) return { status: 200 };
        if (d.text === 'bad' || d.text === 'ops-bad') return { status: 400, body: JSON.stringify({ error: 'denied', api_key: SECRET }) };
        if (d.text === 'gateway') return { status: 502 };
        if (d.text === 'flaky') return { status: 408 };
        return { status: 500 };
      });
      cleanups.push(() => receiver.close());
      const store: Store = await openStore(parseDatabaseUrl(db.url));
      cleanups.push(() => store.close());
      await store.migrate();
      const hook = await store.addChannel({ name: 'hook', platform: 'webhook', settings: { url: `${receiver.url}/hook` }, onUnknown: 'hold' });
      const ops = await store.addChannel({ name: 'ops', platform: 'webhook', settings: { url: `${receiver.url}/ops` }, onUnknown: 'hold' });
      const runAt = new Date(Date.now() - 1_000);
      const [ok1, ok2, bad, gateway, flaky] = await store.schedulePosts(
        ['ok1', 'ok2', 'bad', 'gateway', 'flaky'].map((text) => ({ channelId: hook.id, text, runAt })),
      );
      const [opsBad] = await store.schedulePosts([{ channelId: ops.id, text: 'ops-bad', runAt }]);

      const env = testEnv(db.url, { ALERT_CHANNEL: 'ops', MAX_ATTEMPTS: '2', RETRY_BASE_MS: '0', RETRY_MAX_MS: '0' });
      const outputs: string[] = [];
      for (let cycle = 0; cycle < 4; cycle++) {
        const r = await run(['cron'], env, 60_000);
        outputs.push(r.stdout + r.stderr);
        assert.ok(r.code === 0 || r.code === 1, r.stdout + r.stderr);
      }
      assert.equal((await store.getPost(ok1 ?? 0))?.status, 'published');
      assert.equal((await store.getPost(ok2 ?? 0))?.status, 'published');
      assert.equal((await store.getPost(bad ?? 0))?.status, 'failed');
      assert.equal((await store.getPost(gateway ?? 0))?.status, 'unknown');
      assert.equal((await store.getPost(flaky ?? 0))?.status, 'failed');
      assert.equal((await store.getPost(opsBad ?? 0))?.status, 'failed');

      const alerts = receiver.deliveries.filter((d) => ALERT.test(d.text));
      const reported = alerts.map((d) => Number(ALERT.exec(d.text)?.[1]));
      assert.deepEqual(reported.sort((a, b) => a - b), [bad, gateway, flaky].sort((a, b) => (a ?? 0) - (b ?? 0)), alerts.map((d) => d.text).join('\n'));
      const byId = new Map(alerts.map((d) => [Number(ALERT.exec(d.text)?.[1]), d.text]));
      assert.match(byId.get(bad ?? 0) ?? '', /^post-scheduler: post \d+ on hook failed: webhook .*HTTP 400/);
      assert.match(byId.get(gateway ?? 0) ?? '', /^post-scheduler: post \d+ on hook outcome unknown .*HTTP 502/);
      assert.match(byId.get(flaky ?? 0) ?? '', /gave up after 2 attempts/);
      for (const text of [...alerts.map((d) => d.text), ...outputs]) assert.ok(!text.includes(SECRET), `secret shown: ${text}`);
      // the alert posts themselves were published on the alert channel, one per outcome
      assert.equal((await store.status(1)).counts.published, 2 + 3);
    });
  });
}

describe('alert text', () => {
  it('hides credentials in the error, and is cut to what the channel takes', () => {
    const text = alertText({
      postId: 7,
      token: 1,
      outcome: 'failed',
      channelName: 'blog',
      error: `HTTP 401 from https://bot:hunter2hunter2@example.com/x?access_token=abc123 {"password":"hunter2"} Bearer ${SECRET}`,
    });
    assert.match(text, /^post-scheduler: post 7 on blog failed: HTTP 401/);
    for (const secret of ['hunter2', 'abc123', SECRET]) assert.ok(!text.includes(secret), text);
    const cut = fitText(text, (t) => t.length <= 50);
    assert.ok(cut !== null && cut.length <= 50 && cut.length >= 49 && cut.endsWith('…'), cut ?? 'null');
    assert.ok(cut.startsWith('post-scheduler: post 7 on blog'));
    assert.equal(fitText('short', () => true), 'short');
    assert.equal(fitText(text, () => false), null);
  });
});
