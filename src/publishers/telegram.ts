import * as v from 'valibot';
import { createHttpClient, HttpSendFailure, multipartBody, type HttpClient, type HttpResponse } from './http-client.ts';
import {
  CredentialsRejectedError,
  PermanentPublishError,
  RetryablePublishError,
  SettingsError,
  type LoadedImage,
  type MediaLimits,
  type Publisher,
  type PublisherModule,
  type PublisherOptions,
  type PublishRequest,
  parseWith,
} from './publisher.ts';
import { answerExcerpt } from './redact.ts';
import { apiUrlProblem, sendFailure } from './network.ts';
import { SECOND, MINUTE } from '../ratelimits/units.ts';

/**
 * `telegram`: sends a message to a chat (a channel, usually) through the Telegram Bot
 * API: text with `sendMessage` (https://core.telegram.org/bots/api#sendmessage), images
 * with `sendPhoto` or `sendMediaGroup`, threads as replies.
 *
 * - `POST {api_url}/bot<token>/sendMessage` with a JSON body: `chat_id`, `text`, and from
 *   the channel's settings `parse_mode` (MarkdownV2 or HTML) and
 *   `link_preview_options: { is_disabled: true }` (the current form of the deprecated
 *   `disable_web_page_preview`). `api_url` defaults to https://api.telegram.org; a
 *   local Bot API server is another https:// URL (http:// only with
 *   `allow_private_network`).
 * - Images (TELEGRAM_MEDIA: JPEG, PNG or WebP, at most 10 MB each, up to 10): one is
 *   sent with `sendPhoto` (https://core.telegram.org/bots/api#sendphoto), several as an
 *   album with `sendMediaGroup` (#sendmediagroup), both multipart/form-data: `chat_id`,
 *   the file (`photo`; for an album `photo0`..`photoN`, named in the JSON `media` array
 *   of InputMediaPhoto as `attach://photoN`). The text is the caption (of the first
 *   photo of an album, with `parse_mode`), at most 1024 characters as telegramLength
 *   counts them (checkCaption; checkText sees no images, so a longer text with images
 *   fails when it is due, before anything is sent), and may be empty. The Bot API has
 *   no alt text: an image's alt text is not sent. An album answers its messages; the
 *   first one is the part's external id and URL.
 * - Threads: a part after the first replies to the part before it with
 *   `reply_parameters: { message_id }`, the message id of `replyTo.parent` (the last
 *   field of its external id), in the same chat. A parent Telegram no longer has (400
 *   "message to be replied not found") fails the post. Each part is one call of
 *   publish: a part cut after sending is an unknown outcome, and under `hold` (the
 *   default) the post stops there, its earlier parts sent, until an operator decides.
 * - Every answer is `{ ok, result }` or `{ ok: false, error_code, description,
 *   parameters? }`:
 *   - ok: the sent Message (of an album: the first); its `message_id` and `chat.id`
 *     make the external id `<chat id>:<message id>`, and a chat with a username (a public channel) gives
 *     `https://t.me/<username>/<message id>`. An ok answer without them (or one that is
 *     not JSON) is an unknown outcome (maybe delivered).
 *   - 401 (a token Telegram does not know) and 404 (the path of a malformed token): the
 *     credentials are refused. 403 (the bot is not a member of the channel, was kicked or
 *     blocked): refused too, as only an operator can fix it (add the bot as an admin).
 *     The post waits for an operator instead of burning its attempts.
 *   - 429: flood control, not processed; retried after `parameters.retry_after` seconds.
 *   - 400 (chat not found, text too long, entities that do not parse, a photo Telegram
 *     cannot process, a reply to a message it does not have...), 413 (a file too big)
 *     and any other 4xx: permanent, with a short excerpt of `description`; a group that became a
 *     supergroup names its new chat id (`parameters.migrate_to_chat_id`).
 *   - 5xx: maybe delivered. Redirects are not followed (permanent: fix api_url).
 * - Telegram has no idempotency key and no way to find a message by one: a resend after
 *   an unknown outcome (a 5xx, a timeout or a cut after sending) can post twice, so
 *   telegram channels default to `--on-unknown hold` and `check` is not offered.
 * - Text: at most 4096 characters after entities parsing, counted in UTF-16 code units
 *   (as the API counts entity offsets): see telegramLength.
 * - The bot token is part of every request's path, so it is scrubbed from every message
 *   this module makes (the HTTP client's included): errors name the channel and the API
 *   host only, and an answer appears only as a short redacted excerpt.
 * - SSRF protection (as for webhooks): loopback, private and link-local addresses are
 *   refused unless the channel has `allow_private_network` (or ALLOW_PRIVATE_NETWORK).
 */

