import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { facebookPublisher, regainAccessMs } from '../src/publishers/facebook.ts';
import { CredentialsRejectedError, PermanentPublishError, RetryablePublishError, SettingsError, type Publisher, type PublishRequest } from '../src/publishers/publisher.ts';
import { loadPublisherModule } from '../src/publishers/registry.ts';
import { PLATFORMS, type Channel } from '../src/types.ts';
import { PAGE_ID, PAGE_NAME, TOKEN, VERSION, type FakeFacebook, graphError, startFacebook } from './helpers/fake-facebook.ts';

describe('facebook publisher', () => {
  const servers: FakeFacebook[] = [];
  const publishers: Publisher[] = [];
  after(async () => {
    for (const p of publishers) await p.close();
    for (const s of servers) await s.close();
  });
  const facebook = async () => {
    const s = await startFacebook();
    servers.push(s);
    return s;
  };
  /** guarded as in production: the channels below opt in to 127.0.0.1 themselves */
  const publisher = (timeoutMs = 2_000) => {
    const p = facebookPublisher.createPublisher({ timeoutMs, concurrency: 2, allowPrivateNetwork: false });
    publishers.push(p);
    return p;
  };

  const channel = (settings: Record<string, unknown>): Channel => ({
    id: 11,
    name: 'bakery-page',
    platform: 'facebook',
    onUnknown: 'hold',
    settings,
    enabled: true,
    credentials: 'sealed',
    attention: null,
    createdAt: new Date(),
  });
  const request = (settings: Record<string, unknown>, overrides: { text?: string; token?: string | null } = {}): PublishRequest => ({
    postId: 42,
    attempt: 1,
    text: overrides.text ?? 'Fresh bread at 7',
    runAt: new Date('2026-12-01T12:00:00.000Z'),
    idempotencyKey: 'key-42',
    images: [],
    part: { index: 0, count: 1 },
    replyTo: null,
    channel: channel(settings),
    credentials: overrides.token === null ? null : { page_access_token: overrides.token ?? TOKEN },
    saveCredentials: async () => undefined,
    signal: new AbortController().signal,
  });
  const local = (s: FakeFacebook, extra: Record<string, unknown> = {}) => ({ page_id: PAGE_ID, graph_version: VERSION, api_url: s.url, allow_private_network: true, ...extra });

  /** the error a promise fails with, checked to hold no trace of the token */
  async function rejection(p: Promise<unknown>): Promise<Error> {
    try {
      await p;
    } catch (e) {
      assert.ok(e instanceof Error);
      assert.ok(!e.message.includes(TOKEN), `the token leaked into: ${e.message}`);
      assert.ok(!(e.stack ?? '').includes(TOKEN), 'the token leaked into the stack');
      assert.ok(!JSON.stringify(e).includes(TOKEN), 'the token leaked into a property');
      return e;
    }
    assert.fail('expected the call to fail');
  }

  it('is registered as platform facebook: hold on unknown outcomes, no look-up', async () => {
    assert.equal(await loadPublisherModule('facebook'), facebookPublisher);
    assert.ok(PLATFORMS.includes('facebook'));
    assert.equal(facebookPublisher.defaultOnUnknown, 'hold');
    assert.equal(facebookPublisher.canLookUp, false);
  });

  it('posts to /{version}/{page-id}/feed with a Bearer token and a JSON message; returns the id and its URL', async () => {
    const s = await facebook();
    const result = await publisher().publish(request(local(s)));
    const [post] = s.posts;
    assert.ok(post !== undefined);
    assert.equal(post.message, 'Fresh bread at 7');
    assert.deepEqual(result, { externalId: post.id, externalUrl: `https://www.facebook.com/${post.id}` });
    assert.match(post.id, new RegExp(`^${PAGE_ID}_\\d+$`));
    const [sent] = s.requests;
    assert.equal(sent?.method, 'POST');
    assert.equal(sent?.path, `/${VERSION}/${PAGE_ID}/feed`);
    assert.equal(sent?.headers['authorization'], `Bearer ${TOKEN}`);
    assert.equal(sent?.headers['content-type'], 'application/json; charset=utf-8');
    assert.deepEqual(sent?.body, { message: 'Fresh bread at 7' });
    assert.equal(sent?.query.get('access_token'), null, 'the token travels in the header only');
    assert.equal(s.requests.length, 1);
  });

  it('the default graph_version is a vNN.N one', async () => {
    const s = await facebook();
    s.feedOverrides.push({ kind: 'answer', status: 200, body: JSON.stringify({ id: `${PAGE_ID}_1` }) });
    await publisher().publish(request({ page_id: PAGE_ID, api_url: s.url, allow_private_network: true }));
    assert.match(s.requests[0]?.path ?? '', new RegExp(`^/v\\d+\\.\\d+/${PAGE_ID}/feed$`));
  });

  it('code 190 (invalid token) rejects the credentials, never showing the token', async () => {
    const s = await facebook();
    const e = await rejection(publisher().publish(request(local(s), { token: `${TOKEN}x` })));
    assert.ok(e instanceof CredentialsRejectedError, String(e));
    assert.match(e.message, /facebook channel bakery-page \(127\.0\.0\.1:\d+\) refused the Page access token \(code 190 OAuthException/);
    assert.match(e.message, /fbtrace_id AbCdEf012_-/);
    assert.equal(s.posts.length, 0);
  });

  it('code 200 and 10 (permissions) reject the credentials', async () => {
    const s = await facebook();
    const p = publisher();
    s.feedOverrides.push({ kind: 'answer', status: 403, body: graphError(200, '(#200) The user hasn\'t authorized the application to perform this action') });
    const denied = await rejection(p.publish(request(local(s))));
    assert.ok(denied instanceof CredentialsRejectedError, String(denied));
    assert.match(denied.message, /denied the permission to post \(code 200/);
    s.feedOverrides.push({ kind: 'answer', status: 400, body: graphError(10, '(#10) Application does not have permission for this action') });
    const ten = await rejection(p.publish(request(local(s))));
    assert.ok(ten instanceof CredentialsRejectedError, String(ten));
  });

  it('code 4 / 32 / 613 are rate limits: retried after estimated_time_to_regain_access, not delivered', async () => {
    const s = await facebook();
    const p = publisher();
    const usage = JSON.stringify({ '1234567890': [{ type: 'pages', call_count: 100, total_cputime: 10, total_time: 10, estimated_time_to_regain_access: 5 }] });
    s.feedOverrides.push({ kind: 'answer', status: 400, body: graphError(4, '(#4) Application request limit reached'), headers: { 'x-business-use-case-usage': usage } });
    const e = await rejection(p.publish(request(local(s))));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.retryAfterMs, 5 * 60_000);
    assert.equal(e.maybeDelivered, false);
    assert.match(e.message, /rate limited \(code 4/);
    s.feedOverrides.push({ kind: 'answer', status: 400, body: graphError(32, 'Page request limit reached'), headers: { 'x-app-usage': '{"call_count":100,"estimated_time_to_regain_access":2}' } });
    const page = await rejection(p.publish(request(local(s))));
    assert.ok(page instanceof RetryablePublishError, String(page));
    assert.equal(page.retryAfterMs, 2 * 60_000);
    s.feedOverrides.push({ kind: 'answer', status: 400, body: graphError(613, 'Calls to this api have exceeded the rate limit.') });
    const bare = await rejection(p.publish(request(local(s))));
    assert.ok(bare instanceof RetryablePublishError, String(bare));
    assert.equal(bare.retryAfterMs, null);
    assert.equal(bare.maybeDelivered, false);
    assert.equal(s.posts.length, 0);
    assert.equal(regainAccessMs({ 'x-business-use-case-usage': 'not json' }), null);
  });

  it('code 368 (blocked for policy) needs an operator, with the message', async () => {
    const s = await facebook();
    s.feedOverrides.push({ kind: 'answer', status: 400, body: graphError(368, 'It looks like you were misusing this feature by going too fast.', { error_subcode: 1390008 }) });
    const e = await rejection(publisher().publish(request(local(s))));
    assert.ok(e instanceof CredentialsRejectedError, String(e));
    assert.match(e.message, /temporarily blocked from posting \(code 368\/1390008 OAuthException: It looks like you were misusing/);
  });

  it('code 506 (duplicate post) is permanent', async () => {
    const s = await facebook();
    s.feedOverrides.push({ kind: 'answer', status: 400, body: graphError(506, 'Duplicate status message') });
    const e = await rejection(publisher().publish(request(local(s))));
    assert.ok(e instanceof PermanentPublishError, String(e));
    assert.match(e.message, /duplicate post \(code 506/);
  });

  it('codes 1 and 2 and HTTP 500 are maybe delivered', async () => {
    const s = await facebook();
    const p = publisher();
    for (const code of [1, 2]) {
      s.feedOverrides.push({ kind: 'answer', status: 500, body: graphError(code, 'An unknown error has occurred.') });
      const e = await rejection(p.publish(request(local(s))));
      assert.ok(e instanceof RetryablePublishError, String(e));
      assert.equal(e.maybeDelivered, true);
      assert.match(e.message, new RegExp(`code ${code} `));
    }
    s.feedOverrides.push({ kind: 'answer', status: 500, body: '<html>oops</html>' });
    const html = await rejection(p.publish(request(local(s))));
    assert.ok(html instanceof RetryablePublishError, String(html));
    assert.equal(html.maybeDelivered, true);
    assert.match(html.message, /HTTP 500/);
    s.feedOverrides.push({ kind: 'answer', status: 200, body: '{"success":true}' });
    const noId = await rejection(p.publish(request(local(s))));
    assert.ok(noId instanceof RetryablePublishError, String(noId));
    assert.equal(noId.maybeDelivered, true);
    assert.match(noId.message, /without a post id/);
  });

  it('a connection cut after the request was sent is maybe delivered (Facebook did post it)', async () => {
    const s = await facebook();
    s.feedOverrides.push({ kind: 'cut-after-post' });
    const e = await rejection(publisher().publish(request(local(s))));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.maybeDelivered, true);
    assert.match(e.message, /after the request was sent/);
    assert.equal(s.posts.length, 1);
    assert.equal(s.requests.length, 1, 'not sent again');
  });

  it('other errors are permanent with a redacted excerpt (fbtrace_id kept, an echoed token hidden)', async () => {
    const s = await facebook();
    const p = publisher();
    s.feedOverrides.push({ kind: 'answer', status: 400, body: graphError(100, `(#100) bad parameter, access_token=${TOKEN} Bearer ${TOKEN} ${TOKEN}`) });
    const e = await rejection(p.publish(request(local(s))));
    assert.ok(e instanceof PermanentPublishError, String(e));
    assert.match(e.message, /HTTP 400: code 100 OAuthException: \(#100\) bad parameter/);
    assert.match(e.message, /fbtrace_id AbCdEf012_-/);
    s.feedOverrides.push({ kind: 'answer', status: 404, body: `Not Found ${TOKEN}` });
    const plain = await rejection(p.publish(request(local(s))));
    assert.ok(plain instanceof PermanentPublishError, String(plain));
    assert.match(plain.message, /HTTP 404: Not Found/);
    s.feedOverrides.push({ kind: 'answer', status: 302, body: '', headers: { location: 'https://example.com/' } });
    const redirect = await rejection(p.publish(request(local(s))));
    assert.ok(redirect instanceof PermanentPublishError, String(redirect));
    assert.match(redirect.message, /redirect/);
  });

  it('refuses 127.0.0.1 unless the channel opts in (SSRF protection); missing or bad tokens send nothing', async () => {
    const s = await facebook();
    const p = publisher();
    const ssrf = await rejection(p.publish(request({ page_id: PAGE_ID, api_url: `https://${s.host}` })));
    assert.ok(ssrf instanceof PermanentPublishError, String(ssrf));
    assert.match(ssrf.message, /SSRF protection/);
    const none = await rejection(p.publish(request(local(s), { token: null })));
    assert.ok(none instanceof CredentialsRejectedError);
    const spaced = await rejection(p.publish(request(local(s), { token: `${TOKEN} x` })));
    assert.ok(spaced instanceof CredentialsRejectedError);
    assert.match(spaced.message, /page_access_token must be printable ASCII/);
    assert.equal(s.requests.length, 0);
  });

  it('checkText: at most 63,206 characters, not blank; a longer text fails before sending', async () => {
    const settings = { page_id: PAGE_ID };
    assert.equal(facebookPublisher.checkText('a'.repeat(63_206), settings), null);
    assert.match(facebookPublisher.checkText('a'.repeat(63_207), settings) ?? '', /63207 characters; a Facebook post holds at most 63206/);
    assert.match(facebookPublisher.checkText('  ', settings) ?? '', /empty/);
    const s = await facebook();
    const e = await rejection(publisher().publish(request(local(s), { text: 'b'.repeat(63_207) })));
    assert.ok(e instanceof PermanentPublishError);
    assert.equal(s.requests.length, 0);
  });

  it('verify: GET /{page-id}?fields=id,name names the Page, or rejects the credentials', async () => {
    const s = await facebook();
    const options = { timeoutMs: 2_000, concurrency: 1 };
    assert.deepEqual(await facebookPublisher.verify?.(local(s), { page_access_token: TOKEN }, options), { account: PAGE_NAME });
    const sent = s.requests[0];
    assert.equal(sent?.method, 'GET');
    assert.equal(sent?.path, `/${VERSION}/${PAGE_ID}`);
    assert.equal(sent?.query.get('fields'), 'id,name');
    assert.equal(sent?.query.get('access_token'), null);
    assert.equal(sent?.headers['authorization'], `Bearer ${TOKEN}`);
    const e = await rejection(facebookPublisher.verify?.(local(s), { page_access_token: `${TOKEN}x` }, options) ?? Promise.resolve());
    assert.ok(e instanceof CredentialsRejectedError, String(e));
    assert.match(e.message, /code 190/);
    const none = await rejection(facebookPublisher.verify?.(local(s), null, options) ?? Promise.resolve());
    assert.ok(none instanceof SettingsError, String(none));
    const refused = await rejection(facebookPublisher.verify?.({ page_id: PAGE_ID, api_url: `https://${s.host}` }, { page_access_token: TOKEN }, options) ?? Promise.resolve());
    assert.ok(refused instanceof SettingsError, String(refused));
  });

  it('validates settings and credentials in one line, never echoing the token', () => {
    const problem = (settings: Record<string, unknown>) => {
      try {
        facebookPublisher.parseSettings(settings);
        return null;
      } catch (e) {
        assert.ok(e instanceof SettingsError);
        return e.message;
      }
    };
    assert.equal(problem({ page_id: PAGE_ID }), null);
    assert.equal(problem({ page_id: PAGE_ID, graph_version: 'v23.0', api_url: 'https://graph.example.com' }), null);
    assert.match(problem({}) ?? '', /needs a page_id/);
    assert.match(problem({ page_id: 'acme' }) ?? '', /digits only/);
    assert.match(problem({ page_id: 12345 }) ?? '', /page_id/);
    assert.match(problem({ page_id: PAGE_ID, graph_version: '24' }) ?? '', /graph_version must be a version like v24\.0/);
    assert.equal(problem({ page_id: PAGE_ID, api_url: 'http://graph.example.com' }), 'facebook api_url must be https:// (http:// only with allow_private_network)');
    assert.match(problem({ page_id: PAGE_ID, api_url: 'https://graph.facebook.com?access_token=x' }) ?? '', /query/);

    const credentials = (c: Record<string, unknown>) => {
      try {
        facebookPublisher.parseCredentials?.(c);
        return null;
      } catch (e) {
        assert.ok(e instanceof SettingsError);
        assert.ok(!e.message.includes(TOKEN));
        return e.message;
      }
    };
    assert.equal(credentials({ page_access_token: TOKEN }), null);
    assert.match(credentials({}) ?? '', /page_access_token/);
    assert.match(credentials({ page_access_token: `${TOKEN}\n` }) ?? '', /page_access_token/);
    assert.deepEqual(facebookPublisher.redactSettings({ page_id: PAGE_ID }), { page_id: PAGE_ID });
  });
});
