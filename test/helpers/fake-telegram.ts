import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { readMultipart } from './multipart.ts';

/** the channel's bot token (BotFather's shape): it must never appear in an error */
export const BOT_TOKEN = `7001234567:AA${randomBytes(18).toString('base64url')}`;
/** the public channel this fake knows, and its numeric id */
export const CHANNEL = '@postscheduler_test';
export const CHANNEL_ID = -1001987654321;
/** a private group (no username) the bot is a member of */
export const GROUP_ID = -1002000000001;

export interface ApiRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: http.IncomingHttpHeaders;
  /** a JSON body */
  readonly body: Record<string, unknown> | null;
  /** a multipart/form-data body as a standard parser (undici's) reads it */
  readonly multipart: FormData | null;
}

export interface Photo {
  /** the multipart field it came in */
  readonly field: string;
  readonly filename: string;
  readonly type: string;
  readonly bytes: Buffer;
}

export interface SentMessage {
  readonly message_id: number;
  readonly chat_id: number;
  /** a text message's text; '' for a photo */
  readonly text: string;
  /** a photo's caption (undefined when it has none, and for a text message) */
  readonly caption: string | undefined;
  readonly photo: Photo | null;
  /** the album it belongs to */
  readonly media_group_id: string | undefined;
  /** the message it replies to */
  readonly reply_to: number | null;
}

/** a photo's limit (core.telegram.org/bots/api#sendphoto) */
export const MAX_PHOTO_BYTES = 10 * 1024 * 1024;

/** what the server does with the next POST sendMessage, sendPhoto or sendMediaGroup instead of answering as Telegram */
export type Override =
  | { readonly kind: 'answer'; readonly status: number; readonly body: string }
  /** send the message, then cut the connection before answering */
  | { readonly kind: 'cut-after-send' }
  /** read the request and never answer */
  | { readonly kind: 'hang' };

export interface FakeTelegram {
  readonly url: string;
  readonly host: string;
  readonly requests: ApiRequest[];
  readonly messages: SentMessage[];
  /** the next sendMessage, sendPhoto and sendMediaGroup POSTs are handled by these, in order */
  readonly overrides: Override[];
  close(): Promise<void>;
}

/**
 * A local stand-in for the Telegram Bot API (core.telegram.org/bots/api): methods at
 * /bot<token>/<method>, answers `{"ok":true,"result":...}` or `{"ok":false,
 * "error_code":N,"description":"..."}` with the HTTP status equal to error_code. A
 * token it does not know is 401 Unauthorized; a path that is not /bot<token>/<method>
 * is 404 Not Found. sendMessage takes a JSON body, knows CHANNEL (by username or id)
 * and GROUP_ID, and refuses an empty or too long text as Telegram does. sendPhoto and
 * sendMediaGroup take multipart/form-data (files as `attach://<field>` in an album's
 * `media`; 2-10 photos; captions of at most 1024 characters; 413 for a photo over
 * 10 MB). `reply_parameters.message_id` must name a message of the same chat (400
 * "message to be replied not found" otherwise).
 */
