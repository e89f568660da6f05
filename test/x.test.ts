import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { xLength, xPublisher } from '../src/publishers/x.ts';
import { CredentialsRejectedError, PermanentPublishError, RetryablePublishError, SettingsError, type LoadedImage, type Publisher, type PublishRequest } from '../src/publishers/publisher.ts';
import { loadPublisherModule } from '../src/publishers/registry.ts';
import { PLATFORMS, type Channel, type PublishedPart } from '../src/types.ts';
import { CLIENT_ID, CLIENT_SECRET, type FakeX, startX } from './helpers/fake-x.ts';

/** images as the core hands them over: bytes whose type is known from their first bytes */
const PNG = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.from('png body \r\n--not-a-boundary\r\n\u0000\u00ff', 'latin1')]);
const JPEG = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.from('jpeg body', 'latin1')]);
const png = (alt = '', filename = 'chart.png'): LoadedImage => ({ bytes: PNG, mimeType: 'image/png', alt, filename });
const jpeg = (alt = '', filename = 'photo.jpg'): LoadedImage => ({ bytes: JPEG, mimeType: 'image/jpeg', alt, filename });

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
  const request = (
    s: FakeX,
    overrides: {
      text?: string;
      credentials?: Record<string, unknown> | null;
      saved?: Record<string, unknown>[];
      images?: LoadedImage[];
      part?: { index: number; count: number };
      replyTo?: { root: PublishedPart; parent: PublishedPart } | null;
    } = {},
  ): PublishRequest => ({
    postId: 42,
    attempt: 1,
    text: overrides.text ?? 'Hello, X',
    runAt: new Date('2026-12-01T12:00:00.000Z'),
    idempotencyKey: overrides.part === undefined || overrides.part.index === 0 ? 'key-42' : `key-42.${overrides.part.index}`,
    images: overrides.images ?? [],
    part: overrides.part ?? { index: 0, count: 1 },
    replyTo: overrides.replyTo ?? null,
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
    assert.equal(xPublisher.threads, true);
    assert.deepEqual(xPublisher.media, { maxImages: 4, maxBytes: 5 * 1024 * 1024, maxAltLength: 1000, types: ['image/jpeg', 'image/png', 'image/webp'] });
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
  // --- images ------------------------------------------------------------------------

  it('uploads each image (multipart, tweet_image), gives it its alt text, then posts with the media ids in order', async () => {
    const s = await fake();
    const result = await publisher().publish(request(s, { text: 'Two pictures', images: [png('A bar chart of sales', 'sales "Q3".png'), jpeg()] }));
    assert.deepEqual(
      s.requests.map((r) => `${r.method} ${r.path}`),
      ['POST /2/media/upload', 'POST /2/media/metadata', 'POST /2/media/upload', 'POST /2/tweets'],
      'the image without alt text gets no metadata call',
    );
    const [upload, metadata, , tweet] = s.requests;
    assert.equal(upload?.headers['authorization'], `Bearer ${s.accessToken}`);
    assert.match(upload?.headers['content-type'] ?? '', /^multipart\/form-data; boundary=/);
    const form = upload?.multipart;
    assert.ok(form !== null && form !== undefined, 'a multipart body a standard parser reads');
    assert.deepEqual([...form.keys()].sort(), ['media', 'media_category', 'media_type']);
    assert.equal(form.get('media_category'), 'tweet_image');
    assert.equal(form.get('media_type'), 'image/png');
    const file = form.get('media');
    assert.ok(file instanceof File);
    assert.equal(file.type, 'image/png');
    assert.deepEqual(Buffer.from(await file.arrayBuffer()), PNG, 'the raw bytes, unchanged');
    const [first, second] = s.media;
    assert.equal(first?.filename, 'sales "Q3".png', 'the quote, escaped as browsers do, reads back as written');
    assert.equal(second?.mediaType, 'image/jpeg');
    assert.deepEqual(second?.bytes, JPEG);
    assert.equal(metadata?.headers['authorization'], `Bearer ${s.accessToken}`);
    assert.match(metadata?.headers['content-type'] ?? '', /^application\/json/);
    assert.deepEqual(metadata?.body, { id: first?.id, metadata: { alt_text: { text: 'A bar chart of sales' } } });
    assert.equal(first?.alt, 'A bar chart of sales');
    assert.equal(second?.alt, null);
    assert.deepEqual(tweet?.body, { text: 'Two pictures', media: { media_ids: [first?.id, second?.id] } });
    assert.deepEqual(s.posts[0]?.mediaIds, [first?.id, second?.id]);
    assert.equal(result.externalId, s.posts[0]?.id);
  });

  it('a post of images only is sent without text', async () => {
    const s = await fake();
    await publisher().publish(request(s, { text: '', images: [jpeg('a cat')] }));
    assert.deepEqual(s.requests.at(-1)?.body, { media: { media_ids: [s.media[0]?.id] } });
    assert.equal(s.posts[0]?.text, undefined);
  });

  it('refuses images X cannot take before anything is sent', async () => {
    const s = await fake();
    const gif: LoadedImage = { bytes: Buffer.from('GIF89a'), mimeType: 'image/gif', alt: '', filename: 'anim.gif' };
    const e = await rejection(s, publisher().publish(request(s, { images: [png(), gif] })));
    assert.ok(e instanceof PermanentPublishError, String(e));
    assert.match(e.message, /image 2 \(anim\.gif\) is image\/gif/);
    const five = await rejection(s, publisher().publish(request(s, { images: [png(), png(), png(), png(), png()] })));
    assert.match(five.message, /5 images; X takes at most 4/);
    assert.equal(s.requests.length, 0);
  });

  it('refreshes an access token that expired before a media upload: once, stored, and the upload is made again', async () => {
    const s = await fake();
    const old = s.accessToken;
    s.expireAccessToken();
    const saved: Record<string, unknown>[] = [];
    await publisher().publish(request(s, { images: [png('alt')], credentials: credentialsOf(s, { access_token: old }), saved }));
    assert.deepEqual(
      s.requests.map((r) => r.path),
      ['/2/media/upload', '/2/oauth2/token', '/2/media/upload', '/2/media/metadata', '/2/tweets'],
    );
    assert.equal(s.requests[0]?.headers['authorization'], `Bearer ${old}`);
    for (const r of s.requests.slice(2)) assert.equal(r.headers['authorization'], `Bearer ${s.accessToken}`, `${r.path} uses the new token`);
    assert.equal(saved.length, 1, 'saved back once');
    assert.equal(saved[0]?.['access_token'], s.accessToken);
    assert.equal(saved[0]?.['refresh_token'], s.refreshToken);
    assert.equal(s.media.length, 1);
    assert.equal(s.posts.length, 1);
  });

  it('a token about to expire is refreshed before the first upload; a 401 after that is not refreshed again', async () => {
    const s = await fake();
    const saved: Record<string, unknown>[] = [];
    await publisher().publish(request(s, { images: [png()], credentials: credentialsOf(s, { expires_at: new Date(Date.now() + 5_000).toISOString() }), saved }));
    assert.deepEqual(s.requests.map((r) => r.path), ['/2/oauth2/token', '/2/media/upload', '/2/tweets']);
    assert.equal(saved.length, 1);
    s.uploadOverrides.push({ kind: 'answer', status: 401, body: '{"title":"Unauthorized","status":401,"detail":"Unauthorized"}' });
    const e = await rejection(s, publisher().publish(request(s, { text: 'again', images: [png()], credentials: credentialsOf(s, { expires_at: new Date(Date.now() + 5_000).toISOString() }) })));
    assert.ok(e instanceof CredentialsRejectedError, String(e));
    assert.match(e.message, /even after a refresh/);
    assert.equal(s.requests.filter((r) => r.path === '/2/oauth2/token').length, 2, 'one refresh per publish');
    assert.equal(s.posts.length, 1);
  });

  it('media errors: 400 and 413 fail the post naming the image, 403 wants media.write, 429 waits, 5xx and cuts retry; none was delivered', async () => {
    const s = await fake();
    const p = publisher();
    const images = [jpeg('first'), png('second', 'diagram.png')];
    s.uploadOverrides.push({ kind: 'pass' });
    s.uploadOverrides.push({ kind: 'answer', status: 400, body: JSON.stringify({ errors: [{ message: 'media type unrecognized.' }], title: 'Invalid Request' }) });
    const invalid = await rejection(s, p.publish(request(s, { images })));
    assert.ok(invalid instanceof PermanentPublishError, String(invalid));
    assert.match(invalid.message, /X refused the upload of image 2 \(diagram\.png\) \(HTTP 400: media type unrecognized\.\)/);

    s.uploadOverrides.push({ kind: 'answer', status: 413, body: '' });
    const big = await rejection(s, p.publish(request(s, { images })));
    assert.ok(big instanceof PermanentPublishError, String(big));
    assert.match(big.message, /image 1 \(photo\.jpg\): the image is too big for X \(HTTP 413\)/);

    s.metadataOverrides.push({ kind: 'answer', status: 400, body: '{"detail":"alt text is invalid"}' });
    const alt = await rejection(s, p.publish(request(s, { images })));
    assert.ok(alt instanceof PermanentPublishError, String(alt));
    assert.match(alt.message, /the alt text of image 1 \(photo\.jpg\)/);

    s.scopes = ['tweet.read', 'tweet.write', 'users.read', 'offline.access'];
    const scope = await rejection(s, p.publish(request(s, { images })));
    assert.ok(scope instanceof CredentialsRejectedError, String(scope));
    assert.match(scope.message, /media\.write/);
    s.scopes = [...s.scopes, 'media.write'];

    const reset = Math.floor(Date.now() / 1000) + 900;
    s.uploadOverrides.push({ kind: 'answer', status: 429, body: '{"title":"Too Many Requests"}', headers: { 'x-rate-limit-remaining': '0', 'x-rate-limit-reset': String(reset) } });
    const limited = await rejection(s, p.publish(request(s, { images })));
    assert.ok(limited instanceof RetryablePublishError, String(limited));
    assert.equal(limited.maybeDelivered, false);
    assert.ok(limited.retryAfterMs !== null && limited.retryAfterMs > 895_000 && limited.retryAfterMs <= 900_000, String(limited.retryAfterMs));

    s.uploadOverrides.push({ kind: 'answer', status: 503, body: '{"title":"Service Unavailable"}' });
    const down = await rejection(s, p.publish(request(s, { images })));
    assert.ok(down instanceof RetryablePublishError, String(down));
    assert.equal(down.maybeDelivered, false, 'an upload publishes nothing');

    s.uploadOverrides.push({ kind: 'cut-after' });
    const cut = await rejection(s, p.publish(request(s, { images })));
    assert.ok(cut instanceof RetryablePublishError, String(cut));
    assert.equal(cut.maybeDelivered, false, 'a cut upload publishes nothing');
    assert.match(cut.message, /media upload of image 1 \(photo\.jpg\)/);

    s.uploadOverrides.push({ kind: 'answer', status: 200, body: '{"data":{}}' });
    const noId = await rejection(s, p.publish(request(s, { images })));
    assert.ok(noId instanceof RetryablePublishError, String(noId));
    assert.equal(noId.maybeDelivered, false);

    assert.equal(s.posts.length, 0);
    assert.equal(s.requests.filter((r) => r.path === '/2/tweets').length, 0, 'the post is never created after a media failure');
  });

  it('a media id X never issued is refused by the post (400): permanent', async () => {
    const s = await fake();
    s.uploadOverrides.push({ kind: 'answer', status: 200, body: '{"data":{"id":"999","media_key":"3_999"}}' });
    const e = await rejection(s, publisher().publish(request(s, { images: [png()] })));
    assert.ok(e instanceof PermanentPublishError, String(e));
    assert.match(e.message, /HTTP 400: Your media IDs are invalid/);
    assert.deepEqual(s.requests.at(-1)?.body, { text: 'Hello, X', media: { media_ids: ['999'] } });
    assert.equal(s.posts.length, 0);
  });

  it('a post with images cut after sending is maybe delivered', async () => {
    const s = await fake();
    s.postOverrides.push({ kind: 'cut-after-post' });
    const e = await rejection(s, publisher().publish(request(s, { images: [png()] })));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.maybeDelivered, true);
    assert.equal(s.posts.length, 1);
  });

  // --- threads -----------------------------------------------------------------------

  it('a thread of 3 parts: each part replies to the one before, with its images', async () => {
    const s = await fake();
    const p = publisher();
    const texts = ['1/3 the start', '2/3 the middle', '3/3 the end'];
    const published: PublishedPart[] = [];
    for (const [index, text] of texts.entries()) {
      const root = published[0];
      const parent = published.at(-1);
      const replyTo = root === undefined || parent === undefined ? null : { root, parent };
      published.push(await p.publish(request(s, { text, part: { index, count: 3 }, replyTo, images: index === 1 ? [png('middle chart')] : [] })));
    }
    const tweets = s.requests.filter((r) => r.path === '/2/tweets');
    assert.deepEqual(tweets[0]?.body, { text: '1/3 the start' });
    assert.deepEqual(tweets[1]?.body, { text: '2/3 the middle', media: { media_ids: [s.media[0]?.id] }, reply: { in_reply_to_tweet_id: published[0]?.externalId } });
    assert.deepEqual(tweets[2]?.body, { text: '3/3 the end', reply: { in_reply_to_tweet_id: published[1]?.externalId } });
    assert.deepEqual(
      s.posts.map((post) => [post.text, post.inReplyTo]),
      [
        ['1/3 the start', null],
        ['2/3 the middle', s.posts[0]?.id],
        ['3/3 the end', s.posts[1]?.id],
      ],
      'the chain, as X holds it',
    );
    assert.deepEqual(
      published.map((r) => r.externalId),
      s.posts.map((post) => post.id),
    );
  });

  it('a reply to a post X does not have fails the post (it does not refuse the credentials); a part cut after sending is maybe delivered', async () => {
    const s = await fake();
    const p = publisher();
    const gone = { externalId: '1234', externalUrl: 'https://x.com/i/web/status/1234' };
    const e = await rejection(s, p.publish(request(s, { text: 'orphan', part: { index: 1, count: 2 }, replyTo: { root: gone, parent: gone } })));
    assert.ok(e instanceof PermanentPublishError, String(e));
    assert.match(e.message, /part 2 cannot reply to the part before it \(HTTP 403: You attempted to reply to a Tweet that is deleted/);
    const root = await p.publish(request(s, { text: 'root' }));
    s.postOverrides.push({ kind: 'cut-after-post' });
    const cut = await rejection(s, p.publish(request(s, { text: 'second', part: { index: 1, count: 2 }, replyTo: { root, parent: root } })));
    assert.ok(cut instanceof RetryablePublishError, String(cut));
    assert.equal(cut.maybeDelivered, true);
    assert.equal(s.posts[1]?.inReplyTo, root.externalId, 'X has the reply');
  });
});
