import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { codePoints } from '../../src/publishers/discord.ts';

/** the webhook's token: it must never appear in an error */
export const WEBHOOK_TOKEN = `dwt${randomBytes(24).toString('base64url')}`;
export const WEBHOOK_ID = '1234567890123456789';
export const GUILD_ID = '111111111111111111';
export const CHANNEL_ID = '222222222222222222';
/** the webhook's path, as Discord serves it */
export const WEBHOOK_PATH = `/api/webhooks/${WEBHOOK_ID}/${WEBHOOK_TOKEN}`;

export interface ApiRequest {
  readonly method: string;
  /** the path without the query */
  readonly path: string;
  readonly query: URLSearchParams;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Record<string, unknown> | null;
}

export interface Message {
  readonly id: string;
  readonly content: string;
  readonly username: string;
}

/** what the server does with the next execute (POST) instead of answering as Discord */
export type Override =
  | { readonly kind: 'answer'; readonly status: number; readonly body: string; readonly headers?: Record<string, string> }
  /** save the message, then cut the connection before answering */
  | { readonly kind: 'cut-after-create' };

export interface FakeDiscord {
  /** the webhook's URL (http, on 127.0.0.1) */
  readonly webhookUrl: string;
  readonly host: string;
  readonly requests: ApiRequest[];
  readonly messages: Message[];
  /** the next executes are handled by these, in order */
  readonly overrides: Override[];
  /** answer message objects without guild_id (a webhook outside a guild) */
  omitGuild: boolean;
  /** how long each Execute Webhook is held before its answer (0: at once) */
  answerDelayMs: number;
  /** the most Execute Webhook requests held at once so far */
  readonly maxInFlight: number;
  close(): Promise<void>;
}

/**
 * A local stand-in for Discord's webhook endpoints, answering as
 * discord.com/developers/docs/resources/webhook documents them: Execute Webhook
 * (`POST /api/webhooks/{id}/{token}`, with `?wait=true` a 200 and the message object,
 * without it a 204) and Get Webhook with Token (`GET`, the webhook object). A wrong token
 * gets 401 `Invalid Webhook Token` (code 50027), an unknown id 404 `Unknown Webhook`
 * (10015), an empty or too long `content` 400 `Invalid Form Body` (50035 / 50006).
 */
export async function startDiscord(): Promise<FakeDiscord> {
  const requests: ApiRequest[] = [];
  const messages: Message[] = [];
  const overrides: Override[] = [];
  let nextId = 1_300_000_000_000_000_000n;
  const state = { omitGuild: false, answerDelayMs: 0, inFlight: 0, maxInFlight: 0 };
  const server = http.createServer((req, res) => {
    const executes = req.method === 'POST';
    if (executes) {
      state.inFlight++;
      state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
      res.on('close', () => state.inFlight--);
    }
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
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      requests.push({ method: req.method ?? '', path: url.pathname, query: url.searchParams, headers: req.headers, body });
      if (executes && state.answerDelayMs > 0) setTimeout(() => answer(req, res, url, body), state.answerDelayMs);
      else answer(req, res, url, body);
    });
  });
  const answer = (req: http.IncomingMessage, res: http.ServerResponse, url: URL, body: Record<string, unknown> | null): void => {
    const reply = route(req.method ?? '', url, body);
    if (reply === 'cut') {
      req.socket.destroy();
      return;
    }
    if (reply.status === 204) {
      res.writeHead(204);
      res.end();
      return;
    }
    res.writeHead(reply.status, { 'content-type': 'application/json', ...reply.headers });
    res.end(typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body));
  };
  type Reply = { readonly status: number; readonly body: unknown; readonly headers?: Record<string, string> } | 'cut';
  const error = (status: number, message: string, code: number, errors?: unknown): Reply => ({
    status,
    body: errors === undefined ? { message, code } : { message, code, errors },
  });
  const route = (method: string, url: URL, body: Record<string, unknown> | null): Reply => {
    const match = /^\/api\/webhooks\/(\d+)\/([^/]+)$/.exec(url.pathname);
    if (match === null) return error(404, '404: Not Found', 0);
    if (match[1] !== WEBHOOK_ID) return error(404, 'Unknown Webhook', 10015);
    if (match[2] !== WEBHOOK_TOKEN) return error(401, 'Invalid Webhook Token', 50027);
    if (method === 'GET') {
      return {
        status: 200,
        body: {
          application_id: null,
          avatar: null,
          channel_id: CHANNEL_ID,
          guild_id: GUILD_ID,
          id: WEBHOOK_ID,
          name: 'Announcements',
          type: 1,
          token: WEBHOOK_TOKEN,
        },
      };
    }
    if (method !== 'POST') return error(405, '405: Method Not Allowed', 0);
    const override = overrides.shift();
    if (override?.kind === 'answer') return { status: override.status, body: override.body, ...(override.headers === undefined ? {} : { headers: override.headers }) };
    const content = typeof body?.['content'] === 'string' ? body['content'] : '';
    if (body === null || content === '') return error(400, 'Cannot send an empty message', 50006);
    if (codePoints(content) > 2000) {
      return error(400, 'Invalid Form Body', 50035, { content: { _errors: [{ code: 'BASE_TYPE_MAX_LENGTH', message: 'Must be 2000 or fewer in length.' }] } });
    }
    nextId += 1n;
    const username = typeof body['username'] === 'string' ? body['username'] : 'Announcements';
    const message: Message = { id: String(nextId), content, username };
    messages.push(message);
    if (override?.kind === 'cut-after-create') return 'cut';
    if (url.searchParams.get('wait') !== 'true') return { status: 204, body: '' };
    return {
      status: 200,
      body: {
        id: message.id,
        type: 0,
        content,
        channel_id: CHANNEL_ID,
        ...(state.omitGuild ? {} : { guild_id: GUILD_ID }),
        author: { bot: true, id: WEBHOOK_ID, username, avatar: null, discriminator: '0000' },
        attachments: [],
        embeds: [],
        mentions: [],
        mention_roles: [],
        pinned: false,
        mention_everyone: false,
        tts: false,
        timestamp: new Date().toISOString(),
        edited_timestamp: null,
        flags: 0,
        components: [],
        webhook_id: WEBHOOK_ID,
      },
    };
  };
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  const base = `http://127.0.0.1:${port}`;
  return {
    webhookUrl: `${base}${WEBHOOK_PATH}`,
    host: `127.0.0.1:${port}`,
    requests,
    messages,
    overrides,
    get omitGuild() {
      return state.omitGuild;
    },
    set omitGuild(value: boolean) {
      state.omitGuild = value;
    },
    get answerDelayMs() {
      return state.answerDelayMs;
    },
    set answerDelayMs(value: number) {
      state.answerDelayMs = value;
    },
    get maxInFlight() {
      return state.maxInFlight;
    },
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
