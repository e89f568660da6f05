import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';

/** the channel's bot token: it must never appear in an error */
export const TOKEN = `xoxb-${randomBytes(6).toString('hex')}-${randomBytes(6).toString('hex')}-${randomBytes(12).toString('hex')}`;

export interface ApiRequest {
  readonly method: string;
  /** the path without the query */
  readonly path: string;
  readonly query: URLSearchParams;
  readonly headers: http.IncomingHttpHeaders;
  /** the parsed JSON body (null when there is none or it is not JSON) */
  readonly body: Record<string, unknown> | null;
  readonly raw: string;
}

export interface Message {
  readonly channel: string;
  readonly ts: string;
  readonly text: string;
  readonly unfurl_links: unknown;
}

/** what the server does with the next call of a method instead of answering as Slack */
export type Override =
  | { readonly kind: 'answer'; readonly status: number; readonly body: string; readonly headers?: Record<string, string> }
  /** post the message, then cut the connection before answering */
  | { readonly kind: 'cut-after-post' }
  /** cut the connection before answering (nothing done) */
  | { readonly kind: 'cut' }
  /** read the request and never answer */
  | { readonly kind: 'hang' };

export interface FakeSlack {
  /** the Web API's base URL, like https://slack.com/api */
  readonly url: string;
  readonly host: string;
  readonly requests: ApiRequest[];
  readonly messages: Message[];
  /** the next chat.postMessage calls are handled by these, in order */
  readonly postOverrides: Override[];
  /** the next chat.getPermalink calls are handled by these, in order */
  readonly permalinkOverrides: Override[];
  close(): Promise<void>;
}

/** the workspace's conversations: the bot is a member of #general only */
export const GENERAL = 'C0123GENERAL';
export const RANDOM = 'C0456RANDOM';
const CONVERSATIONS = new Map([
  [GENERAL, { name: 'general', member: true }],
  [RANDOM, { name: 'random', member: false }],
]);
export const PERMALINK_BASE = 'https://acme.slack.com/archives';

/**
 * A local stand-in for Slack's Web API under /api, answering as docs.slack.dev documents
 * chat.postMessage, chat.getPermalink and auth.test: HTTP 200 with `{ ok: true, ... }` or
 * `{ ok: false, error }`, a Bearer token in the Authorization header (`not_authed`
 * without one, `invalid_auth` with a wrong one), channels by id or `#name`.
 */
export async function startSlack(): Promise<FakeSlack> {
  const requests: ApiRequest[] = [];
  const messages: Message[] = [];
  const postOverrides: Override[] = [];
  const permalinkOverrides: Override[] = [];
  let counter = 0;
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
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      requests.push({ method: req.method ?? '', path: url.pathname, query: url.searchParams, headers: req.headers, body, raw });
      const reply = route(req, url, body, raw);
      if (reply === 'hang') return;
      if (reply === 'cut') {
        req.socket.destroy();
        return;
      }
      res.writeHead(reply.status, { 'content-type': 'application/json; charset=utf-8', ...reply.headers });
      res.end(typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body));
    });
  });
  type Reply = { readonly status: number; readonly body: unknown; readonly headers?: Record<string, string> } | 'hang' | 'cut';
  const fail = (error: string): Reply => ({ status: 200, body: { ok: false, error } });
  const overridden = (o: Override): Reply | null => {
    if (o.kind === 'answer') return { status: o.status, body: o.body, ...(o.headers === undefined ? {} : { headers: o.headers }) };
    if (o.kind === 'hang') return 'hang';
    if (o.kind === 'cut') return 'cut';
    return null;
  };
  const conversation = (value: unknown): string | null => {
    if (typeof value !== 'string') return null;
    if (CONVERSATIONS.has(value)) return value;
    for (const [id, c] of CONVERSATIONS) if (value === `#${c.name}`) return id;
    return null;
  };
  const route = (req: http.IncomingMessage, url: URL, body: Record<string, unknown> | null, raw: string): Reply => {
    const authorization = req.headers['authorization'];
    const auth = (): string | null => (authorization === undefined ? 'not_authed' : authorization === `Bearer ${TOKEN}` ? null : 'invalid_auth');
    switch (`${req.method ?? ''} ${url.pathname}`) {
      case 'POST /api/auth.test': {
        const refused = auth();
        if (refused !== null) return fail(refused);
        return { status: 200, body: { ok: true, url: 'https://acme.slack.com/', team: 'Acme', user: 'scheduler', team_id: 'T0001', user_id: 'U0001', bot_id: 'B0001' } };
      }
      case 'POST /api/chat.postMessage': {
        const override = postOverrides.shift();
        if (override !== undefined) {
          const reply = overridden(override);
          if (reply !== null) return reply;
        }
        const refused = auth();
        if (refused !== null) return fail(refused);
        if (body === null) return fail(raw === '' ? 'no_text' : 'invalid_json');
        const id = conversation(body['channel']);
        if (id === null) return fail('channel_not_found');
        if (CONVERSATIONS.get(id)?.member !== true) return fail('not_in_channel');
        const text = body['text'];
        if (typeof text !== 'string' || text.trim() === '') return fail('no_text');
        counter += 1;
        const ts = `${Math.floor(Date.now() / 1000)}.${String(counter).padStart(6, '0')}`;
        messages.push({ channel: id, ts, text, unfurl_links: body['unfurl_links'] });
        if (override?.kind === 'cut-after-post') return 'cut';
        return {
          status: 200,
          body: { ok: true, channel: id, ts, message: { type: 'message', subtype: 'bot_message', text, ts, bot_id: 'B0001', user: 'U0001' } },
        };
      }
      case 'GET /api/chat.getPermalink': {
        const override = permalinkOverrides.shift();
        if (override !== undefined) {
          const reply = overridden(override);
          if (reply !== null) return reply;
        }
        const refused = auth();
        if (refused !== null) return fail(refused);
        const channel = url.searchParams.get('channel');
        const ts = url.searchParams.get('message_ts');
        if (channel === null || !CONVERSATIONS.has(channel)) return fail('channel_not_found');
        if (!messages.some((m) => m.channel === channel && m.ts === ts)) return fail('message_not_found');
        return { status: 200, body: { ok: true, channel, permalink: `${PERMALINK_BASE}/${channel}/p${(ts ?? '').replace('.', '')}` } };
      }
      default:
        return { status: 404, body: 'Not Found' };
    }
  };
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/api`,
    host: `127.0.0.1:${port}`,
    requests,
    messages,
    postOverrides,
    permalinkOverrides,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
