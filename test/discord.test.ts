import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { discordPublisher, MAX_CONTENT } from '../src/publishers/discord.ts';
import { CredentialsRejectedError, PermanentPublishError, RetryablePublishError, SettingsError, type Publisher, type PublishRequest } from '../src/publishers/publisher.ts';
import { loadPublisherModule } from '../src/publishers/registry.ts';
import type { Channel } from '../src/types.ts';
import { CHANNEL_ID, GUILD_ID, WEBHOOK_ID, WEBHOOK_PATH, WEBHOOK_TOKEN, type FakeDiscord, startDiscord } from './helpers/fake-discord.ts';

describe('discord publisher', () => {
  const servers: FakeDiscord[] = [];
  const publishers: Publisher[] = [];
  after(async () => {
    for (const p of publishers) await p.close();
    for (const s of servers) await s.close();
  });
  const discord = async () => {
    const s = await startDiscord();
    servers.push(s);
    return s;
  };
  /** guarded as in production: the channels below opt in to 127.0.0.1 themselves */
  const publisher = (timeoutMs = 2_000) => {
    const p = discordPublisher.createPublisher({ timeoutMs, concurrency: 2, allowPrivateNetwork: false });
    publishers.push(p);
    return p;
  };
  const local = (extra: Record<string, unknown> = {}) => ({ allow_private_network: true, ...extra });

  const channel = (settings: Record<string, unknown>): Channel => ({
    id: 9,
    name: 'announce',
    platform: 'discord',
    onUnknown: 'hold',
    settings,
    enabled: true,
    credentials: 'sealed',
    attention: null,
    createdAt: new Date(),
  });
  const request = (
    s: FakeDiscord,
    settings: Record<string, unknown> = local(),
    overrides: { text?: string; webhookUrl?: string | null } = {},
  ): PublishRequest => ({
    postId: 42,
    attempt: 1,
    text: overrides.text ?? 'Release 2.0 is out',
    runAt: new Date('2026-12-01T12:00:00.000Z'),
    idempotencyKey: 'key-42',
    images: [],
    part: { index: 0, count: 1 },
    replyTo: null,
    channel: channel(settings),
    credentials: overrides.webhookUrl === null ? null : { webhook_url: overrides.webhookUrl ?? s.webhookUrl },
    saveCredentials: async () => undefined,
    signal: new AbortController().signal,
  });

  /** the failure, checked to hold neither the token nor the webhook's path */
  async function rejection(p: Promise<unknown>): Promise<Error> {
    try {
      await p;
    } catch (e) {
      assert.ok(e instanceof Error);
      assert.ok(!e.message.includes(WEBHOOK_TOKEN), `the token leaked into: ${e.message}`);
      assert.ok(!e.message.includes('/webhooks/'), `the webhook path leaked into: ${e.message}`);
      return e;
    }
    assert.fail('expected a failure');
  }

  it('is registered as platform discord: hold on unknown outcomes, no look-up', async () => {
    assert.equal(await loadPublisherModule('discord'), discordPublisher);
    assert.equal(discordPublisher.defaultOnUnknown, 'hold');
    assert.equal(discordPublisher.canLookUp, false);
  });

  it('executes the webhook with wait=true and no mentions, and returns the message id and link', async () => {
    const s = await discord();
    const result = await publisher().publish(request(s, local({ username: 'Release bot', avatar_url: 'https://example.com/a.png' })));
    assert.equal(s.messages.length, 1);
    const id = s.messages[0]?.id ?? '';
    assert.deepEqual(result, { externalId: id, externalUrl: `https://discord.com/channels/${GUILD_ID}/${CHANNEL_ID}/${id}` });
    const [sent] = s.requests;
    assert.equal(sent?.method, 'POST');
    assert.equal(sent?.path, WEBHOOK_PATH);
    assert.equal(sent?.query.get('wait'), 'true');
    assert.match(sent?.headers['content-type'] ?? '', /^application\/json/);
    assert.equal(sent?.headers['authorization'], undefined, 'the token is in the URL only');
    assert.deepEqual(sent?.body, {
      content: 'Release 2.0 is out',
      username: 'Release bot',
      avatar_url: 'https://example.com/a.png',
      allowed_mentions: { parse: [] },
    });
  });

  it('keeps the query of the webhook URL (thread_id); without username or avatar sends neither', async () => {
    const s = await discord();
    await publisher().publish(request(s, local(), { webhookUrl: `${s.webhookUrl}?thread_id=333&wait=false` }));
    const [sent] = s.requests;
    assert.equal(sent?.query.get('thread_id'), '333');
    assert.deepEqual(sent?.query.getAll('wait'), ['true']);
    assert.deepEqual(sent?.body, { content: 'Release 2.0 is out', allowed_mentions: { parse: [] } });
  });

  it('a message without guild_id links through @me; one without channel_id has no link; a 204 is published without ids', async () => {
    const s = await discord();
    const p = publisher();
    s.omitGuild = true;
    const dm = await p.publish(request(s));
    assert.equal(dm.externalUrl, `https://discord.com/channels/@me/${CHANNEL_ID}/${dm.externalId ?? ''}`);
    s.overrides.push({ kind: 'answer', status: 200, body: JSON.stringify({ id: '1300000000000000999', content: 'x' }) });
    assert.deepEqual(await p.publish(request(s)), { externalId: '1300000000000000999', externalUrl: null });
    s.overrides.push({ kind: 'answer', status: 204, body: '' });
    assert.deepEqual(await p.publish(request(s)), { externalId: null, externalUrl: null });
  });

  it('401 (invalid token) and 404 (unknown webhook): the credentials are rejected, naming the channel and host only', async () => {
    const s = await discord();
    const p = publisher();
    const badToken = await rejection(p.publish(request(s, local(), { webhookUrl: s.webhookUrl.replace(WEBHOOK_TOKEN, `${WEBHOOK_TOKEN}x`) })));
    assert.ok(badToken instanceof CredentialsRejectedError, String(badToken));
    assert.match(badToken.message, /^discord channel announce \(127\.0\.0\.1:\d+\) refused the webhook URL \(HTTP 401: Invalid Webhook Token \(code 50027\)\)$/);
    const unknown = await rejection(p.publish(request(s, local(), { webhookUrl: s.webhookUrl.replace(WEBHOOK_ID, '999') })));
    assert.ok(unknown instanceof CredentialsRejectedError, String(unknown));
    assert.match(unknown.message, /HTTP 404: Unknown Webhook \(code 10015\)/);
    s.overrides.push({ kind: 'answer', status: 403, body: '{"message":"Missing Permissions","code":50013}' });
    const forbidden = await rejection(p.publish(request(s)));
    assert.ok(forbidden instanceof CredentialsRejectedError, String(forbidden));
    assert.equal(s.messages.length, 0);
  });

  it('429: retried after the body retry_after (fractional seconds), else the headers; not delivered', async () => {
    const s = await discord();
    const p = publisher();
    s.overrides.push({
      kind: 'answer',
      status: 429,
      body: '{"message":"You are being rate limited.","retry_after":1.337,"global":false}',
      headers: { 'retry-after': '2', 'x-ratelimit-limit': '5', 'x-ratelimit-remaining': '0', 'x-ratelimit-reset-after': '1.337', 'x-ratelimit-scope': 'shared' },
    });
    const limited = await rejection(p.publish(request(s)));
    assert.ok(limited instanceof RetryablePublishError, String(limited));
    assert.equal(limited.maybeDelivered, false);
    assert.equal(limited.retryAfterMs, 1337);
    assert.match(limited.message, /rate limited \(HTTP 429\)/);

    // a proxy's 429 without Discord's body
    s.overrides.push({ kind: 'answer', status: 429, body: '<html>slow down</html>', headers: { 'x-ratelimit-reset-after': '2.5', 'retry-after': '3' } });
    const fromReset = await rejection(p.publish(request(s)));
    assert.ok(fromReset instanceof RetryablePublishError);
    assert.equal(fromReset.retryAfterMs, 2500);
    s.overrides.push({ kind: 'answer', status: 429, body: '', headers: { 'retry-after': '30' } });
    const fromRetryAfter = await rejection(p.publish(request(s)));
    assert.ok(fromRetryAfter instanceof RetryablePublishError);
    assert.equal(fromRetryAfter.retryAfterMs, 30_000);
    assert.equal(s.messages.length, 0);
  });

  it('400: permanent, with a short excerpt of the error, without the token even when the server echoes it', async () => {
    const s = await discord();
    const p = publisher();
    s.overrides.push({
      kind: 'answer',
      status: 400,
      body: JSON.stringify({ message: 'Invalid Form Body', code: 50035, errors: { embeds: { '0': { _errors: [{ code: 'X', message: 'Bad embed' }] } } } }),
    });
    const invalid = await rejection(p.publish(request(s)));
    assert.ok(invalid instanceof PermanentPublishError, String(invalid));
    assert.match(invalid.message, /HTTP 400: Invalid Form Body \(code 50035\): embeds\.0: Bad embed/);

    s.overrides.push({ kind: 'answer', status: 400, body: JSON.stringify({ message: `bad request to ${s.webhookUrl} with token ${WEBHOOK_TOKEN}`, code: 0 }) });
    const echoed = await rejection(p.publish(request(s)));
    assert.ok(echoed instanceof PermanentPublishError, String(echoed));
    assert.match(echoed.message, /HTTP 400: bad request to \*\*\*/);
    assert.ok(echoed.message.length < 300, 'an excerpt, not the whole answer');
    s.overrides.push({ kind: 'answer', status: 400, body: `{"oops": "${WEBHOOK_TOKEN}"` });
    const raw = await rejection(p.publish(request(s)));
    assert.ok(raw instanceof PermanentPublishError, String(raw));
    assert.equal(s.messages.length, 0);
  });

  it('500 and 503 are maybe delivered (no key makes a resend safe)', async () => {
    const s = await discord();
    const p = publisher();
    for (const status of [500, 503]) {
      s.overrides.push({ kind: 'answer', status, body: '{"message":"Internal Server Error","code":0}', headers: { 'retry-after': '4' } });
      const e = await rejection(p.publish(request(s)));
      assert.ok(e instanceof RetryablePublishError, String(e));
      assert.equal(e.maybeDelivered, true, `HTTP ${status}`);
      assert.equal(e.retryAfterMs, 4000);
      assert.match(e.message, new RegExp(`HTTP ${status}`));
    }
  });

  it('a connection cut after the request was sent is maybe delivered (the message did go out)', async () => {
    const s = await discord();
    s.overrides.push({ kind: 'cut-after-create' });
    const e = await rejection(publisher().publish(request(s)));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.maybeDelivered, true);
    assert.match(e.message, /^discord channel announce \(127\.0\.0\.1:\d+\): .*after the request was sent$/);
    assert.equal(s.messages.length, 1);
  });

  it('a refused connection is a plain retry, not delivered', async () => {
    const gone = await startDiscord();
    const webhookUrl = gone.webhookUrl;
    await gone.close();
    const e = await rejection(publisher().publish(request(gone, local(), { webhookUrl })));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.maybeDelivered, false);
    assert.match(e.message, /ECONNREFUSED/);
  });

  it('a malformed answer (200 without a message id, or not JSON) is maybe delivered', async () => {
    const s = await discord();
    const p = publisher();
    s.overrides.push({ kind: 'answer', status: 200, body: '<html>maintenance</html>' });
    const html = await rejection(p.publish(request(s)));
    assert.ok(html instanceof RetryablePublishError, String(html));
    assert.equal(html.maybeDelivered, true);
    assert.match(html.message, /HTTP 200 without a message id/);
    s.overrides.push({ kind: 'answer', status: 200, body: `{"id":"not-a-snowflake","token":"${WEBHOOK_TOKEN}"}` });
    const noId = await rejection(p.publish(request(s)));
    assert.ok(noId instanceof RetryablePublishError, String(noId));
    assert.equal(noId.maybeDelivered, true);
  });

  it('refuses 127.0.0.1 unless the channel opts in (SSRF protection), and http:// without allow_private_network', async () => {
    const s = await discord();
    const p = publisher();
    // https: the guard refuses the address before any TLS handshake
    const guarded = await rejection(p.publish(request(s, {}, { webhookUrl: s.webhookUrl.replace('http://', 'https://') })));
    assert.ok(guarded instanceof PermanentPublishError, String(guarded));
    assert.match(guarded.message, /discord channel announce \(127\.0\.0\.1:\d+\): refused to connect .*SSRF protection/);
    const plain = await rejection(p.publish(request(s, {})));
    assert.ok(plain instanceof CredentialsRejectedError, String(plain));
    assert.match(plain.message, /https:\/\/ \(http:\/\/ only with allow_private_network\)/);
    const none = await rejection(p.publish(request(s, local(), { webhookUrl: null })));
    assert.ok(none instanceof CredentialsRejectedError, String(none));
    assert.equal(s.requests.length, 0);
  });

  it('checkText: at most 2000 characters (code points), not empty; a longer text fails before sending', async () => {
    assert.equal(MAX_CONTENT, 2000);
    assert.equal(discordPublisher.checkText('a'.repeat(2000), {}), null);
    assert.equal(discordPublisher.checkText('😀'.repeat(2000), {}), null, 'an emoji is one character');
    assert.match(discordPublisher.checkText('a'.repeat(2001), {}) ?? '', /text is 2001 characters; a Discord message takes at most 2000/);
    assert.match(discordPublisher.checkText('  ', {}) ?? '', /empty/);
    const s = await discord();
    const e = await rejection(publisher().publish(request(s, local(), { text: 'b'.repeat(2001) })));
    assert.ok(e instanceof PermanentPublishError, String(e));
    assert.equal(s.requests.length, 0);
  });

  it('verify: the webhook and its channel, or CredentialsRejectedError', async () => {
    const s = await discord();
    const options = { timeoutMs: 2_000, concurrency: 1 };
    const verified = await discordPublisher.verify?.(local(), { webhook_url: `${s.webhookUrl}?thread_id=5` }, options);
    assert.deepEqual(verified, { account: `webhook Announcements in channel ${CHANNEL_ID}` });
    const [sent] = s.requests;
    assert.equal(sent?.method, 'GET');
    assert.equal(sent?.path, WEBHOOK_PATH);
    assert.equal([...(sent?.query.keys() ?? [])].length, 0);
    const bad = await rejection(discordPublisher.verify?.(local(), { webhook_url: s.webhookUrl.replace(WEBHOOK_TOKEN, 'wrongtoken123') }, options) ?? Promise.resolve());
    assert.ok(bad instanceof CredentialsRejectedError, String(bad));
    assert.match(bad.message, /^discord webhook on 127\.0\.0\.1:\d+ refused the webhook URL \(HTTP 401: Invalid Webhook Token/);
    const unknown = await rejection(discordPublisher.verify?.(local(), { webhook_url: s.webhookUrl.replace(WEBHOOK_ID, '42') }, options) ?? Promise.resolve());
    assert.ok(unknown instanceof CredentialsRejectedError, String(unknown));
    assert.match(unknown.message, /HTTP 404: Unknown Webhook/);
    const refused = await rejection(discordPublisher.verify?.({}, { webhook_url: s.webhookUrl.replace('http://', 'https://') }, options) ?? Promise.resolve());
    assert.ok(refused instanceof SettingsError, String(refused));
  });

  it('validates settings and credentials in one line, never echoing the webhook URL', () => {
    const problem = (settings: Record<string, unknown>) => {
      try {
        discordPublisher.parseSettings(settings);
        return null;
      } catch (e) {
        assert.ok(e instanceof SettingsError);
        return e.message;
      }
    };
    assert.equal(problem({}), null);
    assert.equal(problem({ username: 'Release bot', avatar_url: 'https://example.com/a.png', allow_private_network: false }), null);
    assert.match(problem({ username: '' }) ?? '', /username must not be empty/);
    assert.match(problem({ username: 'x'.repeat(81) }) ?? '', /at most 80/);
    assert.match(problem({ username: 'My Discord bot' }) ?? '', /clyde.*discord/);
    assert.match(problem({ avatar_url: 'ftp://example.com/a.png' }) ?? '', /avatar_url/);
    assert.match(problem({ allow_private_network: 'yes' }) ?? '', /allow_private_network must be true or false/);

    const url = `https://discord.com/api/webhooks/${WEBHOOK_ID}/${WEBHOOK_TOKEN}`;
    const credentials = (c: Record<string, unknown>) => {
      try {
        discordPublisher.parseCredentials?.(c);
        return null;
      } catch (e) {
        assert.ok(e instanceof SettingsError);
        assert.ok(!e.message.includes(WEBHOOK_TOKEN));
        assert.ok(!e.message.includes('\n'));
        return e.message;
      }
    };
    assert.equal(credentials({ webhook_url: url }), null);
    assert.equal(credentials({ webhook_url: `https://discord.com/api/v10/webhooks/${WEBHOOK_ID}/${WEBHOOK_TOKEN}?thread_id=1` }), null);
    assert.equal(credentials({ webhook_url: `https://chat.example.org/api/webhooks/${WEBHOOK_ID}/${WEBHOOK_TOKEN}` }), null, 'any https host');
    assert.match(credentials({}) ?? '', /webhook_url/);
    assert.match(credentials({ webhook_url: 12 }) ?? '', /webhook_url/);
    assert.match(credentials({ webhook_url: `not a url ${WEBHOOK_TOKEN}` }) ?? '', /webhook_url must be a URL/);
    assert.match(credentials({ webhook_url: `ftp://discord.com/api/webhooks/${WEBHOOK_ID}/${WEBHOOK_TOKEN}` }) ?? '', /https:\/\//);
    assert.match(credentials({ webhook_url: `https://discord.com/api/channels/${WEBHOOK_TOKEN}` }) ?? '', /\/webhooks\/\{id\}\/\{token\}/);
    assert.match(credentials({ webhook_url: `https://u:p@discord.com/api/webhooks/${WEBHOOK_ID}/${WEBHOOK_TOKEN}` }) ?? '', /user name or password/);
    assert.deepEqual(discordPublisher.redactSettings({ username: 'Release bot' }), { username: 'Release bot' });
  });
});
