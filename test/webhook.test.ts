import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { PermanentPublishError, RetryablePublishError, type PublishRequest } from '../src/publishers/publisher.ts';
import { answerExcerpt } from '../src/publishers/redact.ts';
import { parseRetryAfter, webhookPublisher } from '../src/publishers/webhook.ts';
import type { Channel, OnUnknown } from '../src/types.ts';
import { startReceiver, type Answer, type Receiver } from './helpers/receiver.ts';

/** The webhook publisher against a real local HTTP server. */
describe('webhook publisher', () => {
  const receivers: Receiver[] = [];
  // the receivers are on 127.0.0.1: the SSRF guard is tested on its own below
  const publisher = webhookPublisher.createPublisher({ timeoutMs: 500, concurrency: 4, allowPrivateNetwork: true });
  after(async () => {
    await publisher.close();
    for (const r of receivers) await r.close();
  });

  async function receiver(answer: Answer) {
    const r = await startReceiver(() => answer);
    receivers.push(r);
    return r;
  }

  const channel = (settings: Record<string, unknown>, onUnknown: Channel['onUnknown'] = 'hold'): Channel => ({
    id: 1,
    name: 'hook',
    platform: 'webhook',
    onUnknown,
    settings,
    enabled: true,
    credentials: null,
    attention: null,
    createdAt: new Date(),
  });

  const request = (settings: Record<string, unknown>, attempt = 1): PublishRequest => ({
    postId: 42,
    attempt,
    text: 'Hello, world',
    runAt: new Date('2026-11-28T12:00:00.000Z'),
    idempotencyKey: 'key-42',
    images: [],
    part: { index: 0, count: 1 },
    replyTo: null,
    channel: channel(settings),
    credentials: null,
    saveCredentials: async () => undefined,
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

  it('signs as Standard Webhooks specifies, so that its maintained library verifies a delivery and refuses a forgery', async () => {
    const r = await receiver({ status: 200 });
    const whsec = `whsec_${Buffer.from('a signing key of 32 random bytes').toString('base64')}`;
    await publisher.publish(request({ url: r.url, secret: 'sekret' }));
    await publisher.publish(request({ url: r.url, secret: whsec }));
    const [plain, standard] = r.deliveries;
    const headers = (d: typeof plain) => {
      const h: Record<string, string> = {};
      for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) h[name] = String(d?.headers[name] ?? '');
      return h;
    };
    assert.equal(headers(plain)['webhook-id'], 'key-42', 'the message id is the idempotency key, the same on every retry');
    // any other secret is its UTF-8 bytes: the library's raw format
    assert.deepEqual(new Webhook('sekret', { format: 'raw' }).verify(plain?.body ?? '', headers(plain)), JSON.parse(plain?.body ?? ''));
    // a whsec_ secret is used as the specification says
    assert.deepEqual(new Webhook(whsec).verify(standard?.body ?? '', headers(standard)), JSON.parse(standard?.body ?? ''));
    assert.throws(() => new Webhook(whsec).verify((standard?.body ?? '').replace('Hello', 'Hullo'), headers(standard)), 'a changed body is refused');
    const old = { ...headers(standard), 'webhook-timestamp': String(Math.floor(Date.now() / 1000) - 3600) };
    assert.throws(() => new Webhook(whsec).verify(standard?.body ?? '', old), 'a replay an hour later is refused');
    assert.equal(plain?.signature, 'sha256=' + createHmac('sha256', 'sekret').update(plain?.body ?? '').digest('hex'), 'the older header stays');
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
    [503, 'unknown'],
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

  it("a 503 is not delivered only where the channel trusts its receiver's 503s, or resending is safe", async () => {
    const r = await receiver({ status: 503 });
    const notDelivered = (e: unknown) => e instanceof RetryablePublishError && !e.maybeDelivered;
    await assert.rejects(publisher.publish(request({ url: r.url, trust_503: true })), notDelivered, 'trust_503');
    await assert.rejects(publisher.publish({ ...request({ url: r.url }), channel: channel({ url: r.url }, 'retry') }), notDelivered, 'on_unknown=retry');
    await assert.rejects(
      publisher.publish(request({ url: r.url, trust_503: true })),
      (e: unknown) => e instanceof RetryablePublishError && /HTTP 503/.test(e.message),
    );
    const r502 = await receiver({ status: 502 });
    await assert.rejects(
      publisher.publish(request({ url: r502.url, trust_503: true })),
      (e: unknown) => e instanceof RetryablePublishError && e.maybeDelivered,
      'trust_503 is about 503 only',
    );
  });

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

  it('hides the secret and all of the URL but its scheme and host', () => {
    assert.deepEqual(webhookPublisher.redactSettings({ url: 'https://bot:pw@hooks.example:8443/services/T0/B0/XSECRETX?token=abc', secret: 's' }), {
      url: 'https://hooks.example:8443/***',
      secret: '***',
    });
  });
});

const hookChannel = (settings: Record<string, unknown>, onUnknown: OnUnknown = 'hold'): Channel => ({
  id: 1,
  name: 'hook',
  platform: 'webhook',
  onUnknown,
  settings,
  enabled: true,
  credentials: null,
  attention: null,
  createdAt: new Date(),
});

const hookRequest = (settings: Record<string, unknown>, postId = 42, onUnknown: OnUnknown = 'hold'): PublishRequest => ({
  postId,
  attempt: 1,
  text: 'Hello, world',
  runAt: new Date('2026-11-28T12:00:00.000Z'),
  idempotencyKey: `key-${postId}`,
  images: [],
  part: { index: 0, count: 1 },
  replyTo: null,
  channel: hookChannel(settings, onUnknown),
  credentials: null,
  saveCredentials: async () => undefined,
  signal: new AbortController().signal,
});

/**
 * The SSRF guard, in-process against 127.0.0.1 only (a loopback address, so it is
 * refused by default; nothing else is ever contacted here). The link-local metadata
 * address is tested in an isolated network namespace (test/ssrf.test.ts).
 */
describe('webhook SSRF guard', () => {
  const guarded = webhookPublisher.createPublisher({ timeoutMs: 2_000, concurrency: 2 });
  const receivers: Receiver[] = [];
  after(async () => {
    await guarded.close();
    for (const r of receivers) await r.close();
  });

  it('refuses loopback, IPv4-mapped and unspecified addresses by default, naming the channel and host only', async () => {
    const r = await startReceiver();
    receivers.push(r);
    const port = new URL(r.url).port;
    for (const url of [r.url, `http://localhost:${port}/hook`, `http://[::ffff:127.0.0.1]:${port}/hook`, `http://0.0.0.0:${port}/hook`]) {
      const host = new URL(url).host;
      await assert.rejects(guarded.publish(hookRequest({ url: `${url}?token=abc` })), (e: unknown) => {
        assert.ok(e instanceof PermanentPublishError, `${url}: ${String(e)}`);
        assert.ok(e.message.startsWith(`webhook channel hook (${host}): refused to connect to a loopback, private or link-local address`), e.message);
        assert.match(e.message, /--allow-private-network/);
        assert.match(e.message, /ALLOW_PRIVATE_NETWORK=true/);
        assert.doesNotMatch(e.message, /\/hook|token|abc/);
        return true;
      });
    }
    assert.equal(r.deliveries.length, 0, 'nothing reached the receiver');
  });

  it('connects where the channel allows private networks', async () => {
    const r = await startReceiver();
    receivers.push(r);
    await guarded.publish(hookRequest({ url: r.url, allow_private_network: true }));
    assert.equal(r.deliveries.length, 1);
  });
});

describe('webhook errors show neither the URL nor credentials', () => {
  const publisher = webhookPublisher.createPublisher({ timeoutMs: 300, concurrency: 2, allowPrivateNetwork: true });
  const receivers: Receiver[] = [];
  after(async () => {
    await publisher.close();
    for (const r of receivers) await r.close();
  });
  const secretPath = '/services/T000/B000/XXXXSECRETXXXX?token=abc';
  const leaks = /services|XXXXSECRETXXXX|token=abc|T000|B000/;

  for (const answer of [{ status: 500 }, { status: 503 }, { status: 400, body: 'bad' }, { status: 404 }, { hang: true }] as Answer[]) {
    it(`names the channel and host only: ${JSON.stringify(answer)}`, async () => {
      const r = await startReceiver(() => answer);
      receivers.push(r);
      const url = new URL(r.url);
      await assert.rejects(publisher.publish(hookRequest({ url: `${url.origin}${secretPath}` })), (e: unknown) => {
        assert.ok(e instanceof Error);
        assert.ok(e.message.startsWith(`webhook channel hook (${url.host}): `), e.message);
        assert.doesNotMatch(e.message, leaks);
        return true;
      });
    });
  }

  it("leaves out the URL's tokens and the signing secret when a receiver echoes them, however short", async () => {
    // too short for answerExcerpt's patterns: only knowing them hides them (8 characters and more)
    const [pathToken, queryToken, secret] = ['p4thT0k3n', 'q5eryT0k3n', 'hm4cS3cr3t'];
    const r = await startReceiver(() => ({ status: 400, body: `no hook ${pathToken} for ${queryToken} signed with ${secret} at ${r.url}/${pathToken}?t=${queryToken}` }));
    receivers.push(r);
    await assert.rejects(publisher.publish(hookRequest({ url: `${r.url}/${pathToken}?t=${queryToken}`, secret })), (e: unknown) => {
      assert.ok(e instanceof PermanentPublishError);
      assert.match(e.message, /HTTP 400: no hook/);
      assert.doesNotMatch(e.message, /T0k|S3cr3t/);
      return true;
    });
  });

  it('a refused connection names the host only', async () => {
    const r = await startReceiver();
    const url = new URL(r.url);
    await r.close();
    await assert.rejects(publisher.publish(hookRequest({ url: `${url.origin}${secretPath}` })), (e: unknown) => {
      assert.ok(e instanceof RetryablePublishError);
      assert.match(e.message, /ECONNREFUSED/);
      assert.doesNotMatch(e.message, leaks);
      return true;
    });
  });

  it("keeps a short, sanitised excerpt of a refused request's answer", async () => {
    const body = JSON.stringify({
      error: 'invalid\nrequest\r\u0007 for user',
      token: 'sk_live_abcdef1234567890abcdef',
      api_key: 'short1',
      detail: `Authorization: Bearer abc.def.ghi and opaque ${'a1B2'.repeat(8)} then ${'x'.repeat(300)}`,
    }).replace('invalid\\n', 'invalid\n');
    const r = await startReceiver(() => ({ status: 400, body }));
    receivers.push(r);
    await assert.rejects(publisher.publish(hookRequest({ url: r.url })), (e: unknown) => {
      assert.ok(e instanceof PermanentPublishError);
      const excerpt = e.message.replace(/^webhook channel hook \([^)]+\): HTTP 400: /, '');
      assert.ok(excerpt.length <= 121, `${excerpt.length} characters: ${excerpt}`);
      assert.doesNotMatch(e.message, /sk_live|abcdef1234567890|short1|abc\.def|a1B2a1B2/);
      assert.ok(!Array.from(e.message).some((c) => c.charCodeAt(0) < 0x20), 'no control characters');
      assert.match(e.message, /"token":"\*\*\*"/);
      return true;
    });
    assert.equal(answerExcerpt('password=hunter2&user=bob'), 'password=***&user=bob');
    assert.equal(answerExcerpt(`key: ${'0f'.repeat(20)}`), 'key: ***');
    assert.equal(answerExcerpt('line one\n\tline two\u0000'), 'line one line two');
  });
});

/**
 * A receiver in its own thread (so its timers run while the test's event loop is
 * busy) that closes a keep-alive connection 200 ms after it went idle, as servers
 * with short idle timeouts do, while its Keep-Alive header announces 5 s (Node's own
 * server would announce timeout=0, and Node's agent would then never reuse a socket).
 */
const IDLE_CLOSING_RECEIVER = `
const { parentPort } = require('node:worker_threads');
const http = require('node:http');
const counts = {};
const timers = new Map();
const idle = (socket) => {
  clearTimeout(timers.get(socket));
  timers.set(socket, setTimeout(() => socket.destroy(), 200));
};
const server = http.createServer((req, res) => {
  clearTimeout(timers.get(req.socket));
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const id = JSON.parse(Buffer.concat(chunks).toString('utf8')).id;
    counts[id] = (counts[id] || 0) + 1;
    res.setHeader('keep-alive', 'timeout=5');
    res.on('finish', () => idle(req.socket));
    res.end('{}');
  });
});
server.keepAliveTimeout = 200;
server.on('connection', idle);
server.listen(0, '127.0.0.1', () => parentPort.postMessage({ port: server.address().port }));
parentPort.on('message', () => parentPort.postMessage({ counts }));
`;

describe('webhook keep-alive sockets', () => {
  // retry: sockets pooled, a stale one resent at once on a new connection (the key makes
  // a resend safe); hold: every request on a new connection, so no socket is ever stale
  for (const policy of ['retry', 'hold'] as const) {
  it(`${policy} channel: a receiver that closes idle keep-alive connections costs no unknown outcome and no second delivery`, async () => {
    const receiver = new Worker(IDLE_CLOSING_RECEIVER, { eval: true });
    const publisher = webhookPublisher.createPublisher({ timeoutMs: 5_000, concurrency: 3, allowPrivateNetwork: true });
    try {
      const [{ port }] = (await Promise.race([once(receiver, 'message'), sleep(10_000).then(() => assert.fail('receiver did not start'))])) as [{ port: number }];
      const url = `http://127.0.0.1:${port}/hook`;
      const failures: string[] = [];
      let postId = 0;
      for (let wave = 0; wave < 20; wave++) {
        const ids = [++postId, ++postId, ++postId];
        await Promise.all(
          ids.map((id) => publisher.publish(hookRequest({ url }, id, policy)).catch((e: unknown) => failures.push(`post ${id}: ${String(e)}`))),
        );
        // Idle past the receiver's 200 ms, with this event loop busy while the receiver
        // closes: its FIN waits unread, as when it is still in flight when the next
        // request goes out on the pooled socket.
        await sleep(150);
        const busyUntil = Date.now() + 110;
        while (Date.now() < busyUntil) {
          // busy
        }
      }
      assert.deepEqual(failures, [], 'no unknown outcomes, no failures');
      receiver.postMessage('counts');
      const [{ counts }] = (await Promise.race([once(receiver, 'message'), sleep(10_000).then(() => assert.fail('receiver did not answer'))])) as [
        { counts: Record<string, number> },
      ];
      assert.equal(Object.keys(counts).length, 60, 'every post arrived');
      assert.deepEqual(Object.entries(counts).filter(([, n]) => n !== 1), [], 'each exactly once');
    } finally {
      await publisher.close();
      await receiver.terminate();
    }
  });
  }

  it('still reports a fresh connection cut after the request was sent as maybe delivered, and does not resend it', async () => {
    let requests = 0;
    const server = http.createServer((req) => {
      requests++;
      req.resume();
      req.on('end', () => req.socket.destroy());
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const publisher = webhookPublisher.createPublisher({ timeoutMs: 5_000, concurrency: 1, allowPrivateNetwork: true });
    try {
      const { port } = server.address() as AddressInfo;
      await assert.rejects(
        publisher.publish(hookRequest({ url: `http://127.0.0.1:${port}/hook` })),
        (e: unknown) => e instanceof RetryablePublishError && e.maybeDelivered && /ECONNRESET: socket hang up after the request was sent/.test(e.message),
      );
      assert.equal(requests, 1, 'sent once');
    } finally {
      await publisher.close();
      server.closeAllConnections();
      server.close();
    }
  });
});