export const DEFAULT_API_URL = 'https://api.telegram.org';
/** sendMessage's limit: 1-4096 characters after entities parsing */
export const MAX_MESSAGE_LENGTH = 4096;
/** a photo's (or an album's) caption: 0-1024 characters after entities parsing */
export const MAX_CAPTION_LENGTH = 1024;

/**
 * The photos one message takes (core.telegram.org/bots/api, sendPhoto and
 * sendMediaGroup): an album of 2-10, or one; each at most 10 MB. JPEG, PNG and WebP are
 * sent as photos (Telegram re-encodes them); a GIF would be an animation, which an
 * album cannot hold, so GIFs are not offered. The Bot API has no alt text: alt text is
 * not sent, and any length is taken.
 */
export const TELEGRAM_MEDIA: MediaLimits = {
  maxImages: 10,
  maxBytes: 10 * 1024 * 1024,
  maxAltLength: Number.MAX_SAFE_INTEGER,
  types: ['image/jpeg', 'image/png', 'image/webp'],
};

const PARSE_MODES = ['MarkdownV2', 'HTML'] as const;
type ParseMode = (typeof PARSE_MODES)[number];

/** `@channelusername` (5-32 letters, digits, underscores, starting with a letter) or a numeric chat id */
const CHAT_USERNAME = /^@[A-Za-z][A-Za-z0-9_]{4,31}$/;
const CHAT_NUMBER = /^-?[1-9]\d{0,19}$/;


const CHAT_ID_MESSAGE = 'telegram chat_id must be a channel username like @mychannel or a numeric chat id like -1001234567890';

const settingsSchema = v.pipe(
  v.object(
    {
      chat_id: v.union(
        [
          v.pipe(v.string(CHAT_ID_MESSAGE), v.check((s) => CHAT_USERNAME.test(s) || CHAT_NUMBER.test(s), CHAT_ID_MESSAGE)),
          // `channels add --set chat_id=-100123` reads the number as JSON
          v.pipe(v.number(CHAT_ID_MESSAGE), v.safeInteger(CHAT_ID_MESSAGE), v.check((n) => n !== 0, CHAT_ID_MESSAGE), v.transform(String)),
        ],
        CHAT_ID_MESSAGE,
      ),
      api_url: v.optional(
        v.pipe(
          v.string('telegram api_url must be an https:// URL'),
          v.check((s) => apiUrlProblem('telegram', s, DEFAULT_API_URL) === null, (issue) => apiUrlProblem('telegram', issue.input, DEFAULT_API_URL) ?? 'telegram api_url is invalid'),
        ),
      ),
      parse_mode: v.optional(v.picklist(PARSE_MODES, 'telegram parse_mode must be MarkdownV2 or HTML (or absent, for plain text)')),
      disable_web_page_preview: v.optional(v.boolean('telegram disable_web_page_preview must be true or false')),
      allow_private_network: v.optional(v.boolean('telegram allow_private_network must be true or false')),
    },
    'telegram channel needs a chat_id (@channelusername or a numeric chat id)',
  ),
  v.check(
    (s) => s.api_url === undefined || new URL(s.api_url).protocol === 'https:' || s.allow_private_network === true,
    'telegram api_url must be https:// (http:// only with allow_private_network)',
  ),
);

