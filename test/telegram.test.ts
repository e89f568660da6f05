import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { CredentialsRejectedError, PermanentPublishError, RetryablePublishError, SettingsError, type Publisher, type PublishRequest } from '../src/publishers/publisher.ts';
import { loadPublisherModule } from '../src/publishers/registry.ts';
import { MAX_MESSAGE_LENGTH, telegramLength, telegramPublisher } from '../src/publishers/telegram.ts';
import type { Channel } from '../src/types.ts';
import { BOT_TOKEN, CHANNEL, CHANNEL_ID, GROUP_ID, type FakeTelegram, startTelegram } from './helpers/fake-telegram.ts';

const SECRET_PART = BOT_TOKEN.slice(BOT_TOKEN.indexOf(':') + 1);

describe('telegram publisher', () => {
  const servers: FakeTelegram[] = [];
  const publishers: Publisher[] = [];
  after(async () => {
    for (const p of publishers) await p.close();
    for (const s of servers) await s.close();
  });
  const telegram = async () => {
    const s = await startTelegram();
    servers.push(s);
    return s;
  };
  /** guarded as in production: the channels below opt in to 127.0.0.1 themselves */
  const publisher = (timeoutMs = 2_000) => {
    const p = telegramPublisher.createPublisher({ timeoutMs, concurrency: 2, allowPrivateNetwork: false });
    publishers.push(p);
    return p;
  };

  const channel = (settings: Record<string, unknown>): Channel => ({
    id: 9,
    name: 'announcements',
    platform: 'telegram',
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
    text: overrides.text ?? 'Hello, Telegram',
    runAt: new Date('2026-12-01T12:00:00.000Z'),
    idempotencyKey: 'key-42',
    images: [],
    part: { index: 0, count: 1 },
    replyTo: null,
    channel: channel(settings),
    credentials: overrides.token === null ? null : { bot_token: overrides.token ?? BOT_TOKEN },
    saveCredentials: async () => undefined,
    signal: overrides.signal ?? new AbortController().signal,
  });
  const local = (s: FakeTelegram, extra: Record<string, unknown> = {}) => ({ chat_id: CHANNEL, api_url: s.url, allow_private_network: true, ...extra });

  /** the error, after checking that neither the token nor its secret part is in it */
  async function rejection(p: Promise<unknown>): Promise<Error> {
    try {
      await p;
    } catch (e) {
      assert.ok(e instanceof Error);
      assert.ok(!e.message.includes(BOT_TOKEN) && !e.message.includes(SECRET_PART), `the token leaked into: ${e.message}`);
      assert.ok(!String(e.stack).includes(SECRET_PART), 'the token leaked into the stack');
      return e;
    }
    assert.fail('expected the call to fail');
  }

  it('is registered as platform telegram: hold on unknown outcomes, no look-up', async () => {
    const module = await loadPublisherModule('telegram');
    assert.equal(module, telegramPublisher);
    assert.equal(telegramPublisher.defaultOnUnknown, 'hold');
    assert.equal(telegramPublisher.canLookUp, false);
  });

  it('POSTs sendMessage with the token in the path and a JSON body; returns chat:message and the t.me link', async () => {
    const s = await telegram();
    const result = await publisher().publish(request(local(s)));
    assert.equal(s.messages.length, 1);
    const [message] = s.messages;
    assert.deepEqual(result, {
      externalId: `${CHANNEL_ID}:${message?.message_id}`,
      externalUrl: `https://t.me/${CHANNEL.slice(1)}/${message?.message_id}`,
    });
    const [sent] = s.requests;
    assert.equal(sent?.method, 'POST');
    assert.equal(sent?.path, `/bot${BOT_TOKEN}/sendMessage`);
    assert.match(sent?.headers['content-type'] ?? '', /^application\/json/);
    assert.deepEqual(sent?.body, { chat_id: CHANNEL, text: 'Hello, Telegram' }, 'no parse_mode or preview options unless the channel sets them');
  });

  it('sends parse_mode and link_preview_options from the settings; a chat without a username has no URL', async () => {
    const s = await telegram();
    const result = await publisher().publish(
      request(local(s, { chat_id: String(GROUP_ID), parse_mode: 'HTML', disable_web_page_preview: true }), { text: '<b>Hi</b> https://example.com' }),
    );
    assert.deepEqual(s.requests[0]?.body, {
      chat_id: String(GROUP_ID),
      text: '<b>Hi</b> https://example.com',
      parse_mode: 'HTML',
      link_preview_options: { is_disabled: true },
    });
    assert.deepEqual(result, { externalId: `${GROUP_ID}:${s.messages[0]?.message_id}`, externalUrl: null });
  });

  it('a path under api_url is kept (a local Bot API server behind a prefix)', async () => {
    const s = await telegram();
    // the fake answers 404 on the longer path: a refused credential, as Telegram's own 404 on a bad token path
    const e = await rejection(publisher().publish(request(local(s, { api_url: `${s.url}/tg/` }))));
    assert.ok(e instanceof CredentialsRejectedError, String(e));
    assert.equal(s.requests[0]?.path, `/tg/bot${BOT_TOKEN}/sendMessage`);
    assert.match(e.message, /HTTP 404: Not Found/);
  });

  it('401: the credentials are rejected, without the token', async () => {
    const s = await telegram();
    const wrong = `7001234567:ZZ${SECRET_PART}`;
    const e = await rejection(publisher().publish(request(local(s), { token: wrong })));
    assert.ok(e instanceof CredentialsRejectedError, String(e));
    assert.ok(!e.message.includes(wrong));
    assert.match(e.message, /telegram channel announcements \(127\.0\.0\.1:\d+\): Telegram does not accept the bot token \(HTTP 401: Unauthorized\)/);
    assert.equal(s.messages.length, 0);
  });

  it('403 (the bot is not in the channel) rejects the credentials: the channel needs an operator', async () => {
    const s = await telegram();
    s.overrides.push({ kind: 'answer', status: 403, body: '{"ok":false,"error_code":403,"description":"Forbidden: bot is not a member of the channel chat"}' });
    const e = await rejection(publisher().publish(request(local(s))));
    assert.ok(e instanceof CredentialsRejectedError, String(e));
    assert.match(e.message, /admin/);
    assert.match(e.message, /HTTP 403: Forbidden: bot is not a member of the channel chat/);
  });

  it('429: retried after parameters.retry_after seconds, not delivered', async () => {
    const s = await telegram();
    s.overrides.push({
      kind: 'answer',
      status: 429,
      body: '{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 35","parameters":{"retry_after":35}}',
    });
    const e = await rejection(publisher().publish(request(local(s))));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.retryAfterMs, 35_000);
    assert.equal(e.maybeDelivered, false);
    assert.match(e.message, /rate limited \(HTTP 429: Too Many Requests: retry after 35\)/);
  });

  it('400: permanent, with a short excerpt of the description that holds no token even when echoed', async () => {
    const s = await telegram();
    const p = publisher();
    const unknownChat = await rejection(p.publish(request(local(s, { chat_id: '@nosuchchannel' }))));
    assert.ok(unknownChat instanceof PermanentPublishError, String(unknownChat));
    assert.match(unknownChat.message, /HTTP 400: Bad Request: chat not found/);

    s.overrides.push({
      kind: 'answer',
      status: 400,
      body: JSON.stringify({ ok: false, error_code: 400, description: `Bad Request: can't parse entities in /bot${BOT_TOKEN}/sendMessage near ${SECRET_PART} ${'x'.repeat(400)}` }),
    });
    const echoed = await rejection(p.publish(request(local(s))));
    assert.ok(echoed instanceof PermanentPublishError, String(echoed));
    assert.match(echoed.message, /HTTP 400: Bad Request: can't parse entities/);
    assert.ok(echoed.message.length < 300, 'an excerpt, not the whole answer');

    s.overrides.push({
      kind: 'answer',
      status: 400,
      body: '{"ok":false,"error_code":400,"description":"Bad Request: group chat was upgraded to a supergroup chat","parameters":{"migrate_to_chat_id":-1003000000000}}',
    });
    const migrated = await rejection(p.publish(request(local(s, { chat_id: '-4000000000' }))));
    assert.ok(migrated instanceof PermanentPublishError, String(migrated));
    assert.match(migrated.message, /set chat_id to -1003000000000/);
    assert.equal(s.messages.length, 0);
  });

  it('500 is maybe delivered (no key makes a resend safe)', async () => {
    const s = await telegram();
    s.overrides.push({ kind: 'answer', status: 500, body: '{"ok":false,"error_code":500,"description":"Internal Server Error"}' });
    const e = await rejection(publisher().publish(request(local(s))));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.maybeDelivered, true);
    assert.match(e.message, /HTTP 500: Internal Server Error/);
    s.overrides.push({ kind: 'answer', status: 502, body: '<html>Bad Gateway</html>' });
    const gateway = await rejection(publisher().publish(request(local(s))));
    assert.ok(gateway instanceof RetryablePublishError);
    assert.equal(gateway.maybeDelivered, true);
  });

  it('a connection cut after the request was sent is maybe delivered (Telegram did send it)', async () => {
    const s = await telegram();
    s.overrides.push({ kind: 'cut-after-send' });
    const e = await rejection(publisher().publish(request(local(s))));
    assert.ok(e instanceof RetryablePublishError, String(e));
    assert.equal(e.maybeDelivered, true);
    assert.match(e.message, /after the request was sent/);
    assert.equal(s.messages.length, 1);
  });

  it('no answer within the timeout is maybe delivered; a refused connection is not', async () => {
    const s = await telegram();
    s.overrides.push({ kind: 'hang' });
    const hung = await rejection(publisher(300).publish(request(local(s))));
    assert.ok(hung instanceof RetryablePublishError, String(hung));
    assert.equal(hung.maybeDelivered, true);
    assert.match(hung.message, /no answer within 300 ms after the request was sent/);

    const gone = await startTelegram();
    const apiUrl = gone.url;
    await gone.close();
    const refused = await rejection(publisher().publish(request({ chat_id: CHANNEL, api_url: apiUrl, allow_private_network: true })));
    assert.ok(refused instanceof RetryablePublishError, String(refused));
    assert.equal(refused.maybeDelivered, false);
    assert.match(refused.message, /ECONNREFUSED/);
  });

  it('a malformed answer (ok without a message, or not JSON) is maybe delivered', async () => {
    const s = await telegram();
    const p = publisher();
    s.overrides.push({ kind: 'answer', status: 200, body: '{"ok":true,"result":true}' });
    const noMessage = await rejection(p.publish(request(local(s))));
    assert.ok(noMessage instanceof RetryablePublishError, String(noMessage));
    assert.equal(noMessage.maybeDelivered, true);
    assert.match(noMessage.message, /without a message id/);
    s.overrides.push({ kind: 'answer', status: 200, body: '<html>maintenance</html>' });
    const html = await rejection(p.publish(request(local(s))));
    assert.ok(html instanceof RetryablePublishError);
    assert.equal(html.maybeDelivered, true);
  });

  it('refuses 127.0.0.1 unless the channel opts in (SSRF protection)', async () => {
    const s = await telegram();
    const e = await rejection(publisher().publish(request({ chat_id: CHANNEL, api_url: `https://${s.host}` })));
    assert.ok(e instanceof PermanentPublishError, String(e));
    assert.match(e.message, /telegram channel announcements \(127\.0\.0\.1:\d+\): refused to connect .*SSRF protection/);
    assert.equal(s.requests.length, 0);
  });

  it('counts text as Telegram does: UTF-16 code units after entities parsing, at most 4096', () => {
    assert.equal(MAX_MESSAGE_LENGTH, 4096);
    assert.equal(telegramLength('😀'), 2, 'an emoji outside the BMP is two UTF-16 units');
    assert.equal(telegramLength('<b>bold</b> &amp; <a href="https://example.com">link</a>', 'HTML'), 'bold & link'.length);
    assert.equal(telegramLength('*bold* \\_not italic\\_ [link](https://example.com/a\\)b)', 'MarkdownV2'), 'bold _not italic_ link'.length);

    const settings = { chat_id: CHANNEL };
    assert.equal(telegramPublisher.checkText('a'.repeat(4096), settings), null);
    assert.match(telegramPublisher.checkText('a'.repeat(4097), settings) ?? '', /text is 4097 characters as Telegram counts them \(UTF-16 code units\); a message takes at most 4096/);
    assert.match(telegramPublisher.checkText(`${'a'.repeat(4095)}😀`, settings) ?? '', /4097 characters/);
    assert.equal(telegramPublisher.checkText(`<b>${'a'.repeat(4096)}</b>`, { ...settings, parse_mode: 'HTML' }), null, 'tags do not count');
    assert.match(telegramPublisher.checkText(`<b>${'a'.repeat(4097)}</b>`, { ...settings, parse_mode: 'HTML' }) ?? '', /after HTML parsing/);
    assert.match(telegramPublisher.checkText('  ', settings) ?? '', /empty/);
  });

  it('a text over the limit fails at once, before anything is sent', async () => {
    const s = await telegram();
    const e = await rejection(publisher().publish(request(local(s), { text: 'b'.repeat(4097) })));
    assert.ok(e instanceof PermanentPublishError);
    assert.match(e.message, /4097 characters/);
    assert.equal(s.requests.length, 0);
  });

  it('verify: getMe shows the bot as @username, or CredentialsRejectedError without the token', async () => {
    const s = await telegram();
    const options = { timeoutMs: 2_000, concurrency: 1 };
    const verified = await telegramPublisher.verify?.(local(s), { bot_token: BOT_TOKEN }, options);
    assert.deepEqual(verified, { account: '@post_scheduler_bot' });
    assert.equal(s.requests[0]?.method, 'GET');
    assert.equal(s.requests[0]?.path, `/bot${BOT_TOKEN}/getMe`);
    const e = await rejection(telegramPublisher.verify?.(local(s), { bot_token: `7001234567:ZZ${SECRET_PART}` }, options) ?? Promise.resolve());
    assert.ok(e instanceof CredentialsRejectedError, String(e));
    assert.match(e.message, /HTTP 401: Unauthorized/);
    const refused = await rejection(telegramPublisher.verify?.({ chat_id: CHANNEL, api_url: `https://${s.host}` }, { bot_token: BOT_TOKEN }, options) ?? Promise.resolve());
    assert.ok(refused instanceof SettingsError, String(refused));
  });

  it('validates settings and credentials in one line, dropping unknown keys and never echoing the token', () => {
    const problem = (settings: Record<string, unknown>) => {
      try {
        telegramPublisher.parseSettings(settings);
        return null;
      } catch (e) {
        assert.ok(e instanceof SettingsError);
        return e.message;
      }
    };
    assert.equal(problem({ chat_id: CHANNEL }), null);
    assert.equal(problem({ chat_id: '-1001987654321' }), null);
    assert.deepEqual(telegramPublisher.parseSettings({ chat_id: -1001987654321, extra: 'dropped' }), { chat_id: '-1001987654321' });
    assert.equal(problem({}), 'telegram channel needs a chat_id (@channelusername or a numeric chat id)');
    assert.match(problem({ chat_id: 'mychannel' }) ?? '', /@mychannel or a numeric chat id/);
    assert.match(problem({ chat_id: '@ab' }) ?? '', /@mychannel/);
    assert.equal(problem({ chat_id: CHANNEL, api_url: 'http://bots.example.com' }), 'telegram api_url must be https:// (http:// only with allow_private_network)');
    assert.equal(problem({ chat_id: CHANNEL, api_url: 'http://127.0.0.1:8081', allow_private_network: true }), null);
    assert.match(problem({ chat_id: CHANNEL, api_url: 'https://api.telegram.org/?x=1' }) ?? '', /must not carry a query/);
    assert.match(problem({ chat_id: CHANNEL, parse_mode: 'Markdown' }) ?? '', /MarkdownV2 or HTML/);
    assert.match(problem({ chat_id: CHANNEL, disable_web_page_preview: 'yes' }) ?? '', /true or false/);

    const credentials = (c: Record<string, unknown>) => {
      try {
        telegramPublisher.parseCredentials?.(c);
        return null;
      } catch (e) {
        assert.ok(e instanceof SettingsError);
        assert.ok(!e.message.includes(SECRET_PART));
        assert.ok(!e.message.includes('\n'));
        return e.message;
      }
    };
    assert.equal(credentials({ bot_token: BOT_TOKEN }), null);
    assert.match(credentials({}) ?? '', /bot_token/);
    assert.match(credentials({ bot_token: `${BOT_TOKEN}\n` }) ?? '', /bot_token/);
    assert.match(credentials({ bot_token: `${BOT_TOKEN}/../getMe` }) ?? '', /bot_token/);
    assert.match(credentials({ bot_token: 12 }) ?? '', /bot_token/);
    assert.deepEqual(telegramPublisher.redactSettings({ chat_id: CHANNEL, parse_mode: 'HTML' }), { chat_id: CHANNEL, parse_mode: 'HTML' });
  });
});
