import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { slackPublisher } from '../src/publishers/slack.ts';
import { CredentialsRejectedError, PermanentPublishError, RetryablePublishError, SettingsError, type Publisher, type PublishRequest } from '../src/publishers/publisher.ts';
import { loadPublisherModule } from '../src/publishers/registry.ts';
import { PLATFORMS, type Channel } from '../src/types.ts';
import { GENERAL, PERMALINK_BASE, RANDOM, TOKEN, type FakeSlack, startSlack } from './helpers/fake-slack.ts';

describe('slack publisher', () => {
  const servers: FakeSlack[] = [];
  const publishers: Publisher[] = [];
  after(async () => {
    for (const p of publishers) await p.close();
    for (const s of servers) await s.close();
  });
  const slack = async () => {
    const s = await startSlack();
    servers.push(s);
    return s;
  };
  /** guarded as in production: the channels below opt in to 127.0.0.1 themselves */
  const publisher = (timeoutMs = 2_000) => {
    const p = slackPublisher.createPublisher({ timeoutMs, concurrency: 2, allowPrivateNetwork: false });
    publishers.push(p);
    return p;
  };

  const channel = (settings: Record<string, unknown>): Channel => ({
    id: 9,
    name: 'team-news',
    platform: 'slack',
    onUnknown: 'hold',
    settings,
    enabled: true,
    credentials: 'sealed',
    attention: null,
    createdAt: new Date(),
  });
  const request = (settings: Record<string, unknown>, overrides: { text?: string; token?: string | null; signal?: AbortSignal } = {}): PublishRequest => ({
    postId: 42,
    attempt: 1,
    text: overrides.text ?? 'Hello, Slack',
    runAt: new Date('2026-12-01T12:00:00.000Z'),
    idempotencyKey: 'key-42',
    images: [],
    part: { index: 0, count: 1 },
    replyTo: null,
    channel: channel(settings),
    credentials: overrides.token === null ? null : { bot_token: overrides.token ?? TOKEN },
    saveCredentials: async () => undefined,
    signal: overrides.signal ?? new AbortController().signal,
  });
  const local = (s: FakeSlack, extra: Record<string, unknown> = {}) => ({ channel: GENERAL, api_url: s.url, allow_private_network: true, ...extra });

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

  it('is registered as platform slack: hold on unknown outcomes, no look-up', async () => {
    const module = await loadPublisherModule('slack');
    assert.equal(module, slackPublisher);
    assert.ok(PLATFORMS.includes('slack'));
    assert.equal(slackPublisher.defaultOnUnknown, 'hold');
    assert.equal(slackPublisher.canLookUp, false);
  });

  it('posts with chat.postMessage (Bearer token, JSON body) and returns channel:ts and the permalink', async () => {
    const s = await slack();
    const result = await publisher().publish(request(local(s)));
    assert.equal(s.messages.length, 1);
    const [message] = s.messages;
    assert.ok(message !== undefined);
    assert.deepEqual(result, { externalId: `${GENERAL}:${message.ts}`, externalUrl: `${PERMALINK_BASE}/${GENERAL}/p${message.ts.replace('.', '')}` });
    const [post, link] = s.requests;
    assert.equal(post?.method, 'POST');
    assert.equal(post?.path, '/api/chat.postMessage');
    assert.equal(post?.headers['authorization'], `Bearer ${TOKEN}`);
    assert.equal(post?.headers['content-type'], 'application/json; charset=utf-8');
    assert.deepEqual(post?.body, { channel: GENERAL, text: 'Hello, Slack' }, 'no unfurl_links unless the channel sets it');
    assert.equal(link?.method, 'GET');
    assert.equal(link?.path, '/api/chat.getPermalink');
    assert.equal(link?.headers['authorization'], `Bearer ${TOKEN}`);
    assert.equal(link?.query.get('channel'), GENERAL);
    assert.equal(link?.query.get('message_ts'), message.ts);
    assert.equal(link?.query.get('token'), null, 'the token travels in the header only');
    assert.equal(s.requests.length, 2);
  });

  it('a channel named #general with unfurl_links: the id Slack answers is the external id', async () => {
    const s = await slack();
    const result = await publisher().publish(request(local(s, { channel: '#general', unfurl_links: false })));
    assert.deepEqual(s.requests[0]?.body, { channel: '#general', text: 'Hello, Slack', unfurl_links: false });
    const ts = s.messages[0]?.ts ?? '';
    assert.equal(result.externalId, `${GENERAL}:${ts}`);
    assert.equal(s.requests[1]?.query.get('channel'), GENERAL, 'the permalink is asked with the id');
    assert.equal(s.messages[0]?.unfurl_links, false);
  });

  it('a failed permalink leaves the post published without a URL, and nothing is resent', async () => {
    const s = await slack();
    const p = publisher(500);
    s.permalinkOverrides.push(
      { kind: 'answer', status: 200, body: '{"ok":false,"error":"message_not_found"}' },
      { kind: 'answer', status: 500, body: '<html>oops</html>' },
      { kind: 'answer', status: 200, body: '{"ok":true,"permalink":"javascript:alert(1)"}' },
      { kind: 'cut' },
      { kind: 'hang' },
    );
    for (let i = 1; i <= 5; i++) {
      const result = await p.publish(request(local(s)));
      assert.equal(result.externalUrl, null, `permalink failure ${i}`);
      assert.equal(result.externalId, `${GENERAL}:${s.messages[i - 1]?.ts ?? ''}`);
      assert.equal(s.messages.length, i, 'one message per publish');
    }
    assert.equal(s.requests.filter((r) => r.path === '/api/chat.postMessage').length, 5);
  });

  it('ok:false invalid_auth rejects the credentials, naming the error code and never the token', async () => {
    const s = await slack();
    const e = await rejection(publisher().publish(request(local(s), { token: `${TOKEN}x` })));
    assert.ok(e instanceof CredentialsRejectedError, String(e));
    assert.match(e.message, /slack channel team-news \(127\.0\.0\.1:\d+\) refused the bot token \(invalid_auth\)/);
    assert.equal(s.messages.length, 0);
    assert.equal(s.requests.length, 1, 'no permalink asked');
  });

  it('ok:false not_in_channel and channel_not_found: the channel needs an operator', async () => {
    const s = await slack();
    const p = publisher();
    const outside = await rejection(p.publish(request(local(s, { channel: RANDOM }))));
    assert.ok(outside instanceof CredentialsRejectedError, String(outside));
    assert.match(outside.message, new RegExp(`cannot post to ${RANDOM} \\(not_in_channel\\): invite the app`));
    const missing = await rejection(p.publish(request(local(s, { channel: '#nowhere' }))));
    assert.ok(missing instanceof CredentialsRejectedError, String(missing));
    assert.match(missing.message, /cannot post to #nowhere \(channel_not_found\)/);
    s.postOverrides.push({ kind: 'answer', status: 200, body: '{"ok":false,"error":"missing_scope","needed":"chat:write","provided":"users:read"}' });
    const scope = await rejection(p.publish(request(local(s))));
    assert.ok(scope instanceof CredentialsRejectedError, String(scope));
    assert.match(scope.message, /\(missing_scope \(needed: chat:write\)\)/);
    assert.equal(s.messages.length, 0);
  });

  it('ok:false msg_too_long and other content errors are permanent, with the code; an echoed token is hidden', async () => {
    const s = await slack();
    const p = publisher();
    s.postOverrides.push({ kind: 'answer', status: 200, body: '{"ok":false,"error":"msg_too_long"}' });
    const long = await rejection(p.publish(request(local(s))));
    assert.ok(long instanceof PermanentPublishError, String(long));
    assert.match(long.message, /chat\.postMessage refused the message \(msg_too_long\)/);
    s.postOverrides.push({ kind: 'answer', status: 200, body: '{"ok":false,"error":"invalid_blocks"}' });
    const blocks = await rejection(p.publish(request(local(s))));
    assert.ok(blocks instanceof PermanentPublishError, String(blocks));
    assert.match(blocks.message, /invalid_blocks/);
    s.postOverrides.push({ kind: 'answer', status: 200, body: JSON.stringify({ ok: false, error: `bad request with Bearer ${TOKEN} and token=${TOKEN}` }) });
    const echoed = await rejection(p.publish(request(local(s))));
    assert.ok(echoed instanceof PermanentPublishError, String(echoed));
    assert.ok(echoed.message.length < 300, 'an excerpt, not the whole answer');
    assert.equal(s.messages.length, 0);
  });

  it('HTTP 429 waits for Retry-After (seconds) and was not delivered', async () => {
    const s = await slack();
    s.postOverrides.push({ kind: 'answer', status: 429, body: '{"ok":false,"error":"ratelimited"}', headers: { 'retry-after': '30' } });
    const e = await rejection(publisher().publish(request(local(s))));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.retryAfterMs, 30_000);
    assert.equal(e.maybeDelivered, false);
    assert.match(e.message, /rate limited \(HTTP 429\)/);
    assert.equal(s.messages.length, 0);
  });

  it('HTTP 500 and ok:false internal_error are maybe delivered', async () => {
    const s = await slack();
    const p = publisher();
    s.postOverrides.push({ kind: 'answer', status: 500, body: '<html>oops</html>' });
    const e = await rejection(p.publish(request(local(s))));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.maybeDelivered, true);
    assert.match(e.message, /HTTP 500/);
    s.postOverrides.push({ kind: 'answer', status: 200, body: '{"ok":false,"error":"internal_error"}' });
    const internal = await rejection(p.publish(request(local(s))));
    assert.ok(internal instanceof RetryablePublishError, String(internal));
    assert.equal(internal.maybeDelivered, true);
    assert.match(internal.message, /internal_error/);
  });

  it('a connection cut after the request was sent is maybe delivered (Slack did post it)', async () => {
    const s = await slack();
    s.postOverrides.push({ kind: 'cut-after-post' });
    const e = await rejection(publisher().publish(request(local(s))));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.maybeDelivered, true);
    assert.match(e.message, /after the request was sent/);
    assert.equal(s.messages.length, 1, 'Slack posted it');
    assert.equal(s.requests.length, 1, 'not sent again');
  });

  it('no answer within the timeout after sending is maybe delivered; a refused connection is not', async () => {
    const s = await slack();
    s.postOverrides.push({ kind: 'hang' });
    const hung = await rejection(publisher(300).publish(request(local(s))));
    assert.ok(hung instanceof RetryablePublishError, String(hung));
    assert.equal(hung.maybeDelivered, true);
    assert.match(hung.message, /no answer within 300 ms after the request was sent/);

    const gone = await startSlack();
    const apiUrl = gone.url;
    await gone.close();
    const refused = await rejection(publisher().publish(request({ channel: GENERAL, api_url: apiUrl, allow_private_network: true })));
    assert.ok(refused instanceof RetryablePublishError, String(refused));
    assert.equal(refused.maybeDelivered, false);
    assert.match(refused.message, /ECONNREFUSED/);
  });

  it('a malformed answer (not JSON, or ok:true without ts) is maybe delivered', async () => {
    const s = await slack();
    const p = publisher();
    s.postOverrides.push({ kind: 'answer', status: 200, body: '<html>maintenance</html>' });
    const html = await rejection(p.publish(request(local(s))));
    assert.ok(html instanceof RetryablePublishError, String(html));
    assert.equal(html.maybeDelivered, true);
    assert.match(html.message, /without a message ts/);
    s.postOverrides.push({ kind: 'answer', status: 200, body: '{"ok":true,"channel":"C0123GENERAL"}' });
    const noTs = await rejection(p.publish(request(local(s))));
    assert.ok(noTs instanceof RetryablePublishError, String(noTs));
    assert.equal(noTs.maybeDelivered, true);
    s.postOverrides.push({ kind: 'answer', status: 404, body: 'Not Found' });
    const wrongUrl = await rejection(p.publish(request(local(s))));
    assert.ok(wrongUrl instanceof PermanentPublishError, String(wrongUrl));
    assert.match(wrongUrl.message, /HTTP 404: Not Found/);
  });

  it('refuses 127.0.0.1 unless the channel opts in (SSRF protection)', async () => {
    const s = await slack();
    const e = await rejection(publisher().publish(request({ channel: GENERAL, api_url: `https://${s.host}/api` })));
    assert.ok(e instanceof PermanentPublishError, String(e));
    assert.match(e.message, /slack channel team-news \(127\.0\.0\.1:\d+\): refused to connect .*SSRF protection/);
    assert.equal(s.requests.length, 0);
  });

  it('a missing or malformed token is a credentials problem named without its value; nothing is sent', async () => {
    const s = await slack();
    const p = publisher();
    const none = await rejection(p.publish(request(local(s), { token: null })));
    assert.ok(none instanceof CredentialsRejectedError);
    const spaced = await rejection(p.publish(request(local(s), { token: `${TOKEN} x` })));
    assert.ok(spaced instanceof CredentialsRejectedError);
    assert.match(spaced.message, /bot_token must be printable ASCII without spaces/);
    const user = await rejection(p.publish(request(local(s), { token: TOKEN.replace('xoxb-', 'xoxp-') })));
    assert.ok(user instanceof CredentialsRejectedError);
    assert.match(user.message, /bot_token must be a bot token/);
    assert.ok(!user.message.includes(TOKEN.slice(5)));
    assert.equal(s.requests.length, 0);
  });

  it('checkText: at most 40,000 characters (Slack truncates beyond), not blank; a longer text fails before sending', async () => {
    const settings = { channel: GENERAL };
    assert.equal(slackPublisher.checkText('a'.repeat(40_000), settings), null);
    assert.match(slackPublisher.checkText('a'.repeat(40_001), settings) ?? '', /40001 characters; Slack truncates a message over 40000 characters/);
    assert.match(slackPublisher.checkText(' \n ', settings) ?? '', /empty/);
    const s = await slack();
    const e = await rejection(publisher().publish(request(local(s), { text: 'b'.repeat(40_001) })));
    assert.ok(e instanceof PermanentPublishError);
    assert.match(e.message, /40001 characters/);
    assert.equal(s.requests.length, 0);
  });

  it('verify: auth.test names the bot and its workspace, or rejects the credentials', async () => {
    const s = await slack();
    const options = { timeoutMs: 2_000, concurrency: 1 };
    const verified = await slackPublisher.verify?.(local(s), { bot_token: TOKEN }, options);
    assert.deepEqual(verified, { account: 'scheduler in Acme' });
    const sent = s.requests[0];
    assert.equal(sent?.method, 'POST');
    assert.equal(sent?.path, '/api/auth.test');
    assert.equal(sent?.headers['authorization'], `Bearer ${TOKEN}`);
    const e = await rejection(slackPublisher.verify?.(local(s), { bot_token: `${TOKEN}x` }, options) ?? Promise.resolve());
    assert.ok(e instanceof CredentialsRejectedError, String(e));
    assert.match(e.message, /invalid_auth/);
    const refused = await rejection(slackPublisher.verify?.({ channel: GENERAL, api_url: `https://${s.host}/api` }, { bot_token: TOKEN }, options) ?? Promise.resolve());
    assert.ok(refused instanceof SettingsError, String(refused));
    const none = await rejection(slackPublisher.verify?.(local(s), null, options) ?? Promise.resolve());
    assert.ok(none instanceof SettingsError, String(none));
    assert.equal(s.requests.length, 2);
  });

  it('validates settings and credentials in one line, never echoing the token', () => {
    const problem = (settings: Record<string, unknown>) => {
      try {
        slackPublisher.parseSettings(settings);
        return null;
      } catch (e) {
        assert.ok(e instanceof SettingsError);
        return e.message;
      }
    };
    assert.equal(problem({ channel: 'C0123ABCD' }), null);
    assert.equal(problem({ channel: '#general', unfurl_links: true }), null);
    assert.equal(problem({ channel: 'C0123ABCD', api_url: 'https://slack.example.com/api' }), null);
    assert.match(problem({}) ?? '', /slack channel needs a channel/);
    assert.match(problem({ channel: 'general' }) ?? '', /id like C0123ABCD or a channel name like #general/);
    assert.match(problem({ channel: '#Bad Name' }) ?? '', /channel name like #general/);
    assert.equal(problem({ channel: 'C0123ABCD', api_url: 'http://slack.example.com/api' }), 'slack api_url must be https:// (http:// only with allow_private_network)');
    assert.equal(problem({ channel: 'C0123ABCD', api_url: 'http://127.0.0.1:3000/api', allow_private_network: true }), null);
    assert.match(problem({ channel: 'C0123ABCD', api_url: 'ftp://slack.com/api' }) ?? '', /https:\/\//);
    assert.match(problem({ channel: 'C0123ABCD', api_url: 'https://slack.com/api?token=x' }) ?? '', /query/);
    assert.match(problem({ channel: 'C0123ABCD', unfurl_links: 'yes' }) ?? '', /unfurl_links must be true or false/);

    const credentials = (c: Record<string, unknown>) => {
      try {
        slackPublisher.parseCredentials?.(c);
        return null;
      } catch (e) {
        assert.ok(e instanceof SettingsError);
        assert.ok(!e.message.includes(TOKEN));
        assert.ok(!e.message.includes('\n'));
        return e.message;
      }
    };
    assert.equal(credentials({ bot_token: TOKEN }), null);
    assert.match(credentials({}) ?? '', /bot_token/);
    assert.match(credentials({ bot_token: `${TOKEN}\n` }) ?? '', /bot_token/);
    assert.match(credentials({ bot_token: 12 }) ?? '', /bot_token/);
    assert.match(credentials({ bot_token: TOKEN.replace('xoxb-', 'xoxp-') }) ?? '', /bot_token must be a bot token/);
    assert.deepEqual(slackPublisher.redactSettings({ channel: '#general', unfurl_links: false }), { channel: '#general', unfurl_links: false });
  });
});
