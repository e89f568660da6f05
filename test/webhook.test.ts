import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { PermanentPublishError, RetryablePublishError, type PublishRequest } from '../src/publishers/publisher.ts';
import { parseRetryAfter, webhookPublisher } from '../src/publishers/webhook.ts';
import type { Channel } from '../src/types.ts';
import { startReceiver, type Answer, type Receiver } from './helpers/receiver.ts';

/** The webhook publisher against a real local HTTP server. */
describe('webhook publisher', () => {
  const receivers: Receiver[] = [];
  const publisher = webhookPublisher.createPublisher({ timeoutMs: 500, concurrency: 4 });
  after(async () => {
    await publisher.close();
    for (const r of receivers) await r.close();
  });

  async function receiver(answer: Answer) {
    const r = await startReceiver(() => answer);
    receivers.push(r);
    return r;
  }

  const channel = (settings: Record<string, unknown>): Channel => ({
    id: 1,
    name: 'hook',
    platform: 'webhook',
    onUnknown: 'hold',
    settings,
    enabled: true,
    createdAt: new Date(),
  });

  const request = (settings: Record<string, unknown>, attempt = 1): PublishRequest => ({
    postId: 42,
    attempt,
    text: 'Hello, world',
    runAt: new Date('2026-11-28T12:00:00.000Z'),
    idempotencyKey: 'key-42',
    channel: channel(settings),
    signal: new AbortController().signal,
  });

  it('POSTs the post as JSON with a stable Idempotency-Key and an HMAC signature', async () => {
    const r = await receiver({ status: 201, body: '{"id":"ext-9","url":"https://social.example/p/9"}' });
    const result = await publisher.publish(request({ url: r.url, secret: 'sekret' }));
    await publisher.publish(request({ url: r.url, secret: 'sekret' }, 2));
    assert.deepEqual(result, { externalId: 'ext-9', externalUrl: 'https://social.example/p/9' });
    const [first, second] = r.deliveries;
    assert.deepEqual(JSON.parse(first?.body ?? ''), {
      id: 42,
      channel: 'hook',
      text: 'Hello, world',
      run_at: '2026-11-28T12:00:00.000Z',
      attempt: 1,
    });
    assert.equal(first?.idempotencyKey, 'key-42');
    assert.equal(second?.idempotencyKey, 'key-42', 'the same key on a retry');
    assert.equal(first?.signature, 'sha256=' + createHmac('sha256', 'sekret').update(first?.body ?? '').digest('hex'));
  });

  it("fails a text longer than the channel's max_length at once, sending nothing", async () => {
    const r = await receiver({ status: 200 });
    await assert.rejects(
      publisher.publish({ ...request({ url: r.url, max_length: 4 }), text: 'hello' }),
      (e: unknown) => e instanceof PermanentPublishError && /text is 5 characters; the channel takes at most 4/.test(e.message),
    );
    assert.equal(r.deliveries.length, 0);
    assert.equal(webhookPublisher.checkText('héllo', { max_length: 5 }), null, 'counted in characters, not bytes');
  });

  it('treats a 2xx without JSON as published', async () => {
    const r = await receiver({ status: 204, body: '' });
    assert.deepEqual(await publisher.publish(request({ url: r.url })), { externalId: null, externalUrl: null });
  });

  // 'unknown': retryable, but the receiver may have processed it (the channel's policy decides)
  const classes: [number, 'retry' | 'unknown' | 'permanent'][] = [
    [400, 'permanent'],
    [401, 'permanent'],
    [404, 'permanent'],
    [422, 'permanent'],
    [408, 'retry'],
    [429, 'retry'],
    [503, 'retry'],
    [500, 'unknown'],
    [502, 'unknown'],
    [504, 'unknown'],
    [301, 'permanent'],
  ];
  for (const [status, kind] of classes) {
    const what = { retry: 'retryable, not delivered', unknown: 'retryable, maybe delivered', permanent: 'a permanent failure' }[kind];
    it(`HTTP ${status} is ${what}`, async () => {
      const r = await receiver({ status });
      await assert.rejects(publisher.publish(request({ url: r.url })), (e: unknown) =>
        kind === 'permanent' ? e instanceof PermanentPublishError : e instanceof RetryablePublishError && e.maybeDelivered === (kind === 'unknown'),
      );
    });
  }

  it('passes Retry-After on', async () => {
    const r = await receiver({ status: 429, headers: { 'retry-after': '7' } });
    await assert.rejects(publisher.publish(request({ url: r.url })), (e: unknown) => {
      assert.ok(e instanceof RetryablePublishError);
      assert.equal(e.retryAfterMs, 7_000);
      return true;
    });
    assert.equal(parseRetryAfter('Sat, 28 Nov 2026 12:00:10 GMT', Date.parse('2026-11-28T12:00:00Z')), 10_000);
    assert.equal(parseRetryAfter('soon'), null);
  });

  it('times out a receiver that never answers, as retryable with an unknown outcome (the request was sent)', async () => {
    const r = await receiver({ hang: true });
    await assert.rejects(
      publisher.publish(request({ url: r.url })),
      (e: unknown) => e instanceof RetryablePublishError && e.maybeDelivered && /no answer within 500 ms after the request was sent/.test(e.message),
    );
  });

  it('treats a refused connection as retryable', async () => {
    const closed = await receiver({ status: 200 });
    const url = closed.url;
    await closed.close();
    await assert.rejects(
      publisher.publish(request({ url })),
      (e: unknown) => e instanceof RetryablePublishError && !e.maybeDelivered && /ECONNREFUSED/.test(e.message),
      'nothing was sent: a plain retry',
    );
  });

  it('reads at most 64 KiB of a huge answer and does not hang', async () => {
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(1024 * 1024, 'x');
      let sent = 0;
      const write = () => {
        while (sent < 50 && res.write(chunk)) sent++;
        if (sent >= 50) res.end();
        else res.once('drain', write);
      };
      write();
      res.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const result = await publisher.publish(request({ url: `http://127.0.0.1:${port}/big` }));
      assert.deepEqual(result, { externalId: null, externalUrl: null });
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it('hides the secret and URL password of a channel', () => {
    assert.deepEqual(webhookPublisher.redactSettings({ url: 'https://bot:pw@hooks.example/x', secret: 's' }), {
      url: 'https://bot:***@hooks.example/x',
      secret: '***',
    });
  });
});
