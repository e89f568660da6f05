import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';

/** the Page access token: it must never appear in an error */
export const TOKEN = `EAAG${randomBytes(40).toString('base64url')}`;
export const PAGE_ID = '104857600123456';
export const PAGE_NAME = 'Acme Bakery';
export const VERSION = 'v24.0';

export interface GraphRequest {
  readonly method: string;
  /** the path without the query */
  readonly path: string;
  readonly query: URLSearchParams;
  readonly headers: http.IncomingHttpHeaders;
  /** the parsed JSON body (null when there is none or it is not JSON) */
  readonly body: Record<string, unknown> | null;
  readonly raw: string;
}

export interface Post {
  readonly id: string;
  readonly message: string;
}

/** what the server does with the next feed POST instead of answering as the Graph API */
export type Override =
  | { readonly kind: 'answer'; readonly status: number; readonly body: string; readonly headers?: Record<string, string> }
  /** make the post, then cut the connection before answering */
  | { readonly kind: 'cut-after-post' };

export interface FakeFacebook {
  /** like https://graph.facebook.com */
  readonly url: string;
  readonly host: string;
  readonly requests: GraphRequest[];
  readonly posts: Post[];
  /** the next feed POSTs are handled by these, in order */
  readonly feedOverrides: Override[];
  close(): Promise<void>;
}

/** a Graph error object as the Graph API answers it */
export function graphError(code: number, message: string, extra: { type?: string; error_subcode?: number } = {}): string {
  return JSON.stringify({ error: { message, type: extra.type ?? 'OAuthException', code, ...(extra.error_subcode === undefined ? {} : { error_subcode: extra.error_subcode }), fbtrace_id: 'AbCdEf012_-' } });
}

/**
 * A local stand-in for the Graph API, answering as developers.facebook.com documents
 * `POST /{version}/{page-id}/feed` (`{ id: "<page>_<post>" }`) and `GET /{version}/{page-id}`,
 * a Bearer Page access token in the Authorization header (error 190 otherwise), errors as
 * the Graph error object with HTTP 400.
 */
export async function startFacebook(): Promise<FakeFacebook> {
  const requests: GraphRequest[] = [];
  const posts: Post[] = [];
  const feedOverrides: Override[] = [];
  let counter = 0;
  type Reply = { readonly status: number; readonly body: string; readonly headers?: Record<string, string> } | 'cut';
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
      const reply = route(req, url, body);
      if (reply === 'cut') {
        req.socket.destroy();
        return;
      }
      res.writeHead(reply.status, { 'content-type': 'application/json; charset=UTF-8', ...reply.headers });
      res.end(reply.body);
    });
  });
  const invalidToken: Reply = { status: 400, body: graphError(190, 'Invalid OAuth access token - Cannot parse access token') };
  const route = (req: http.IncomingMessage, url: URL, body: Record<string, unknown> | null): Reply => {
    const authorized = req.headers['authorization'] === `Bearer ${TOKEN}`;
    if (req.method === 'POST' && url.pathname === `/${VERSION}/${PAGE_ID}/feed`) {
      const override = feedOverrides.shift();
      if (override?.kind === 'answer') return { status: override.status, body: override.body, ...(override.headers === undefined ? {} : { headers: override.headers }) };
      if (!authorized) return invalidToken;
      const message = body?.['message'];
      if (typeof message !== 'string' || message === '') return { status: 400, body: graphError(100, '(#100) Invalid parameter', { type: 'OAuthException' }) };
      counter += 1;
      const id = `${PAGE_ID}_${String(900_000_000 + counter)}`;
      posts.push({ id, message });
      if (override?.kind === 'cut-after-post') return 'cut';
      return { status: 200, body: JSON.stringify({ id }) };
    }
    if (req.method === 'GET' && url.pathname === `/${VERSION}/${PAGE_ID}`) {
      if (!authorized) return invalidToken;
      return { status: 200, body: JSON.stringify({ id: PAGE_ID, name: PAGE_NAME }) };
    }
    return { status: 400, body: graphError(803, 'Some of the aliases you requested do not exist') };
  };
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    requests,
    posts,
    feedOverrides,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
