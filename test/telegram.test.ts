import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { CredentialsRejectedError, PermanentPublishError, RetryablePublishError, SettingsError, type LoadedImage, type Publisher, type PublishRequest } from '../src/publishers/publisher.ts';
import { loadPublisherModule } from '../src/publishers/registry.ts';
import { checkCaption, MAX_MESSAGE_LENGTH, telegramLength, telegramPublisher } from '../src/publishers/telegram.ts';
import type { Channel, PublishedPart } from '../src/types.ts';
import { BOT_TOKEN, CHANNEL, CHANNEL_ID, GROUP_ID, type FakeTelegram, startTelegram } from './helpers/fake-telegram.ts';

/** images as the core hands them over */
const PNG = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.from('png \r\n--x\r\n\u0000\u00ff', 'latin1')]);
const JPEG = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.from('jpeg', 'latin1')]);
const png = (filename = 'chart.png', alt = 'a chart'): LoadedImage => ({ bytes: PNG, mimeType: 'image/png', alt, filename });
const jpeg = (filename = 'photo.jpg', alt = ''): LoadedImage => ({ bytes: JPEG, mimeType: 'image/jpeg', alt, filename });

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
  const request = (
    settings: Record<string, unknown>,
    overrides: {
      text?: string;
      token?: string | null;
      signal?: AbortSignal;
      images?: LoadedImage[];
      part?: { index: number; count: number };
      replyTo?: { root: PublishedPart; parent: PublishedPart } | null;
    } = {},
  ): PublishRequest => ({
    postId: 42,
    attempt: 1,
    text: overrides.text ?? 'Hello, Telegram',
    runAt: new Date('2026-12-01T12:00:00.000Z'),
    idempotencyKey: overrides.part === undefined || overrides.part.index === 0 ? 'key-42' : `key-42.${overrides.part.index}`,
    images: overrides.images ?? [],
    part: overrides.part ?? { index: 0, count: 1 },
    replyTo: overrides.replyTo ?? null,
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
    assert.equal(telegramPublisher.threads, true);
    assert.equal(telegramPublisher.media?.maxImages, 10);
    assert.equal(telegramPublisher.media.maxBytes, 10 * 1024 * 1024);
    assert.deepEqual(telegramPublisher.media.types, ['image/jpeg', 'image/png', 'image/webp']);
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
  // --- images ------------------------------------------------------------------------

  it('one image: sendPhoto, multipart with the file and the text as caption (alt text is not sent)', async () => {
    const s = await telegram();
    const result = await publisher().publish(request(local(s, { parse_mode: 'HTML' }), { text: '<b>Chart</b> of the week', images: [png('week "12".png', 'bars going up')] }));
    const [sent] = s.requests;
    assert.equal(sent?.method, 'POST');
    assert.equal(sent?.path, `/bot${BOT_TOKEN}/sendPhoto`);
    assert.match(sent?.headers['content-type'] ?? '', /^multipart\/form-data; boundary=/);
    const form = sent?.multipart;
    assert.ok(form !== null && form !== undefined, 'a multipart body a standard parser reads');
    assert.deepEqual([...form.keys()].sort(), ['caption', 'chat_id', 'parse_mode', 'photo'], 'no alt text, no link preview options');
    assert.equal(form.get('chat_id'), CHANNEL);
    assert.equal(form.get('caption'), '<b>Chart</b> of the week');
    assert.equal(form.get('parse_mode'), 'HTML');
    const file = form.get('photo');
    assert.ok(file instanceof File);
    assert.equal(file.name, 'week "12".png');
    assert.equal(file.type, 'image/png');
    assert.deepEqual(Buffer.from(await file.arrayBuffer()), PNG);
    const [message] = s.messages;
    assert.equal(message?.caption, '<b>Chart</b> of the week');
    assert.deepEqual(message?.photo?.bytes, PNG);
    assert.deepEqual(result, { externalId: `${CHANNEL_ID}:${message?.message_id}`, externalUrl: `https://t.me/${CHANNEL.slice(1)}/${message?.message_id}` });
  });

  it('several images: sendMediaGroup with attach:// names, the caption on the first; the first message stands for the album', async () => {
    const s = await telegram();
    const result = await publisher().publish(request(local(s, { parse_mode: 'MarkdownV2' }), { text: 'Three *views*', images: [jpeg('a.jpg'), png('b.png'), jpeg('c.jpg')] }));
    const [sent] = s.requests;
    assert.equal(sent?.path, `/bot${BOT_TOKEN}/sendMediaGroup`);
    const form = sent?.multipart;
    assert.ok(form !== null && form !== undefined);
    assert.deepEqual([...form.keys()].sort(), ['chat_id', 'media', 'photo0', 'photo1', 'photo2']);
    assert.deepEqual(jsonField(form, 'media'), [
      { type: 'photo', media: 'attach://photo0', caption: 'Three *views*', parse_mode: 'MarkdownV2' },
      { type: 'photo', media: 'attach://photo1' },
      { type: 'photo', media: 'attach://photo2' },
    ]);
    assert.deepEqual(
      s.messages.map((m) => [m.photo?.filename, m.caption]),
      [
        ['a.jpg', 'Three *views*'],
        ['b.png', undefined],
        ['c.jpg', undefined],
      ],
    );
    assert.deepEqual(s.messages[1]?.photo?.bytes, PNG);
    assert.ok(s.messages.every((m) => m.media_group_id !== undefined && m.media_group_id === s.messages[0]?.media_group_id), 'one album');
    assert.equal(result.externalId, `${CHANNEL_ID}:${s.messages[0]?.message_id}`);
  });

  it('images without text are sent without a caption', async () => {
    const s = await telegram();
    await publisher().publish(request(local(s), { text: '', images: [jpeg()] }));
    assert.deepEqual([...(s.requests[0]?.multipart?.keys() ?? [])].sort(), ['chat_id', 'photo']);
    assert.equal(s.messages[0]?.caption, undefined);
  });

  it('a text over 1024 characters with images is refused before anything is sent (a caption takes 1024)', async () => {
    const s = await telegram();
    assert.equal(checkCaption('a'.repeat(1024), {}), null);
    assert.match(checkCaption('a'.repeat(1025), {}) ?? '', /1025 characters as Telegram counts them; with images it is their caption, which takes at most 1024/);
    assert.equal(checkCaption(`<b>${'a'.repeat(1024)}</b>`, { parse_mode: 'HTML' }), null, 'counted after entities parsing');
    assert.equal(telegramPublisher.checkText('a'.repeat(1025), {}), null, 'as a message without images it is fine');
    const e = await rejection(publisher().publish(request(local(s), { text: 'a'.repeat(1025), images: [png()] })));
    assert.ok(e instanceof PermanentPublishError, String(e));
    assert.match(e.message, /caption, which takes at most 1024/);
    const gif = await rejection(publisher().publish(request(local(s), { images: [{ bytes: Buffer.from('GIF89a'), mimeType: 'image/gif', alt: '', filename: 'a.gif' }] })));
    assert.match(gif.message, /image 1 \(a\.gif\) is image\/gif/);
    assert.equal(s.requests.length, 0);
  });

  it('photo errors: 413 and 400 are permanent, 429 waits retry_after, 5xx and a cut after sending are maybe delivered', async () => {
    const s = await telegram();
    const p = publisher();
    s.overrides.push({ kind: 'answer', status: 413, body: '{"ok":false,"error_code":413,"description":"Request Entity Too Large"}' });
    const big = await rejection(p.publish(request(local(s), { images: [png()] })));
    assert.ok(big instanceof PermanentPublishError, String(big));
    assert.match(big.message, /HTTP 413: Request Entity Too Large/);
    s.overrides.push({ kind: 'answer', status: 400, body: '{"ok":false,"error_code":400,"description":"Bad Request: IMAGE_PROCESS_FAILED"}' });
    const bad = await rejection(p.publish(request(local(s), { images: [png(), jpeg()] })));
    assert.ok(bad instanceof PermanentPublishError, String(bad));
    assert.match(bad.message, /IMAGE_PROCESS_FAILED/);
    s.overrides.push({ kind: 'answer', status: 429, body: '{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}' });
    const limited = await rejection(p.publish(request(local(s), { images: [png(), jpeg()] })));
    assert.ok(limited instanceof RetryablePublishError, String(limited));
    assert.equal(limited.retryAfterMs, 7_000);
    assert.equal(limited.maybeDelivered, false);
    s.overrides.push({ kind: 'answer', status: 502, body: '<html>Bad Gateway</html>' });
    const down = await rejection(p.publish(request(local(s), { images: [png()] })));
    assert.ok(down instanceof RetryablePublishError, String(down));
    assert.equal(down.maybeDelivered, true);
    assert.equal(s.messages.length, 0);
    s.overrides.push({ kind: 'cut-after-send' });
    const cut = await rejection(p.publish(request(local(s), { images: [png(), jpeg()] })));
    assert.ok(cut instanceof RetryablePublishError, String(cut));
    assert.equal(cut.maybeDelivered, true);
    assert.equal(s.messages.length, 2, 'Telegram sent the album');
  });

  // --- threads -----------------------------------------------------------------------

  it('a thread of 3 parts: each replies to the one before with reply_parameters, whatever the method', async () => {
    const s = await telegram();
    const p = publisher();
    const parts: { text: string; images: LoadedImage[] }[] = [
      { text: '1/3 text', images: [] },
      { text: '2/3 one photo', images: [png()] },
      { text: '3/3 an album', images: [jpeg('x.jpg'), jpeg('y.jpg')] },
    ];
    const published: PublishedPart[] = [];
    for (const [index, part] of parts.entries()) {
      const root = published[0];
      const parent = published.at(-1);
      const replyTo = root === undefined || parent === undefined ? null : { root, parent };
      published.push(await p.publish(request(local(s), { ...part, part: { index, count: 3 }, replyTo })));
    }
    const [first, second, third] = s.requests;
    assert.equal(first?.body?.['reply_parameters'], undefined);
    const idOf = (part: PublishedPart | undefined) => Number(part?.externalId?.split(':').at(-1));
    assert.equal(second?.path, `/bot${BOT_TOKEN}/sendPhoto`);
    assert.deepEqual(jsonField(second?.multipart, 'reply_parameters'), { message_id: idOf(published[0]) });
    assert.equal(third?.path, `/bot${BOT_TOKEN}/sendMediaGroup`);
    assert.deepEqual(jsonField(third?.multipart, 'reply_parameters'), { message_id: idOf(published[1]) });
    assert.deepEqual(
      s.messages.map((m) => [m.message_id, m.reply_to]),
      [
        [idOf(published[0]), null],
        [idOf(published[1]), idOf(published[0])],
        [idOf(published[2]), idOf(published[1])],
        [idOf(published[2]) + 1, idOf(published[1])],
      ],
      'the chain, as Telegram holds it (both photos of the album reply)',
    );
    // a text part replying: JSON reply_parameters
    const [root, , album] = published;
    assert.ok(root !== undefined && album !== undefined);
    const fourth = await p.publish(request(local(s), { text: 'PS', part: { index: 3, count: 4 }, replyTo: { root, parent: album } }));
    assert.deepEqual(s.requests.at(-1)?.body?.['reply_parameters'], { message_id: idOf(published[2]) });
    assert.equal(s.messages.at(-1)?.reply_to, idOf(published[2]));
    assert.notEqual(fourth.externalId, null);
  });

  it('a reply to a message Telegram does not have fails the post (400, permanent)', async () => {
    const s = await telegram();
    const gone: PublishedPart = { externalId: `${CHANNEL_ID}:99999`, externalUrl: null };
    const e = await rejection(publisher().publish(request(local(s), { part: { index: 1, count: 2 }, replyTo: { root: gone, parent: gone } })));
    assert.ok(e instanceof PermanentPublishError, String(e));
    assert.match(e.message, /HTTP 400: Bad Request: message to be replied not found/);
    const album = await rejection(publisher().publish(request(local(s), { images: [png(), jpeg()], part: { index: 1, count: 2 }, replyTo: { root: gone, parent: gone } })));
    assert.match(album.message, /message to be replied not found/);
    const noId = await rejection(publisher().publish(request(local(s), { part: { index: 1, count: 2 }, replyTo: { root: gone, parent: { externalId: null, externalUrl: null } } })));
    assert.ok(noId instanceof PermanentPublishError, String(noId));
    assert.match(noId.message, /part 2 replies to a part without a Telegram message id/);
    assert.equal(s.messages.length, 0);
  });
});

/** a multipart field holding JSON, parsed */
function jsonField(form: FormData | null | undefined, name: string): unknown {
  const value = form?.get(name);
  assert.equal(typeof value, 'string', `${name} is a text field`);
  return JSON.parse(value as string) as unknown;
}
