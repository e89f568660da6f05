import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { mastodonLength, mastodonPublisher } from '../src/publishers/mastodon.ts';
import { CredentialsRejectedError, PermanentPublishError, RetryablePublishError, SettingsError, type Publisher, type PublishRequest } from '../src/publishers/publisher.ts';
import { loadPublisherModule } from '../src/publishers/registry.ts';
import type { Channel } from '../src/types.ts';
import { TOKEN, type FakeMastodon, startMastodon } from './helpers/fake-mastodon.ts';

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
    overrides: { text?: string; key?: string; token?: string | null; attempt?: number; signal?: AbortSignal } = {},
  ): PublishRequest => ({
    postId: 42,
    attempt: overrides.attempt ?? 1,
    text: overrides.text ?? 'Hello, fediverse',
    runAt: new Date('2026-12-01T12:00:00.000Z'),
    idempotencyKey: overrides.key ?? 'key-42',
    images: [],
    part: { index: 0, count: 1 },
    replyTo: null,
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

  it('is registered as platform mastodon: retry on unknown outcomes, no look-up', async () => {
    const module = await loadPublisherModule('mastodon');
    assert.equal(module, mastodonPublisher);
    assert.equal(mastodonPublisher.defaultOnUnknown, 'retry');
    assert.equal(mastodonPublisher.canLookUp, false);
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
});