export async function startTelegram(): Promise<FakeTelegram> {
  const requests: ApiRequest[] = [];
  const messages: SentMessage[] = [];
  const overrides: Override[] = [];
  let nextId = 100;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => void answer(req, res, Buffer.concat(chunks)));
  });
  const answer = async (req: http.IncomingMessage, res: http.ServerResponse, bytes: Buffer) => {
    const raw = bytes.toString('utf8');
    const type = req.headers['content-type'] ?? '';
    let body: Record<string, unknown> | null = null;
    if (raw !== '' && type.startsWith('application/json')) {
      try {
        body = JSON.parse(raw) as Record<string, unknown>;
      } catch {
        body = null;
      }
    }
    const multipart = type.startsWith('multipart/form-data') ? await readMultipart(bytes, type) : null;
    const path = req.url ?? '';
    requests.push({ method: req.method ?? '', path, headers: req.headers, body, multipart });
    const reply = await route(req, path, body, multipart);
    if (reply === 'hang') return;
    if (reply === 'cut') {
      req.socket.destroy();
      return;
    }
    res.writeHead(reply.status, { 'content-type': 'application/json' });
    res.end(typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body));
  };
  type Reply = { readonly status: number; readonly body: unknown } | 'hang' | 'cut';
  const error = (code: number, description: string, parameters?: Record<string, unknown>): Reply => ({
    status: code,
    body: { ok: false, error_code: code, description, ...(parameters === undefined ? {} : { parameters }) },
  });
  const chatOf = (chatId: unknown): { id: number; username?: string } | null => {
    if (chatId === CHANNEL || chatId === String(CHANNEL_ID) || chatId === CHANNEL_ID) return { id: CHANNEL_ID, username: CHANNEL.slice(1) };
    if (chatId === String(GROUP_ID) || chatId === GROUP_ID) return { id: GROUP_ID };
    return null;
  };
  type Chat = { id: number; username?: string };
  /** a sent message as the API shows it */
  const shown = (sent: SentMessage, chat: Chat) => {
    const chatObject = { ...chat, type: chat.username === undefined ? 'supergroup' : 'channel', title: 'Test' };
    return {
      message_id: sent.message_id,
      sender_chat: chatObject,
      chat: chatObject,
      date: Math.floor(Date.now() / 1000),
      ...(sent.photo === null ? { text: sent.text } : { photo: [{ file_id: `photo-${sent.message_id}`, file_unique_id: `u${sent.message_id}`, width: 800, height: 600, file_size: sent.photo.bytes.length }] }),
      ...(sent.caption === undefined ? {} : { caption: sent.caption }),
      ...(sent.media_group_id === undefined ? {} : { media_group_id: sent.media_group_id }),
      ...(sent.reply_to === null ? {} : { reply_to_message: { message_id: sent.reply_to, chat: chatObject, date: 0 } }),
    };
  };
  /** the message a reply names, or the error Telegram answers */
  const replyTarget = (chat: Chat, parameters: unknown): { readonly replyTo: number | null } | { readonly failure: Reply } => {
    if (parameters === undefined) return { replyTo: null };
    let value: unknown = parameters;
    if (typeof value === 'string') {
      try {
        value = JSON.parse(value) as unknown;
      } catch {
        return { failure: error(400, "Bad Request: can't parse reply parameters JSON object") };
      }
    }
    const messageId = typeof value === 'object' && value !== null ? (value as Record<string, unknown>)['message_id'] : undefined;
    if (typeof messageId !== 'number' || !messages.some((m) => m.chat_id === chat.id && m.message_id === messageId)) {
      return { failure: error(400, 'Bad Request: message to be replied not found') };
    }
    return { replyTo: messageId };
  };
  const photoOf = async (form: FormData, field: string): Promise<Photo | null> => {
    const file = form.get(field);
    return file instanceof File ? { field, filename: file.name, type: file.type, bytes: Buffer.from(await file.arrayBuffer()) } : null;
  };
  const field = (form: FormData, name: string): string | undefined => {
    const value = form.get(name);
    return typeof value === 'string' ? value : undefined;
  };
  const captionProblem = (caption: string | undefined, parseMode: unknown): Reply | null =>
    caption !== undefined && parseMode === undefined && caption.length > 1024 ? error(400, 'Bad Request: message caption is too long') : null;

  const route = async (req: http.IncomingMessage, path: string, body: Record<string, unknown> | null, form: FormData | null): Promise<Reply> => {
    const match = /^\/bot([^/]+)\/([A-Za-z]+)$/.exec(path);
    if (match === null) return error(404, 'Not Found');
    const [, token, method] = match;
    const sending = method === 'sendMessage' || method === 'sendPhoto' || method === 'sendMediaGroup';
    if (!sending || req.method !== 'POST') {
      if (method === 'getMe' && (req.method === 'GET' || req.method === 'POST')) {
        if (token !== BOT_TOKEN) return error(401, 'Unauthorized');
        return { status: 200, body: { ok: true, result: { id: 7001234567, is_bot: true, first_name: 'Scheduler', username: 'post_scheduler_bot' } } };
      }
      return error(404, 'Not Found: method not found');
    }
    const override = overrides.shift();
    if (override?.kind === 'answer') return { status: override.status, body: override.body };
    if (override?.kind === 'hang') return 'hang';
    if (token !== BOT_TOKEN) return error(401, 'Unauthorized');
    const cut = override?.kind === 'cut-after-send';

    if (method === 'sendMessage') {
      if (body === null) return error(400, 'Bad Request: message text is empty');
      const chat = chatOf(body['chat_id']);
      if (chat === null) return error(400, 'Bad Request: chat not found');
      const text = typeof body['text'] === 'string' ? body['text'] : '';
      if (text.trim() === '') return error(400, 'Bad Request: message text is empty');
      if (body['parse_mode'] === undefined && text.length > 4096) return error(400, 'Bad Request: message is too long');
      const target = replyTarget(chat, body['reply_parameters']);
      if ('failure' in target) return target.failure;
      const { replyTo } = target;
      nextId += 1;
      const sent: SentMessage = { message_id: nextId, chat_id: chat.id, text, caption: undefined, photo: null, media_group_id: undefined, reply_to: replyTo };
      messages.push(sent);
      if (cut) return 'cut';
      return { status: 200, body: { ok: true, result: shown(sent, chat) } };
    }

    // sendPhoto and sendMediaGroup: multipart/form-data
    if (form === null) return error(400, method === 'sendPhoto' ? 'Bad Request: there is no photo in the request' : 'Bad Request: parameter "media" is required');
    const chat = chatOf(field(form, 'chat_id'));
    if (chat === null) return error(400, 'Bad Request: chat not found');
    const target = replyTarget(chat, field(form, 'reply_parameters'));
    if ('failure' in target) return target.failure;
    const { replyTo } = target;
    /** the photos and captions to send, in order */
    const items: { photo: Photo; caption: string | undefined }[] = [];
    if (method === 'sendPhoto') {
      const photo = await photoOf(form, 'photo');
      if (photo === null) return error(400, 'Bad Request: there is no photo in the request');
      const caption = field(form, 'caption');
      const tooLong = captionProblem(caption, field(form, 'parse_mode'));
      if (tooLong !== null) return tooLong;
      items.push({ photo, caption });
    } else {
      let media: unknown;
      try {
        media = JSON.parse(field(form, 'media') ?? '') as unknown;
      } catch {
        return error(400, "Bad Request: can't parse media JSON object");
      }
      if (!Array.isArray(media)) return error(400, "Bad Request: can't parse media JSON object");
      if (media.length < 2 || media.length > 10) return error(400, 'Bad Request: wrong number of media in the album; must be 2-10');
      for (const entry of media) {
        const item = typeof entry === 'object' && entry !== null ? (entry as Record<string, unknown>) : {};
        const attach = typeof item['media'] === 'string' ? /^attach:\/\/(.+)$/.exec(item['media'])?.[1] : undefined;
        if (item['type'] !== 'photo') return error(400, 'Bad Request: unsupported media type in the album');
        const photo = attach === undefined ? null : await photoOf(form, attach);
        if (photo === null) return error(400, 'Bad Request: wrong file identifier/HTTP URL specified');
        const caption = typeof item['caption'] === 'string' ? item['caption'] : undefined;
        const tooLong = captionProblem(caption, item['parse_mode']);
        if (tooLong !== null) return tooLong;
        items.push({ photo, caption });
      }
    }
    for (const { photo } of items) {
      if (photo.bytes.length > MAX_PHOTO_BYTES) return { status: 413, body: { ok: false, error_code: 413, description: 'Request Entity Too Large' } };
      if (photo.bytes.length === 0) return error(400, 'Bad Request: IMAGE_PROCESS_FAILED');
    }
    const group = method === 'sendMediaGroup' ? String(13_000_000 + nextId) : undefined;
    const sent: SentMessage[] = items.map(({ photo, caption }) => {
      nextId += 1;
      return { message_id: nextId, chat_id: chat.id, text: '', caption, photo, media_group_id: group, reply_to: replyTo };
    });
    messages.push(...sent);
    if (cut) return 'cut';
    const result = sent.map((m) => shown(m, chat));
    return { status: 200, body: { ok: true, result: method === 'sendPhoto' ? result[0] : result } };
  };
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    requests,
    messages,
    overrides,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