type TelegramSettings = v.InferOutput<typeof settingsSchema>;

// the messages name the field, never its value
const credentialsSchema = v.object(
  {
    bot_token: v.pipe(
      v.string('telegram credentials need a bot_token (a string)'),
      v.minLength(1, 'telegram bot_token must not be empty'),
      // BotFather's tokens: the bot's id, a colon, then the secret; it goes into the URL path as it is
      v.regex(/^\d{1,20}:[A-Za-z0-9_-]{20,100}$/, 'telegram bot_token must look like 123456789:AA... (the token BotFather gives)'),
    ),
  },
  'telegram credentials need a bot_token',
);

type TelegramCredentials = v.InferOutput<typeof credentialsSchema>;

function parseSettings(settings: Record<string, unknown>): TelegramSettings {
  return parseWith(settingsSchema, settings);
}

function parseCredentials(credentials: Record<string, unknown>): TelegramCredentials {
  return parseWith(credentialsSchema, credentials);
}

const HTML_ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"' };

/** The text Telegram keeps of HTML: tags removed, the four named and all numeric entities decoded. */
function htmlVisibleText(text: string): string {
  return text.replace(/<\/?[A-Za-z][A-Za-z0-9-]*(?:\s[^>]*)?>/g, '').replace(/&(?:#(\d+)|#x([0-9A-Fa-f]+)|(lt|gt|amp|quot));/g, (m, dec?: string, hex?: string, name?: string) => {
    if (name !== undefined) return HTML_ENTITIES[name] ?? m;
    const code = dec !== undefined ? Number(dec) : Number.parseInt(hex ?? '', 16);
    return code <= 0x10ffff ? String.fromCodePoint(code) : m;
  });
}

/**
 * The text Telegram keeps of MarkdownV2: `[label](url)` is its label, `\x` is x, and the
 * unescaped markers * _ ~ | ` (and > opening a quote line) are formatting, not text.
 */
