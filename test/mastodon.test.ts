import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { mastodonLength, mastodonPublisher } from '../src/publishers/mastodon.ts';
import {
  CredentialsRejectedError,
  PermanentPublishError,
  RetryablePublishError,
  SettingsError,
  type LoadedImage,
  type Publisher,
  type PublishRequest,
} from '../src/publishers/publisher.ts';
import { loadPublisherModule } from '../src/publishers/registry.ts';
import type { Channel, PublishedPart } from '../src/types.ts';
import { TOKEN, WRITE_ONLY_TOKEN, type FakeMastodon, startMastodon } from './helpers/fake-mastodon.ts';

/** a 1x1 PNG, and a GIF: real image bytes */
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64');
const GIF = Buffer.from('R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7', 'base64');
const png = (alt: string, filename = 'a.png'): LoadedImage => ({ bytes: PNG, mimeType: 'image/png', alt, filename });
const gif = (alt: string, filename = 'b.gif'): LoadedImage => ({ bytes: GIF, mimeType: 'image/gif', alt, filename });

describe('mastodon publisher', () => {
  const servers: FakeMastodon[] = [];
  const publishers: Publisher[] = [];
  after(async () => {
    for (const p of publishers) await p.close();
    for (const s of servers) await s.close();
  });
  const mastodon = async () => {
    const s = await startMastodon();
    servers.push(s);
    return s;
  };
  /** guarded as in production: the channels below opt in to 127.0.0.1 themselves */
  const publisher = (timeoutMs = 2_000) => {
    const p = mastodonPublisher.createPublisher({ timeoutMs, concurrency: 2, allowPrivateNetwork: false });
    publishers.push(p);
    return p;
  };

  const channel = (settings: Record<string, unknown>): Channel => ({
    id: 7,
    name: 'toots',
    platform: 'mastodon',
    onUnknown: 'retry',
    settings,
    enabled: true,
    credentials: 'sealed',
    attention: null,
    createdAt: new Date(),
  });
  const request = (
    settings: Record<string, unknown>,
    overrides: {
      text?: string;
      key?: string;
      token?: string | null;
      attempt?: number;
      signal?: AbortSignal;
      images?: LoadedImage[];
      part?: { index: number; count: number };
      replyTo?: { root: PublishedPart; parent: PublishedPart } | null;
    } = {},
  ): PublishRequest => ({
    postId: 42,
    attempt: overrides.attempt ?? 1,
    text: overrides.text ?? 'Hello, fediverse',
    runAt: new Date('2026-12-01T12:00:00.000Z'),
    idempotencyKey: overrides.key ?? 'key-42',
    images: overrides.images ?? [],
    part: overrides.part ?? { index: 0, count: 1 },
    replyTo: overrides.replyTo ?? null,
    channel: channel(settings),
    credentials: overrides.token === null ? null : { access_token: overrides.token ?? TOKEN },
    saveCredentials: async () => undefined,
    signal: overrides.signal ?? new AbortController().signal,
  });
  const local = (s: FakeMastodon, extra: Record<string, unknown> = {}) => ({ instance: s.url, allow_private_network: true, ...extra });

  async function rejection(p: Promise<unknown>): Promise<Error> {
    try {
      await p;
    } catch (e) {
      assert.ok(e instanceof Error);
      assert.ok(!e.message.includes(TOKEN), `the token leaked into: ${e.message}`);
      return e;
    }
    assert.fail('expected the publish to fail');
  }

  it('is registered as platform mastodon: retry on unknown outcomes, no look-up, images and threads', async () => {
    const module = await loadPublisherModule('mastodon');
    assert.equal(module, mastodonPublisher);
    assert.equal(mastodonPublisher.defaultOnUnknown, 'retry');
    assert.equal(mastodonPublisher.canLookUp, false);
    assert.equal(mastodonPublisher.threads, true);
    assert.deepEqual(mastodonPublisher.media, {
      maxImages: 4,
      maxBytes: 16_777_216,
      maxAltLength: 1500,
      types: ['image/jpeg', 'image/png', 'image/gif', 'image/webp'],
    });
  });

  it('posts a status with the Bearer token, the Idempotency-Key and the text, and returns its id and url', async () => {
    const s = await mastodon();
    const result = await publisher().publish(request(local(s)));
    assert.equal(s.statuses.length, 1);
    const [status] = s.statuses;
    assert.deepEqual(result, { externalId: status?.id, externalUrl: `${s.url}/@alice/${status?.id}` });
    const [sent] = s.requests;
    assert.equal(sent?.method, 'POST');
    assert.equal(sent?.path, '/api/v1/statuses');
    assert.equal(sent?.headers['authorization'], `Bearer ${TOKEN}`);
    assert.equal(sent?.headers['idempotency-key'], 'key-42');
    assert.match(sent?.headers['content-type'] ?? '', /^application\/json/);
    assert.deepEqual(sent?.body, { status: 'Hello, fediverse' }, 'no visibility, language or CW unless the channel sets them');
  });

  it('sends the content warning (sensitive), visibility and language of the channel', async () => {
    const s = await mastodon();
    await publisher().publish(request(local(s, { visibility: 'unlisted', language: 'de', spoiler_text: 'spoilers: season finale' })));
    assert.deepEqual(s.requests[0]?.body, {
      status: 'Hello, fediverse',
      visibility: 'unlisted',
      language: 'de',
      spoiler_text: 'spoilers: season finale',
      sensitive: true,
    });
    assert.equal(s.statuses[0]?.visibility, 'unlisted');
    assert.equal(s.statuses[0]?.spoiler_text, 'spoilers: season finale');
  });

  it('a repeat with the same Idempotency-Key creates no second status', async () => {
    const s = await mastodon();
    const p = publisher();
    const first = await p.publish(request(local(s)));
    const second = await p.publish(request(local(s), { attempt: 2 }));
    assert.deepEqual(second, first);
    assert.equal(s.requests.length, 2);
    assert.equal(s.statuses.length, 1);
    assert.equal(s.requests[1]?.headers['idempotency-key'], 'key-42');
    // another post (another key) is another status
    await p.publish(request(local(s), { key: 'key-43' }));
    assert.equal(s.statuses.length, 2);
  });

  it('401: the credentials are rejected, with the API error and without the token', async () => {
    const s = await mastodon();
    const e = await rejection(publisher().publish(request(local(s), { token: `bad${TOKEN}` })));
    assert.ok(e instanceof CredentialsRejectedError, String(e));
    assert.match(e.message, /channel toots \(127\.0\.0\.1:\d+\)/);
    assert.match(e.message, /HTTP 401: The access token is invalid/);
    assert.equal(s.statuses.length, 0);
  });

  it('a 403 about the scopes rejects the credentials; a 403 about the post is permanent', async () => {
    const s = await mastodon();
    const p = publisher();
    s.overrides.push({ kind: 'answer', status: 403, body: '{"error":"This action is outside the authorized scopes"}' });
    const scope = await rejection(p.publish(request(local(s))));
    assert.ok(scope instanceof CredentialsRejectedError, String(scope));
    assert.match(scope.message, /outside the authorized scopes/);
    s.overrides.push({ kind: 'answer', status: 403, body: '{"error":"This action is not allowed"}' });
    const other = await rejection(p.publish(request(local(s))));
    assert.ok(other instanceof PermanentPublishError, String(other));
  });

  it('a missing or malformed token is a credentials problem named without its value', async () => {
    const s = await mastodon();
    const p = publisher();
    const none = await rejection(p.publish(request(local(s), { token: null })));
    assert.ok(none instanceof CredentialsRejectedError);
    const spaced = await rejection(p.publish(request(local(s), { token: `${TOKEN} x` })));
    assert.ok(spaced instanceof CredentialsRejectedError);
    assert.match(spaced.message, /access_token must be printable ASCII without spaces/);
    assert.equal(s.requests.length, 0, 'nothing was sent');
  });

  it('422: permanent, with a short excerpt of the error that holds no token even when the server echoes it', async () => {
    const s = await mastodon();
    const p = publisher();
    // the instance's own limit is lower than the channel was told
    const long = 'a'.repeat(600);
    const tooLong = await rejection(p.publish(request(local(s, { max_characters: 1000 }), { text: long })));
    assert.ok(tooLong instanceof PermanentPublishError, String(tooLong));
    assert.match(tooLong.message, /HTTP 422: Validation failed: Text character limit of 500 exceeded/);

    s.overrides.push({
      kind: 'answer',
      status: 422,
      body: JSON.stringify({ error: `Validation failed: request with Authorization: Bearer ${TOKEN} and token ${TOKEN} refused` }),
    });
    const echoed = await rejection(p.publish(request(local(s))));
    assert.ok(echoed instanceof PermanentPublishError, String(echoed));
    assert.match(echoed.message, /HTTP 422: Validation failed/);
    assert.ok(echoed.message.length < 300, 'an excerpt, not the whole answer');
    assert.equal(s.statuses.length, 0);
  });

  it('429: retried at X-RateLimit-Reset (or Retry-After), not delivered', async () => {
    const s = await mastodon();
    const p = publisher();
    const reset = new Date(Date.now() + 120_000).toISOString();
    s.overrides.push({
      kind: 'answer',
      status: 429,
      body: '{"error":"Too many requests"}',
      headers: { 'x-ratelimit-limit': '300', 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': reset },
    });
    const limited = await rejection(p.publish(request(local(s))));
    assert.ok(limited instanceof RetryablePublishError, String(limited));
    assert.equal(limited.maybeDelivered, false);
    assert.ok(limited.retryAfterMs !== null && limited.retryAfterMs > 60_000 && limited.retryAfterMs <= 120_000, String(limited.retryAfterMs));

    s.overrides.push({ kind: 'answer', status: 429, body: '{"error":"Too many requests"}', headers: { 'retry-after': '30' } });
    const after30 = await rejection(p.publish(request(local(s))));
    assert.ok(after30 instanceof RetryablePublishError);
    assert.equal(after30.retryAfterMs, 30_000);
  });

  it('500 and 503: maybe delivered; the resend with the same key posts once', async () => {
    const s = await mastodon();
    const p = publisher();
    for (const status of [500, 503]) {
      s.overrides.push({ kind: 'answer', status, body: '<html>oops</html>' });
      const e = await rejection(p.publish(request(local(s))));
      assert.ok(e instanceof RetryablePublishError, String(e));
      assert.equal(e.maybeDelivered, true, `HTTP ${status}`);
      assert.match(e.message, new RegExp(`HTTP ${status}`));
    }
    await p.publish(request(local(s), { attempt: 3 }));
    assert.equal(s.statuses.length, 1);
  });

  it('a connection cut after the request was sent is maybe delivered, and the resend with the same key returns the same status', async () => {
    const s = await mastodon();
    const p = publisher();
    s.overrides.push({ kind: 'cut-after-create' });
    const e = await rejection(p.publish(request(local(s))));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.maybeDelivered, true);
    assert.match(e.message, /after the request was sent/);
    assert.equal(s.statuses.length, 1, 'the instance did post it');
    const resent = await p.publish(request(local(s), { attempt: 2 }));
    assert.equal(resent.externalId, s.statuses[0]?.id);
    assert.equal(s.statuses.length, 1, 'no second status');
  });

  it('no answer within the timeout after sending is maybe delivered; a refused connection is not', async () => {
    const s = await mastodon();
    s.overrides.push({ kind: 'hang' });
    const hung = await rejection(publisher(300).publish(request(local(s))));
    assert.ok(hung instanceof RetryablePublishError, String(hung));
    assert.equal(hung.maybeDelivered, true);
    assert.match(hung.message, /no answer within 300 ms after the request was sent/);

    const gone = await startMastodon();
    const instance = gone.url;
    await gone.close();
    const refused = await rejection(publisher().publish(request({ instance, allow_private_network: true })));
    assert.ok(refused instanceof RetryablePublishError, String(refused));
    assert.equal(refused.maybeDelivered, false);
    assert.match(refused.message, /ECONNREFUSED/);
  });

  it('a 200 without a status id is maybe delivered', async () => {
    const s = await mastodon();
    const p = publisher();
    s.overrides.push({ kind: 'answer', status: 200, body: '{"ok":true}' });
    const noId = await rejection(p.publish(request(local(s))));
    assert.ok(noId instanceof RetryablePublishError, String(noId));
    assert.equal(noId.maybeDelivered, true);
    s.overrides.push({ kind: 'answer', status: 200, body: '<html>maintenance</html>' });
    const html = await rejection(p.publish(request(local(s))));
    assert.ok(html instanceof RetryablePublishError);
    assert.equal(html.maybeDelivered, true);
  });

  it('refuses 127.0.0.1 unless the channel opts in (SSRF protection), naming the channel and host', async () => {
    const s = await mastodon();
    // https: the guard refuses the address before any TLS handshake
    const e = await rejection(publisher().publish(request({ instance: `https://${s.host}` })));
    assert.ok(e instanceof PermanentPublishError, String(e));
    assert.match(e.message, /mastodon channel toots \(127\.0\.0\.1:\d+\): refused to connect .*SSRF protection.*--allow-private-network/);
    assert.equal(s.requests.length, 0);
  });

  it('counts text as Mastodon does: URLs 23, @user@domain as @user, the content warning included', () => {
    const url = `https://example.com/${'p'.repeat(150)}?q=1`;
    assert.equal(mastodonLength(`read ${url}.`), 'read '.length + 23 + 1);
    assert.equal(mastodonLength('hi @alice@example.social'), 'hi @alice'.length);
    assert.equal(mastodonLength('👩‍👩‍👧 é', 'cw'), 3 + 2);

    const settings = { instance: 'https://mastodon.social' };
    assert.equal(mastodonPublisher.checkText(`${'a'.repeat(476)} ${url}`, settings), null, '476 + 1 + 23 = 500');
    const reason = mastodonPublisher.checkText(`${'a'.repeat(477)} ${url}`, settings);
    assert.match(reason ?? '', /text is 501 characters as Mastodon counts them \(URLs count 23 each\); the channel takes at most 500/);
    assert.match(mastodonPublisher.checkText('a'.repeat(499), { ...settings, spoiler_text: 'cw' }) ?? '', /501 characters.*content warning included/);
    assert.equal(mastodonPublisher.checkText('a'.repeat(900), { ...settings, max_characters: 1000 }), null);
    assert.match(mastodonPublisher.checkText('  ', settings) ?? '', /empty/);
  });

  it('a text over the limit fails at once, before anything is sent', async () => {
    const s = await mastodon();
    const e = await rejection(publisher().publish(request(local(s), { text: 'b'.repeat(501) })));
    assert.ok(e instanceof PermanentPublishError);
    assert.match(e.message, /501 characters/);
    assert.equal(s.requests.length, 0);
  });

  it('verify: the account behind the token, or CredentialsRejectedError', async () => {
    const s = await mastodon();
    const options = { timeoutMs: 2_000, concurrency: 1 };
    const verified = await mastodonPublisher.verify?.(local(s), { access_token: TOKEN }, options);
    assert.deepEqual(verified, { account: `@alice@${s.host}` });
    const sent = s.requests[0];
    assert.equal(sent?.method, 'GET');
    assert.equal(sent?.path, '/api/v1/accounts/verify_credentials');
    assert.equal(sent?.headers['authorization'], `Bearer ${TOKEN}`);
    const e = await rejection(mastodonPublisher.verify?.(local(s), { access_token: `x${TOKEN}` }, options) ?? Promise.resolve());
    assert.ok(e instanceof CredentialsRejectedError, String(e));
    assert.match(e.message, /The access token is invalid/);
    const refused = await rejection(mastodonPublisher.verify?.({ instance: `https://${s.host}` }, { access_token: TOKEN }, options) ?? Promise.resolve());
    assert.ok(refused instanceof SettingsError, String(refused));
  });

  it('validates settings and credentials in one line, never echoing the token', () => {
    const problem = (settings: Record<string, unknown>) => {
      try {
        mastodonPublisher.parseSettings(settings);
        return null;
      } catch (e) {
        assert.ok(e instanceof SettingsError);
        return e.message;
      }
    };
    assert.equal(problem({ instance: 'https://mastodon.social' }), null);
    assert.equal(problem({}), 'mastodon channel needs an instance (its https:// URL)');
    assert.equal(problem({ instance: 'http://mastodon.social' }), 'mastodon instance must be https:// (http:// only with allow_private_network)');
    assert.equal(problem({ instance: 'http://127.0.0.1:3000', allow_private_network: true }), null);
    assert.match(problem({ instance: 'https://mastodon.social/@alice' }) ?? '', /address of the instance only/);
    assert.match(problem({ instance: 'ftp://mastodon.social' }) ?? '', /https:\/\//);
    assert.match(problem({ instance: 'https://mastodon.social', visibility: 'friends' }) ?? '', /public, unlisted, private or direct/);
    assert.match(problem({ instance: 'https://mastodon.social', language: 'english' }) ?? '', /ISO 639-1/);
    assert.match(problem({ instance: 'https://mastodon.social', max_characters: 0 }) ?? '', /at least 1/);
    assert.match(problem({ instance: 'https://mastodon.social', spoiler_text: ' ' }) ?? '', /must not be empty/);

    const credentials = (c: Record<string, unknown>) => {
      try {
        mastodonPublisher.parseCredentials?.(c);
        return null;
      } catch (e) {
        assert.ok(e instanceof SettingsError);
        assert.ok(!e.message.includes(TOKEN));
        assert.ok(!e.message.includes('\n'));
        return e.message;
      }
    };
    assert.equal(credentials({ access_token: TOKEN }), null);
    assert.match(credentials({}) ?? '', /access_token/);
    assert.match(credentials({ access_token: `${TOKEN}\n` }) ?? '', /access_token/);
    assert.match(credentials({ access_token: 12 }) ?? '', /access_token/);
    assert.deepEqual(mastodonPublisher.redactSettings({ instance: 'https://mastodon.social', visibility: 'public' }), {
      instance: 'https://mastodon.social',
      visibility: 'public',
    });
  });

  it('images: each uploaded to /api/v2/media (file and alt text), then the status with their media_ids in order', async () => {
    const s = await mastodon();
    const result = await publisher().publish(request(local(s), { images: [png('A red dot on white'), gif('', 'b.gif')] }));
    assert.deepEqual(
      s.requests.map((r) => `${r.method} ${r.path}`),
      ['POST /api/v2/media', 'POST /api/v2/media', 'POST /api/v1/statuses'],
    );
    const [first, second, status] = s.requests;
    for (const upload of [first, second]) {
      assert.equal(upload?.headers['authorization'], `Bearer ${TOKEN}`);
      assert.match(upload?.headers['content-type'] ?? '', /^multipart\/form-data; boundary=\S+$/);
      assert.equal(upload?.headers['accept'], 'application/json');
      // uploads are not idempotent on Mastodon: no key is sent with them
      assert.equal(upload?.headers['idempotency-key'], undefined);
    }
    assert.deepEqual(
      first?.form?.map((p) => [p.name, p.filename, p.contentType, p.data.toString('base64')]),
      [
        ['description', null, null, Buffer.from('A red dot on white').toString('base64')],
        ['file', 'a.png', 'image/png', PNG.toString('base64')],
      ],
    );
    // an empty alt text sends no description
    assert.deepEqual(
      second?.form?.map((p) => [p.name, p.filename, p.contentType, p.data.toString('base64')]),
      [['file', 'b.gif', 'image/gif', GIF.toString('base64')]],
    );
    assert.equal(s.media.length, 2);
    assert.deepEqual(status?.body, { status: 'Hello, fediverse', media_ids: [s.media[0]?.id, s.media[1]?.id] });
    assert.equal(status?.headers['idempotency-key'], 'key-42');
    assert.deepEqual(s.statuses[0]?.media_ids, [s.media[0]?.id, s.media[1]?.id]);
    assert.equal(s.media[0]?.description, 'A red dot on white');
    assert.equal(s.media[0]?.statusId, result.externalId);
  });

  it('a part of images alone may have no text; text alone may not be blank', async () => {
    const s = await mastodon();
    const p = publisher();
    await p.publish(request(local(s), { text: '', images: [png('dot')] }));
    assert.deepEqual(s.requests.at(-1)?.body, { status: '', media_ids: [s.media[0]?.id] });
    assert.equal(s.statuses.length, 1);
    const blank = await rejection(p.publish(request(local(s), { text: ' ', key: 'key-43' })));
    assert.ok(blank instanceof PermanentPublishError, String(blank));
    assert.match(blank.message, /text is empty/);
  });

  it('a media still processing is polled (202, then 206, then 200) before the status is sent', async () => {
    const s = await mastodon();
    s.mediaProcessing = 1;
    await publisher().publish(request(local(s), { images: [png('dot')] }));
    const id = s.media[0]?.id ?? '';
    assert.deepEqual(
      s.requests.map((r) => `${r.method} ${r.path}`),
      ['POST /api/v2/media', `GET /api/v1/media/${id}`, `GET /api/v1/media/${id}`, 'POST /api/v1/statuses'],
    );
    assert.equal(s.requests[1]?.headers['authorization'], `Bearer ${TOKEN}`);
    assert.deepEqual(s.requests[3]?.body, { status: 'Hello, fediverse', media_ids: [id] });
    assert.equal(s.statuses.length, 1);
  });

  it('a processing that does not end within the timeout: retryable, not maybe delivered, no status sent', async () => {
    const s = await mastodon();
    s.mediaProcessing = Infinity;
    const e = await rejection(publisher(400).publish(request(local(s), { images: [png('dot')] })));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.maybeDelivered, false);
    assert.match(e.message, /channel toots \(127\.0\.0\.1:\d+\): image 1 of 1 \(a\.png\): still processing after 400 ms \(no status was sent\)/);
    assert.ok(s.requests.filter((r) => r.method === 'GET').length >= 1, 'it was polled');
    assert.equal(s.requests.filter((r) => r.path === '/api/v1/statuses').length, 0);
    assert.equal(s.statuses.length, 0);
  });

  it('upload errors: 422 fails the post naming the image; 429, 5xx and a cut are retried, never maybe delivered', async () => {
    const s = await mastodon();
    const p = publisher();
    const images = [png('one'), png('two', 'big.png')];
    // the instance refuses the second image's size
    s.imageSizeLimit = PNG.length - 1;
    s.mediaOverrides.push({ kind: 'answer', status: 200, body: JSON.stringify({ id: '900', type: 'image', url: `${s.url}/900.png` }) });
    const tooBig = await rejection(p.publish(request(local(s), { images })));
    assert.ok(tooBig instanceof PermanentPublishError, String(tooBig));
    assert.match(tooBig.message, /image 2 of 2 \(big\.png\): HTTP 422: Validation failed: File file size must be less than/);
    s.imageSizeLimit = 16 * 1024 * 1024;

    s.mediaOverrides.push({ kind: 'answer', status: 429, body: '{"error":"Too many requests"}', headers: { 'retry-after': '7' } });
    const limited = await rejection(p.publish(request(local(s), { images })));
    assert.ok(limited instanceof RetryablePublishError, String(limited));
    assert.equal(limited.maybeDelivered, false);
    assert.equal(limited.retryAfterMs, 7_000);

    s.mediaOverrides.push({ kind: 'answer', status: 503, body: '<html>busy</html>' });
    const busy = await rejection(p.publish(request(local(s), { images })));
    assert.ok(busy instanceof RetryablePublishError, String(busy));
    assert.equal(busy.maybeDelivered, false);
    assert.match(busy.message, /image 1 of 2 \(a\.png\): HTTP 503/);

    s.mediaOverrides.push({ kind: 'cut-after-create' });
    const cut = await rejection(p.publish(request(local(s), { images })));
    assert.ok(cut instanceof RetryablePublishError, String(cut));
    assert.equal(cut.maybeDelivered, false, 'no status was sent');

    // a token without write:media
    s.mediaOverrides.push({ kind: 'answer', status: 403, body: '{"error":"This action is outside the authorized scopes"}' });
    const scope = await rejection(p.publish(request(local(s), { images })));
    assert.ok(scope instanceof CredentialsRejectedError, String(scope));
    assert.match(scope.message, /outside the authorized scopes/);
    assert.equal(s.statuses.length, 0);
  });

  it("the channel's own image_size_limit and description_limit refuse an image before anything is sent", async () => {
    const s = await mastodon();
    const p = publisher();
    const small = await rejection(p.publish(request(local(s, { image_size_limit: 10 }), { images: [png('dot')] })));
    assert.ok(small instanceof PermanentPublishError, String(small));
    assert.match(small.message, new RegExp(`image 1 of 1 \\(a\\.png\\) is ${PNG.length} bytes; the instance takes at most 10 \\(image_size_limit\\)`));
    const alt = await rejection(p.publish(request(local(s, { description_limit: 3 }), { images: [png('four')] })));
    assert.ok(alt instanceof PermanentPublishError, String(alt));
    assert.match(alt.message, /alt text of 4 characters; the instance takes at most 3 \(description_limit\)/);
    const five = await rejection(p.publish(request(local(s), { images: [png('1'), png('2'), png('3'), png('4'), png('5')] })));
    assert.match(five.message, /5 images; a status takes at most 4/);
    assert.equal(s.requests.length, 0);
  });

  /** the parts of a 3-part thread as the core sends them: each replying to the one before */
  async function thread(s: FakeMastodon, p: Publisher, texts: string[]): Promise<PublishedPart[]> {
    const published: PublishedPart[] = [];
    for (const [index, text] of texts.entries()) {
      const root = published[0];
      const parent = published.at(-1);
      published.push(
        await p.publish(
          request(local(s), {
            text,
            key: index === 0 ? 'post-7' : `post-7.${index}`,
            part: { index, count: texts.length },
            replyTo: root === undefined || parent === undefined ? null : { root, parent },
          }),
        ),
      );
    }
    return published;
  }

  it('a 3-part thread: each part a status replying to the one before, with its own Idempotency-Key', async () => {
    const s = await mastodon();
    const parts = await thread(s, publisher(), ['1/3 a thread', '2/3 goes on', '3/3 ends']);
    assert.deepEqual(
      s.statuses.map((x) => [x.id, x.in_reply_to_id]),
      [
        [parts[0]?.externalId, null],
        [parts[1]?.externalId, parts[0]?.externalId],
        [parts[2]?.externalId, parts[1]?.externalId],
      ],
    );
    assert.deepEqual(
      s.requests.map((r) => [r.headers['idempotency-key'], r.body]),
      [
        ['post-7', { status: '1/3 a thread' }],
        ['post-7.1', { status: '2/3 goes on', in_reply_to_id: parts[0]?.externalId }],
        ['post-7.2', { status: '3/3 ends', in_reply_to_id: parts[1]?.externalId }],
      ],
    );
  });

  it('a cut after part 2 was sent, then part 2 again with its key: no second part 2 (its images are uploaded again, unattached)', async () => {
    const s = await mastodon();
    const p = publisher();
    const first = await p.publish(request(local(s), { text: '1/3', key: 'post-8', part: { index: 0, count: 3 } }));
    const second = (attempt: number) =>
      request(local(s), { text: '2/3', key: 'post-8.1', attempt, part: { index: 1, count: 3 }, replyTo: { root: first, parent: first }, images: [png('dot')] });
    s.overrides.push({ kind: 'cut-after-create' });
    const cut = await rejection(p.publish(second(1)));
    assert.ok(cut instanceof RetryablePublishError, String(cut));
    assert.equal(cut.maybeDelivered, true);
    assert.equal(s.statuses.length, 2, 'the instance did post part 2');

    const resent = await p.publish(second(2));
    assert.equal(s.statuses.length, 2, 'no second part 2');
    assert.equal(resent.externalId, s.statuses[1]?.id);
    assert.equal(s.statuses[1]?.in_reply_to_id, first.externalId);
    // the image went up twice; the second upload stays unattached (harmless)
    assert.equal(s.media.length, 2);
    assert.deepEqual(
      s.media.map((m) => m.statusId),
      [s.statuses[1]?.id, null],
    );

    const third = await p.publish(request(local(s), { text: '3/3', key: 'post-8.2', part: { index: 2, count: 3 }, replyTo: { root: first, parent: resent } }));
    assert.equal(s.statuses[2]?.id, third.externalId);
    assert.equal(s.statuses[2]?.in_reply_to_id, resent.externalId);
  });

  it('verify: a token of write scopes only is accepted without the account name', async () => {
    const s = await mastodon();
    const verified = await mastodonPublisher.verify?.(local(s), { access_token: WRITE_ONLY_TOKEN }, { timeoutMs: 2_000, concurrency: 1 });
    assert.deepEqual(verified, { account: `a token of ${s.host} without read:accounts or profile (the account's name cannot be read)` });
    // and such a token publishes
    await publisher().publish(request(local(s), { token: WRITE_ONLY_TOKEN, images: [png('dot')] }));
    assert.equal(s.statuses.length, 1);
  });
});
