import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';

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
  readonly body: Record<string, unknown> | null;
}

export interface SentMessage {
  readonly message_id: number;
  readonly chat_id: number;
  readonly text: string;
}

/** what the server does with the next POST sendMessage instead of answering as Telegram */
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
  /** the next sendMessage POSTs are handled by these, in order */
  readonly overrides: Override[];
  close(): Promise<void>;
}

/**
 * A local stand-in for the Telegram Bot API (core.telegram.org/bots/api): methods at
 * /bot<token>/<method>, answers `{"ok":true,"result":...}` or `{"ok":false,
 * "error_code":N,"description":"..."}` with the HTTP status equal to error_code. A
 * token it does not know is 401 Unauthorized; a path that is not /bot<token>/<method>
 * is 404 Not Found. sendMessage takes a JSON body, knows CHANNEL (by username or id)
 * and GROUP_ID, and refuses an empty or too long text as Telegram does.
 */
export async function startTelegram(): Promise<FakeTelegram> {
  const requests: ApiRequest[] = [];
  const messages: SentMessage[] = [];
  const overrides: Override[] = [];
  let nextId = 100;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: Record<string, unknown> | null = null;
      if (raw !== '' && (req.headers['content-type'] ?? '').startsWith('application/json')) {
        try {
          body = JSON.parse(raw) as Record<string, unknown>;
        } catch {
          body = null;
        }
      }
      const path = req.url ?? '';
      requests.push({ method: req.method ?? '', path, headers: req.headers, body });
      const reply = route(req, path, body);
      if (reply === 'hang') return;
      if (reply === 'cut') {
        req.socket.destroy();
        return;
      }
      res.writeHead(reply.status, { 'content-type': 'application/json' });
      res.end(typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body));
    });
  });
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
  const route = (req: http.IncomingMessage, path: string, body: Record<string, unknown> | null): Reply => {
    const match = /^\/bot([^/]+)\/([A-Za-z]+)$/.exec(path);
    if (match === null) return error(404, 'Not Found');
    const [, token, method] = match;
    if (method === 'sendMessage' && req.method === 'POST') {
      const override = overrides.shift();
      if (override?.kind === 'answer') return { status: override.status, body: override.body };
      if (override?.kind === 'hang') return 'hang';
      if (token !== BOT_TOKEN) return error(401, 'Unauthorized');
      if (body === null) return error(400, 'Bad Request: message text is empty');
      const chat = chatOf(body['chat_id']);
      if (chat === null) return error(400, 'Bad Request: chat not found');
      const text = typeof body['text'] === 'string' ? body['text'] : '';
      if (text.trim() === '') return error(400, 'Bad Request: message text is empty');
      if (body['parse_mode'] === undefined && text.length > 4096) return error(400, 'Bad Request: message is too long');
      nextId += 1;
      const sent: SentMessage = { message_id: nextId, chat_id: chat.id, text };
      messages.push(sent);
      if (override?.kind === 'cut-after-send') return 'cut';
      return {
        status: 200,
        body: {
          ok: true,
          result: {
            message_id: sent.message_id,
            sender_chat: { ...chat, type: chat.username === undefined ? 'supergroup' : 'channel', title: 'Test' },
            chat: { ...chat, type: chat.username === undefined ? 'supergroup' : 'channel', title: 'Test' },
            date: Math.floor(Date.now() / 1000),
            text,
          },
        },
      };
    }
    if (method === 'getMe' && (req.method === 'GET' || req.method === 'POST')) {
      if (token !== BOT_TOKEN) return error(401, 'Unauthorized');
      return { status: 200, body: { ok: true, result: { id: 7001234567, is_bot: true, first_name: 'Scheduler', username: 'post_scheduler_bot' } } };
    }
    return error(404, 'Not Found: method not found');
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