function markdownVisibleText(text: string): string {
  return text
    .replace(/(^|[^\\])!?\[((?:[^\]\\]|\\.)*)\]\((?:[^)\\]|\\.)*\)/g, '$1$2')
    .replace(/^\*?>/gm, '')
    .replace(/\\(.)|[*_~|`]/gs, (_m, escaped?: string) => escaped ?? '');
}

/**
 * The length of a message as Telegram counts it: UTF-16 code units (an emoji outside the
 * BMP counts 2) of the text left after entities parsing (the markup of parse_mode removed).
 */
export function telegramLength(text: string, parseMode?: ParseMode): number {
  const visible = parseMode === 'HTML' ? htmlVisibleText(text) : parseMode === 'MarkdownV2' ? markdownVisibleText(text) : text;
  return visible.length;
}

/** Why this text cannot go to a channel with these settings, or null when it can. */
function checkText(text: string, settings: Record<string, unknown>, images = 0): string | null {
  // with images the text is their caption: another limit, and it may be empty
  if (images > 0) return checkCaption(text, settings);
  const mode = settings['parse_mode'];
  const parseMode = mode === 'HTML' || mode === 'MarkdownV2' ? mode : undefined;
  if (text.trim() === '') return 'text is empty (Telegram refuses an empty message)';
  const length = telegramLength(text, parseMode);
  if (length <= MAX_MESSAGE_LENGTH) return null;
  const counted = parseMode === undefined ? 'UTF-16 code units' : `UTF-16 code units after ${parseMode} parsing`;
  return `text is ${length} characters as Telegram counts them (${counted}); a message takes at most ${MAX_MESSAGE_LENGTH}`;
}

/**
 * Why this text cannot be the caption of a part's images, or null when it can: a
 * caption may be empty, and takes at most MAX_CAPTION_LENGTH characters counted as
 * telegramLength counts them. checkText sees the text alone, so a text too long for a
 * caption passes it when scheduled and fails here, before anything is sent.
 */
export function checkCaption(text: string, settings: Record<string, unknown>): string | null {
  const mode = settings['parse_mode'];
  const parseMode = mode === 'HTML' || mode === 'MarkdownV2' ? mode : undefined;
  const length = telegramLength(text, parseMode);
  if (length <= MAX_CAPTION_LENGTH) return null;
  return `text is ${length} characters as Telegram counts them; with images it is their caption, which takes at most ${MAX_CAPTION_LENGTH}`;
}

function imageName(image: LoadedImage, index: number): string {
  return `image ${index + 1} (${image.filename})`;
}

/** Why these images cannot go with one message (the core checks them first; this is the last guard). */
function mediaProblem(images: readonly LoadedImage[]): string | null {
  if (images.length > TELEGRAM_MEDIA.maxImages) return `${images.length} images; an album takes at most ${TELEGRAM_MEDIA.maxImages}`;
  for (const [index, image] of images.entries()) {
    if (!TELEGRAM_MEDIA.types.includes(image.mimeType)) return `${imageName(image, index)} is ${image.mimeType}; Telegram photos are ${TELEGRAM_MEDIA.types.join(', ')}`;
    if (image.bytes.length > TELEGRAM_MEDIA.maxBytes) return `${imageName(image, index)} is ${image.bytes.length} bytes; a Telegram photo takes at most ${TELEGRAM_MEDIA.maxBytes}`;
  }
  return null;
}

/** The message id a reply names: the last field of `<chat id>:<message id>`, as this module makes it. */
function repliedMessageId(externalId: string | null): number | null {
  const match = externalId === null ? null : /:(\d{1,15})$/.exec(externalId);
  return match?.[1] === undefined ? null : Number(match[1]);
}

/** One Bot API call: its method and body. */
interface Outgoing {
  readonly method: 'sendMessage' | 'sendPhoto' | 'sendMediaGroup';
  readonly contentType: string;
  readonly body: Buffer | string;
}

/**
 * The call that sends a part: sendMessage (JSON) without images, sendPhoto with one,
 * sendMediaGroup with several (multipart: the files, `attach://` names in `media`, the
 * caption on the first), with `reply_parameters` naming the part it replies to.
 */
function outgoing(request: PublishRequest, settings: TelegramSettings, where: string): Outgoing {
  let reply: { message_id: number } | null = null;
  if (request.replyTo !== null) {
    const messageId = repliedMessageId(request.replyTo.parent.externalId);
    if (messageId === null) throw new PermanentPublishError(`telegram ${where}: part ${request.part.index + 1} replies to a part without a Telegram message id`);
    reply = { message_id: messageId };
  }
  const images = request.images;
  if (images.length === 0) {
    const body: Record<string, unknown> = { chat_id: settings.chat_id, text: request.text };
    if (settings.parse_mode !== undefined) body['parse_mode'] = settings.parse_mode;
    if (settings.disable_web_page_preview === true) body['link_preview_options'] = { is_disabled: true };
    if (reply !== null) body['reply_parameters'] = reply;
    return { method: 'sendMessage', contentType: 'application/json', body: JSON.stringify(body) };
  }
  const caption: Record<string, string> = {};
  if (request.text.trim() !== '') {
    caption['caption'] = request.text;
    if (settings.parse_mode !== undefined) caption['parse_mode'] = settings.parse_mode;
  }
  const fields: Record<string, string> = { chat_id: settings.chat_id };
  const file = (name: string, image: LoadedImage) => ({ name, filename: image.filename, contentType: image.mimeType, data: image.bytes });
  if (images.length === 1 && images[0] !== undefined) {
    Object.assign(fields, caption);
    if (reply !== null) fields['reply_parameters'] = JSON.stringify(reply);
    const { body, contentType } = multipartBody(fields, [file('photo', images[0])]);
    return { method: 'sendPhoto', contentType, body };
  }
  // alt text has no place in the Bot API: it is not sent
  const media = images.map((_, index) => ({ type: 'photo', media: `attach://photo${index}`, ...(index === 0 ? caption : {}) }));
  fields['media'] = JSON.stringify(media);
  if (reply !== null) fields['reply_parameters'] = JSON.stringify(reply);
  const { body, contentType } = multipartBody(fields, images.map((image, index) => file(`photo${index}`, image)));
  return { method: 'sendMediaGroup', contentType, body };
}

function redactSettings(settings: Record<string, unknown>): Record<string, unknown> {
  // chat, API URL, formatting: nothing secret (the token is a credential, never a setting)
  return { ...settings };
}

/** the token, and its secret part alone, replaced wherever it appears */
function scrub(message: string, token: string): string {
  if (token === '') return message;
  let out = message.split(token).join('***');
  const secret = token.slice(token.indexOf(':') + 1);
  if (secret.length >= 8) out = out.split(secret).join('***');
  return out;
}

/** the same error with the token scrubbed from its message (a last guard on every way out) */
function scrubbed(e: unknown, token: string): unknown {
  if (!(e instanceof Error) || token === '' || !e.message.includes(token.slice(token.indexOf(':') + 1))) return e;
  const message = scrub(e.message, token);
  if (e instanceof RetryablePublishError) return new RetryablePublishError(message, e.retryAfterMs, e.maybeDelivered, e.rateLimited);
  if (e instanceof CredentialsRejectedError) return new CredentialsRejectedError(message);
  if (e instanceof PermanentPublishError) return new PermanentPublishError(message);
  if (e instanceof SettingsError) return new SettingsError(message);
  return new Error(message);
}

/** `{ ok: false, error_code, description, parameters }` as far as the answer holds it */
interface ApiFailure {
  readonly code: number;
  readonly description: string;
  readonly retryAfterMs: number | null;
  readonly migrateTo: string | null;
}

function record(value: unknown): Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
}

