import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { xLength, xPublisher } from '../src/publishers/x.ts';
import { CredentialsRejectedError, PermanentPublishError, RetryablePublishError, SettingsError, type Publisher, type PublishRequest } from '../src/publishers/publisher.ts';
import { loadPublisherModule } from '../src/publishers/registry.ts';
import { PLATFORMS, type Channel } from '../src/types.ts';
import { CLIENT_ID, CLIENT_SECRET, type FakeX, startX } from './helpers/fake-x.ts';

describe('x publisher', () => {
  const servers: FakeX[] = [];
  const publishers: Publisher[] = [];
  after(async () => {
    for (const p of publishers) await p.close();
    for (const s of servers) await s.close();
  });
  const fake = async () => {
    const s = await startX();
    servers.push(s);
    return s;
  };
  /** guarded as in production: the channels below opt in to 127.0.0.1 themselves */
  const publisher = (timeoutMs = 2_000) => {
    const p = xPublisher.createPublisher({ timeoutMs, concurrency: 2, allowPrivateNetwork: false });
    publishers.push(p);
    return p;
  };

  const channel = (settings: Record<string, unknown>): Channel => ({
    id: 11,
    name: 'brand',
    platform: 'x',
    onUnknown: 'hold',
    settings,
    enabled: true,
    credentials: 'sealed',
    attention: null,
    createdAt: new Date(),
  });
  const credentialsOf = (s: FakeX, extra: Record<string, unknown> = {}) => ({
    access_token: s.accessToken,
    refresh_token: s.refreshToken,
    client_id: CLIENT_ID,
    expires_at: new Date(Date.now() + 2 * 3600_000).toISOString(),
    ...extra,
  });
  const request = (s: FakeX, overrides: { text?: string; credentials?: Record<string, unknown> | null; saved?: Record<string, unknown>[] } = {}): PublishRequest => ({
    postId: 42,
    attempt: 1,
    text: overrides.text ?? 'Hello, X',
    runAt: new Date('2026-12-01T12:00:00.000Z'),
    idempotencyKey: 'key-42',
    images: [],
    part: { index: 0, count: 1 },
    replyTo: null,
    channel: channel({ api_url: s.url, allow_private_network: true }),
    credentials: overrides.credentials === undefined ? credentialsOf(s) : overrides.credentials,
    saveCredentials: async (fresh) => {
      overrides.saved?.push(fresh);
    },
    signal: new AbortController().signal,
  });

  /** the error a promise fails with, checked to hold no token and no client secret */
  async function rejection(s: FakeX, p: Promise<unknown>): Promise<Error> {
    try {
      await p;
    } catch (e) {
      assert.ok(e instanceof Error);
      const texts = [e.message, e.stack ?? '', JSON.stringify(e), e.cause instanceof Error ? e.cause.message : ''];
      for (const secret of [...s.issued, CLIENT_SECRET]) {
        for (const text of texts) assert.ok(!text.includes(secret), `a secret leaked into: ${text}`);
      }
      return e;
    }
    assert.fail('expected the call to fail');
  }

  it('is registered as platform x: hold on unknown outcomes, no look-up', async () => {
    assert.equal(await loadPublisherModule('x'), xPublisher);
    assert.ok(PLATFORMS.includes('x'));
    assert.equal(xPublisher.defaultOnUnknown, 'hold');
    assert.equal(xPublisher.canLookUp, false);
  });

  it('posts to /2/tweets with the Bearer token and a JSON body; returns the id and its URL', async () => {
    const s = await fake();
    const saved: Record<string, unknown>[] = [];
    const result = await publisher().publish(request(s, { saved }));
    const id = s.posts[0]?.id ?? '';
    assert.deepEqual(result, { externalId: id, externalUrl: `https://x.com/i/web/status/${id}` });
    assert.equal(s.requests.length, 1);
    const sent = s.requests[0];
    assert.equal(sent?.method, 'POST');
    assert.equal(sent?.path, '/2/tweets');
    assert.equal(sent?.headers['authorization'], `Bearer ${s.accessToken}`);
    assert.match(sent?.headers['content-type'] ?? '', /^application\/json/);
    assert.deepEqual(sent?.body, { text: 'Hello, X' });
    assert.equal(saved.length, 0, 'nothing refreshed, nothing stored');
  });

  it('refreshes a token that expires within 60 s before sending, with Basic auth for a confidential client, and stores the rotated tokens', async () => {
    const s = await fake();
    s.clientSecret = CLIENT_SECRET;
    const oldRefresh = s.refreshToken;
    const saved: Record<string, unknown>[] = [];
    const credentials = credentialsOf(s, { client_secret: CLIENT_SECRET, expires_at: new Date(Date.now() + 30_000).toISOString() });
    const before = Date.now();
    await publisher().publish(request(s, { credentials, saved }));
    const [token, post] = s.requests;
    assert.equal(token?.path, '/2/oauth2/token');
    assert.equal(token?.method, 'POST');
    assert.match(token?.headers['content-type'] ?? '', /^application\/x-www-form-urlencoded/);
    assert.equal(token?.headers['authorization'], `Basic ${Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64')}`);
    assert.equal(token?.form?.get('grant_type'), 'refresh_token');
    assert.equal(token?.form?.get('refresh_token'), oldRefresh);
    assert.equal(token?.form?.get('client_id'), CLIENT_ID);
    assert.equal(post?.headers['authorization'], `Bearer ${s.accessToken}`, 'the post went out with the new token');
    assert.equal(s.posts.length, 1);
    assert.equal(saved.length, 1);
    const fresh = saved[0] ?? {};
    assert.equal(fresh['access_token'], s.accessToken);
    assert.equal(fresh['refresh_token'], s.refreshToken);
    assert.notEqual(fresh['refresh_token'], oldRefresh, 'X rotated the refresh token');
    assert.equal(fresh['client_id'], CLIENT_ID);
    assert.equal(fresh['client_secret'], CLIENT_SECRET);
    const expiresAt = Date.parse(String(fresh['expires_at']));
    assert.ok(expiresAt >= before + 7_199_000 && expiresAt <= Date.now() + 7_200_000, 'expires_at = now + expires_in');
  });

  it('a post that still carries the old tokens after a refresh uses the new ones (the old refresh token is dead)', async () => {
    const s = await fake();
    const p = publisher();
    const stale = credentialsOf(s, { expires_at: new Date(Date.now() + 10_000).toISOString() });
    const saved: Record<string, unknown>[] = [];
    await p.publish(request(s, { credentials: stale, saved }));
    await p.publish(request(s, { credentials: stale, saved, text: 'second' }));
    assert.equal(s.requests.filter((r) => r.path === '/2/oauth2/token').length, 1, 'one refresh');
    assert.equal(s.posts.length, 2);
    assert.equal(saved.length, 2, 'the newer tokens are stored again for the stale post');
  });

  it('a 401 leads to one refresh and one resend', async () => {
    const s = await fake();
    s.expireAccessToken();
    const saved: Record<string, unknown>[] = [];
    const result = await publisher().publish(request(s, { credentials: credentialsOf(s, { access_token: 'revoked-token' }), saved }));
    assert.deepEqual(
      s.requests.map((r) => r.path),
      ['/2/tweets', '/2/oauth2/token', '/2/tweets'],
    );
    assert.equal(result.externalId, s.posts[0]?.id);
    assert.equal(saved[0]?.['access_token'], s.accessToken);
  });

  it('a 401 after the refresh is not refreshed again: the credentials are rejected', async () => {
    const s = await fake();
    s.postOverrides.push(
      { kind: 'answer', status: 401, body: '{"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}' },
      { kind: 'answer', status: 401, body: '{"title":"Unauthorized","type":"about:blank","status":401,"detail":"Unauthorized"}' },
    );
    const e = await rejection(s, publisher().publish(request(s)));
    assert.ok(e instanceof CredentialsRejectedError, String(e));
    assert.match(e.message, /even after a refresh/);
    assert.equal(s.requests.filter((r) => r.path === '/2/oauth2/token').length, 1);
    assert.equal(s.requests.filter((r) => r.path === '/2/tweets').length, 2);
  });

  it('a refused refresh (dead refresh token, wrong client secret) rejects the credentials; nothing is posted', async () => {
    const s = await fake();
    const expiring = { expires_at: new Date(Date.now() + 1_000).toISOString() };
    const dead = await rejection(s, publisher().publish(request(s, { credentials: credentialsOf(s, { ...expiring, refresh_token: 'dead-refresh-token' }) })));
    assert.ok(dead instanceof CredentialsRejectedError, String(dead));
    assert.match(dead.message, /refused to refresh the access token \(HTTP 400 invalid_request/);
    s.clientSecret = CLIENT_SECRET;
    const wrong = await rejection(s, publisher().publish(request(s, { credentials: credentialsOf(s, { ...expiring, client_secret: `${CLIENT_SECRET}x` }) })));
    assert.ok(wrong instanceof CredentialsRejectedError, String(wrong));
    assert.match(wrong.message, /HTTP 401/);
    s.tokenOverrides.push({ kind: 'answer', status: 400, body: JSON.stringify({ error: 'invalid_grant', error_description: `refresh token ${s.refreshToken} expired` }) });
    const grant = await rejection(s, publisher().publish(request(s, { credentials: credentialsOf(s, { ...expiring, client_secret: CLIENT_SECRET }) })));
    assert.ok(grant instanceof CredentialsRejectedError, String(grant));
    assert.match(grant.message, /invalid_grant/);
    const none = await rejection(s, publisher().publish(request(s, { credentials: credentialsOf(s, { access_token: 'revoked', refresh_token: undefined }) })));
    assert.ok(none instanceof CredentialsRejectedError, String(none));
    assert.match(none.message, /no refresh_token/);
    assert.equal(s.posts.length, 0);
  });

  it('a refresh that fails with 5xx is retried later and was not delivered', async () => {
    const s = await fake();
    s.tokenOverrides.push({ kind: 'answer', status: 503, body: '{"title":"Service Unavailable"}' });
    const e = await rejection(s, publisher().publish(request(s, { credentials: credentialsOf(s, { expires_at: new Date(Date.now() - 1_000).toISOString() }) })));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.maybeDelivered, false);
    assert.equal(s.posts.length, 0);
  });

  it('a duplicate (403) is permanent; another 403 rejects the credentials', async () => {
    const s = await fake();
    const p = publisher();
    await p.publish(request(s, { text: 'same words' }));
    const duplicate = await rejection(s, p.publish(request(s, { text: 'same words' })));
    assert.ok(duplicate instanceof PermanentPublishError, String(duplicate));
    assert.match(duplicate.message, /X refused a duplicate of an earlier post/);
    s.postOverrides.push({
      kind: 'answer',
      status: 403,
      body: '{"detail":"You are not permitted to perform this action.","type":"about:blank","title":"Forbidden","status":403}',
    });
    const forbidden = await rejection(s, p.publish(request(s, { text: 'other words' })));
    assert.ok(forbidden instanceof CredentialsRejectedError, String(forbidden));
    assert.match(forbidden.message, /not permitted to perform this action/);
    assert.equal(s.posts.length, 1);
  });

  it('429 waits until x-rate-limit-reset (Unix seconds), or the used-up 24-hour limit, and was not delivered', async () => {
    const s = await fake();
    const p = publisher();
    const reset = Math.floor(Date.now() / 1000) + 600;
    s.postOverrides.push({ kind: 'answer', status: 429, body: '{"title":"Too Many Requests","detail":"Too Many Requests","type":"about:blank","status":429}', headers: { 'x-rate-limit-limit': '100', 'x-rate-limit-remaining': '0', 'x-rate-limit-reset': String(reset) } });
    const e = await rejection(s, p.publish(request(s)));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.maybeDelivered, false);
    assert.ok(e.retryAfterMs !== null && e.retryAfterMs > 595_000 && e.retryAfterMs <= 600_000, String(e.retryAfterMs));
    const daily = reset + 40_000;
    s.postOverrides.push({
      kind: 'answer',
      status: 429,
      body: '{"title":"Too Many Requests"}',
      headers: { 'x-rate-limit-reset': String(reset), 'x-user-limit-24hour-remaining': '0', 'x-user-limit-24hour-reset': String(daily) },
    });
    const day = await rejection(s, p.publish(request(s)));
    assert.ok(day instanceof RetryablePublishError);
    assert.ok(day.retryAfterMs !== null && day.retryAfterMs > 40_595_000, String(day.retryAfterMs));
    assert.equal(s.posts.length, 0);
  });

  it('400 is permanent with a short excerpt that hides an echoed token', async () => {
    const s = await fake();
    s.postOverrides.push({ kind: 'answer', status: 400, body: JSON.stringify({ errors: [{ message: `bad text; Authorization: Bearer ${s.accessToken}` }], title: 'Invalid Request' }) });
    const e = await rejection(s, publisher().publish(request(s)));
    assert.ok(e instanceof PermanentPublishError, String(e));
    assert.match(e.message, /HTTP 400: bad text/);
    assert.ok(e.message.length < 300);
  });

  it('500, a 201 without an id, and a cut after sending are maybe delivered; nothing is resent', async () => {
    const s = await fake();
    const p = publisher();
    s.postOverrides.push({ kind: 'answer', status: 500, body: '{"title":"Internal Server Error"}' });
    const e500 = await rejection(s, p.publish(request(s)));
    assert.ok(e500 instanceof RetryablePublishError, String(e500));
    assert.equal(e500.maybeDelivered, true);
    assert.match(e500.message, /HTTP 500/);
    s.postOverrides.push({ kind: 'answer', status: 201, body: '{"data":{}}' });
    const noId = await rejection(s, p.publish(request(s)));
    assert.ok(noId instanceof RetryablePublishError, String(noId));
    assert.equal(noId.maybeDelivered, true);
    s.postOverrides.push({ kind: 'cut-after-post' });
    const cut = await rejection(s, p.publish(request(s)));
    assert.ok(cut instanceof RetryablePublishError, String(cut));
    assert.equal(cut.maybeDelivered, true);
    assert.match(cut.message, /after the request was sent/);
    assert.equal(s.posts.length, 1, 'X posted it');
    assert.equal(s.requests.length, 3, 'one request per publish');
  });

  it('refuses 127.0.0.1 unless the channel opts in (SSRF protection)', async () => {
    const s = await fake();
    const req = { ...request(s), channel: channel({ api_url: `https://${s.host}` }) };
    const e = await rejection(s, publisher().publish(req));
    assert.ok(e instanceof PermanentPublishError, String(e));
    assert.match(e.message, /SSRF protection/);
    assert.equal(s.requests.length, 0);
  });

  it('checkText counts as X does: weighted code points, emoji 2, URLs 23, NFC', async () => {
    assert.equal(xLength('hello'), 5);
    assert.equal(xLength('日本語'), 6, 'CJK weighs 2');
    assert.equal(xLength('😀'), 2);
    assert.equal(xLength('👨‍👩‍👧‍👦'), 2, 'a ZWJ sequence counts once');
    assert.equal(xLength('👍🏽'), 2, 'a skin tone does not add');
    assert.equal(xLength('🇫🇷'), 2, 'a flag');
    assert.equal(xLength('see https://example.com/a/very/long/path/that/goes/on?and=on'), 4 + 23);
    assert.equal(xLength('visit example.com.'), 6 + 23 + 1, 'a bare domain is a URL; the final dot is not');
    assert.equal(xLength('cafe\u0301'), 4, 'NFC: e + combining accent is one character');
    assert.equal(xLength('“quotes” — dash'), 15, 'quotes and dashes weigh 1');
    assert.equal(xLength('…'), 2, 'the ellipsis U+2026 is outside the light ranges');
    assert.equal(xLength('Привет'), 6, 'Cyrillic weighs 1');
    const settings = {};
    assert.equal(xPublisher.checkText('a'.repeat(280), settings), null);
    assert.match(xPublisher.checkText('a'.repeat(281), settings) ?? '', /281 characters as X counts them/);
    assert.equal(xPublisher.checkText('字'.repeat(140), settings), null);
    assert.match(xPublisher.checkText('字'.repeat(141), settings) ?? '', /282 characters/);
    assert.equal(xPublisher.checkText(`${'a'.repeat(256)} https://example.com/${'x'.repeat(200)}`, settings), null);
    assert.match(xPublisher.checkText('  ', settings) ?? '', /empty/);
    const s = await fake();
    const e = await rejection(s, publisher().publish(request(s, { text: '😀'.repeat(141) })));
    assert.ok(e instanceof PermanentPublishError);
    assert.equal(s.requests.length, 0);
  });

  it('verify: users/me names the account, or rejects the credentials', async () => {
    const s = await fake();
    const options = { timeoutMs: 2_000, concurrency: 1 };
    const settings = { api_url: s.url, allow_private_network: true };
    assert.deepEqual(await xPublisher.verify?.(settings, credentialsOf(s), options), { account: '@XDevelopers' });
    assert.equal(s.requests[0]?.method, 'GET');
    assert.equal(s.requests[0]?.path, '/2/users/me');
    assert.equal(s.requests[0]?.headers['authorization'], `Bearer ${s.accessToken}`);
    const e = await rejection(s, xPublisher.verify?.(settings, credentialsOf(s, { access_token: 'wrong' }), options) ?? Promise.resolve());
    assert.ok(e instanceof CredentialsRejectedError, String(e));
    assert.equal(s.requests.filter((r) => r.path === '/2/oauth2/token').length, 0, 'verify never refreshes (it could not store the rotated token)');
    const none = await rejection(s, xPublisher.verify?.(settings, null, options) ?? Promise.resolve());
    assert.ok(none instanceof SettingsError);
  });

  it('validates settings and credentials, naming fields and never values', () => {
    const problem = (settings: Record<string, unknown>) => {
      try {
        xPublisher.parseSettings(settings);
        return null;
      } catch (e) {
        assert.ok(e instanceof SettingsError);
        return e.message;
      }
    };
    assert.equal(problem({}), null);
    assert.equal(problem({ api_url: 'https://api.x.com' }), null);
    assert.equal(problem({ api_url: 'http://api.x.com' }), 'x api_url must be https:// (http:// only with allow_private_network)');
    assert.equal(problem({ api_url: 'http://127.0.0.1:9', allow_private_network: true }), null);
    assert.match(problem({ api_url: 'https://api.x.com?x=1' }) ?? '', /query/);
    const credentials = (c: Record<string, unknown>) => {
      try {
        xPublisher.parseCredentials?.(c);
        return null;
      } catch (e) {
        assert.ok(e instanceof SettingsError);
        assert.ok(!e.message.includes(CLIENT_SECRET));
        return e.message;
      }
    };
    assert.equal(credentials({ access_token: 'a', client_id: CLIENT_ID }), null);
    assert.match(credentials({ access_token: 'a' }) ?? '', /client_id/);
    assert.match(credentials({ client_id: CLIENT_ID }) ?? '', /access_token/);
    assert.match(credentials({ access_token: 'a', client_id: CLIENT_ID, client_secret: `${CLIENT_SECRET} x` }) ?? '', /client_secret must be printable ASCII/);
    assert.match(credentials({ access_token: 'a', client_id: CLIENT_ID, expires_at: 'tomorrow' }) ?? '', /expires_at/);
  });
});