function apiFailure(answer: HttpResponse, token: string): ApiFailure {
  const json = record(answer.json());
  const errorCode = json['error_code'];
  const code = typeof errorCode === 'number' && Number.isInteger(errorCode) && answer.status >= 200 && answer.status < 300 ? errorCode : answer.status;
  const description = typeof json['description'] === 'string' ? json['description'] : answer.text();
  const parameters = record(json['parameters']);
  const retryAfter = parameters['retry_after'];
  const migrate = parameters['migrate_to_chat_id'];
  return {
    code,
    // the token itself first (the server may echo the path), then whatever looks like a credential
    description: answerExcerpt(scrub(description, token)),
    retryAfterMs: typeof retryAfter === 'number' && Number.isFinite(retryAfter) && retryAfter >= 0 ? Math.ceil(retryAfter * 1000) : null,
    migrateTo: typeof migrate === 'number' && Number.isSafeInteger(migrate) ? String(migrate) : null,
  };
}


/** {api_url}/bot<token>/<method>, a path prefix of api_url kept */
function methodUrl(apiUrl: string, token: string, method: string): URL {
  const base = new URL(apiUrl);
  const prefix = base.pathname.replace(/\/+$/, '');
  return new URL(`${prefix}/bot${token}/${method}`, base);
}

function refusedCredentials(code: number): boolean {
  return code === 401 || code === 403 || code === 404;
}

function credentialsReason(code: number): string {
  if (code === 403) return 'the bot may not post to this chat (add it to the channel as an admin allowed to post)';
  return 'Telegram does not accept the bot token';
}

export const telegramPublisher: PublisherModule = {
  platform: 'telegram',
  parseSettings,
  parseCredentials,
  redactSettings,
  checkText,
  // Telegram has no idempotency key and no look-up: a resend after an unknown outcome can post twice
  canLookUp: false,
  defaultOnUnknown: 'hold',
  media: TELEGRAM_MEDIA,
  threads: true,
  /** Telegram's documented limits: 20 messages a minute to one group or channel, 30 a second per bot (one message at a time per chat, in order: parallel sends to one chat hit its flood control) */
  // the 30 a second are the bot's, shared by every channel it posts to: counted per bot
  // (its numeric id, the part of the token before the colon, which is not secret)
  rateLimits: (_settings, credentials) => {
    const token = credentials?.['bot_token'];
    const bot = typeof token === 'string' && /^\d+:/.test(token) ? token.slice(0, token.indexOf(':')) : undefined;
    return { posts: { limit: 20, windowMs: MINUTE }, requests: { limit: 30, windowMs: SECOND, ...(bot === undefined ? {} : { per: `bot ${bot}` }) }, concurrency: 1 };
  },

  async verify(settingsIn, credentialsIn, options) {
    const settings = parseSettings(settingsIn);
    if (credentialsIn === null) throw new SettingsError('telegram channel needs credentials with a bot_token');
    const { bot_token: token } = parseCredentials(credentialsIn);
    const apiUrl = settings.api_url ?? DEFAULT_API_URL;
    const where = `API ${new URL(apiUrl).host}`;
    const client = createHttpClient({ timeoutMs: options.timeoutMs, concurrency: 1, allowPrivateNetwork: options.allowPrivateNetwork === true });
    try {
      let answer: HttpResponse;
      try {
        answer = await client.request({
          method: 'GET',
          url: methodUrl(apiUrl, token, 'getMe'),
          headers: { accept: 'application/json' },
          signal: new AbortController().signal,
          allowPrivateNetwork: settings.allow_private_network === true,
        });
      } catch (e) {
        if (!(e instanceof HttpSendFailure)) throw e;
        const failure = sendFailure('telegram', e, where, options.timeoutMs, (text) => scrub(text, token));
        throw e.addressRefused ? new SettingsError(failure.message) : failure;
      }
      const json = record(answer.json());
      if (answer.status === 200 && json['ok'] === true) {
        const username = record(json['result'])['username'];
        if (typeof username !== 'string' || username === '') throw new Error(`telegram ${where}: getMe answered without the bot's username`);
        return { account: `@${username}` };
      }
      const failure = apiFailure(answer, token);
      if (failure.code === 401 || failure.code === 404) {
        throw new CredentialsRejectedError(`telegram ${where} refused the bot token (HTTP ${failure.code}: ${failure.description})`);
      }
      throw new Error(`telegram ${where}: getMe answered HTTP ${failure.code}: ${failure.description}`);
    } catch (e) {
      throw scrubbed(e, token);
    } finally {
      await client.close();
    }
  },

  createPublisher(options: PublisherOptions): Publisher {
    // one client (keep-alive pools) for every Telegram channel this worker publishes to
    const client: HttpClient = createHttpClient({
      timeoutMs: options.timeoutMs,
      concurrency: options.concurrency,
      allowPrivateNetwork: options.allowPrivateNetwork === true,
    });

    const send = async (request: PublishRequest, settings: TelegramSettings, token: string, where: string) => {
      const call = outgoing(request, settings, where);
      let answer: HttpResponse;
      try {
        answer = await client.request({
          method: 'POST',
          url: methodUrl(settings.api_url ?? DEFAULT_API_URL, token, call.method),
          headers: { 'content-type': call.contentType, accept: 'application/json' },
          body: call.body,
          signal: request.signal,
          allowPrivateNetwork: settings.allow_private_network === true,
        });
      } catch (e) {
        if (e instanceof HttpSendFailure) throw sendFailure('telegram', e, where, options.timeoutMs, (text) => scrub(text, token));
        throw e;
      }

      const { status } = answer;
      const json = record(answer.json());
      if (status >= 200 && status < 300 && json['ok'] === true) {
        // sendMediaGroup answers the album's messages, in order: the first one stands for it
        const result = json['result'];
        const message = record(Array.isArray(result) ? result[0] : result);
        const messageId = message['message_id'];
        const chat = record(message['chat']);
        const chatId = chat['id'];
        if (typeof messageId !== 'number' || (typeof chatId !== 'number' && typeof chatId !== 'string')) {
          // Telegram took the request and said something else: it may have sent it
          throw new RetryablePublishError(`telegram ${where}: HTTP ${status} without a message id (${answerExcerpt(scrub(answer.text(), token)) || 'empty answer'})`, null, true);
        }
        const username = chat['username'];
        const externalUrl = typeof username === 'string' && /^[A-Za-z0-9_]{1,64}$/.test(username) ? `https://t.me/${username}/${messageId}` : null;
        return { externalId: `${String(chatId)}:${messageId}`.slice(0, 500), externalUrl };
      }
      if (status >= 200 && status < 300 && json['ok'] !== false) {
        // a 2xx that is not the API's envelope (a proxy's page?): it may have been sent
        throw new RetryablePublishError(`telegram ${where}: HTTP ${status} without a message id (${answerExcerpt(scrub(answer.text(), token)) || 'empty answer'})`, null, true);
      }
      if (status >= 300 && status < 400) {
        throw new PermanentPublishError(`telegram ${where}: HTTP ${status} redirect (redirects are not followed; check api_url)`);
      }
      const failure = apiFailure(answer, token);
      const { code, description } = failure;
      const said = description === '' ? '' : `: ${description}`;
      if (refusedCredentials(code)) {
        throw new CredentialsRejectedError(`telegram ${where}: ${credentialsReason(code)} (HTTP ${code}${said})`);
      }
      if (code === 429) {
        throw new RetryablePublishError(`telegram ${where}: rate limited (HTTP 429${said})`, failure.retryAfterMs, false, true);
      }
      if (code >= 500) {
        // Telegram may have sent it; there is no key that would make a resend safe
        throw new RetryablePublishError(`telegram ${where}: HTTP ${code}${said}`, failure.retryAfterMs, true);
      }
      if (failure.migrateTo !== null) {
        throw new PermanentPublishError(`telegram ${where}: the group became a supergroup; set chat_id to ${failure.migrateTo} (HTTP ${code}${said})`);
      }
      throw new PermanentPublishError(`telegram ${where}: HTTP ${code}${said}`);
    };

    return {
      async publish(request: PublishRequest) {
        const channel = request.channel;
        let settings: TelegramSettings;
        try {
          settings = parseSettings(channel.settings);
        } catch (e) {
          throw new PermanentPublishError(`channel ${channel.name}: ${(e as Error).message}`);
        }
        const where = `channel ${channel.name} (${new URL(settings.api_url ?? DEFAULT_API_URL).host})`;
        if (request.credentials === null) {
          throw new CredentialsRejectedError(`telegram ${where} has no credentials: give it a bot_token`);
        }
        let token: string;
        try {
          token = parseCredentials({ ...request.credentials }).bot_token;
        } catch (e) {
          throw new CredentialsRejectedError(`telegram ${where}: ${(e as Error).message}`);
        }
        const tooLong = checkText(request.text, channel.settings, request.images.length);
        if (tooLong !== null) throw new PermanentPublishError(`telegram ${where}: ${tooLong}`);
        const media = mediaProblem(request.images);
        if (media !== null) throw new PermanentPublishError(`telegram ${where}: ${media}`);
        try {
          return await send(request, settings, token, where);
        } catch (e) {
          throw scrubbed(e, token);
        }
      },
      async close() {
        await client.close();
      },
    };
  },
};
