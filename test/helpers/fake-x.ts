import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';

const opaque = () => randomBytes(30).toString('base64url');

export const CLIENT_ID = 'cXlTX0NsaWVudElkOjE6Y2k';
/** the confidential client's secret: it must never appear in an error */
export const CLIENT_SECRET = `secret-${randomBytes(20).toString('hex')}`;

export interface ApiRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: http.IncomingHttpHeaders;
  /** the parsed JSON body (null when there is none or it is not JSON) */
  readonly body: Record<string, unknown> | null;
  /** the form body of a token request */
  readonly form: URLSearchParams | null;
  readonly raw: string;
}

export interface Post {
  readonly id: string;
  readonly text: string;
}

/** what the server does with the next call of an endpoint instead of answering as X */
export type Override =
  | { readonly kind: 'answer'; readonly status: number; readonly body: string; readonly headers?: Record<string, string> }
  /** create the post, then cut the connection before answering */
  | { readonly kind: 'cut-after-post' };

export interface FakeX {
  readonly url: string;
  readonly host: string;
  readonly requests: ApiRequest[];
  readonly posts: Post[];
  /** the next POST /2/tweets calls are handled by these, in order */
  readonly postOverrides: Override[];
  /** the next POST /2/oauth2/token calls are handled by these, in order */
  readonly tokenOverrides: Override[];
  /** the access token X takes now */
  accessToken: string;
  /** the refresh token X takes now (each refresh replaces it) */
  refreshToken: string;
  /** every access and refresh token this server has handed out or taken */
  readonly issued: string[];
  /** the client secret X expects (Basic auth on the token endpoint), or null for a public client */
  clientSecret: string | null;
  /** the current access token stops working (as when it expires) */
  expireAccessToken(): void;
  close(): Promise<void>;
}

const problem = (status: number, title: string, detail: string) => ({ title, type: 'about:blank', status, detail });

/**
 * A local stand-in for X API v2 as docs.x.com documents it: POST /2/tweets (201
 * `{ data: { id, text } }`, 401 for a wrong or expired token, 403 for a duplicate),
 * POST /2/oauth2/token with the refresh_token grant (rotating the refresh token; 400
 * invalid_request for a dead one), GET /2/users/me.
 */
export async function startX(): Promise<FakeX> {
  const requests: ApiRequest[] = [];
  const posts: Post[] = [];
  const postOverrides: Override[] = [];
  const tokenOverrides: Override[] = [];
  let nextId = 1_860_000_000_000_000_000n;
  const state = {
    accessToken: opaque(),
    refreshToken: opaque(),
    clientSecret: null as string | null,
  };
  const issued = [state.accessToken, state.refreshToken];
  type Reply = { readonly status: number; readonly body: unknown; readonly headers?: Record<string, string> } | 'cut';

  const route = (req: http.IncomingMessage, path: string, body: Record<string, unknown> | null, form: URLSearchParams | null): Reply => {
    const authorized = req.headers['authorization'] === `Bearer ${state.accessToken}`;
    const unauthorized: Reply = { status: 401, body: problem(401, 'Unauthorized', 'Unauthorized') };
    switch (`${req.method ?? ''} ${path}`) {
      case 'POST /2/tweets': {
        const override = postOverrides.shift();
        if (override?.kind === 'answer') return { status: override.status, body: override.body, ...(override.headers === undefined ? {} : { headers: override.headers }) };
        if (!authorized) return unauthorized;
        const text = body?.['text'];
        if (typeof text !== 'string' || text === '') return { status: 400, body: { errors: [{ message: 'text is required' }], title: 'Invalid Request', detail: 'One or more parameters to your request was invalid.', type: 'https://api.twitter.com/2/problems/invalid-request' } };
        if (posts.some((p) => p.text === text)) return { status: 403, body: problem(403, 'Forbidden', 'You are not allowed to create a Tweet with duplicate content.') };
        nextId += 1n;
        const post = { id: String(nextId), text };
        posts.push(post);
        if (override?.kind === 'cut-after-post') return 'cut';
        return { status: 201, body: { data: { id: post.id, text, edit_history_tweet_ids: [post.id] } } };
      }
      case 'POST /2/oauth2/token': {
        const override = tokenOverrides.shift();
        if (override?.kind === 'answer') return { status: override.status, body: override.body, ...(override.headers === undefined ? {} : { headers: override.headers }) };
        if (state.clientSecret !== null && req.headers['authorization'] !== `Basic ${Buffer.from(`${CLIENT_ID}:${state.clientSecret}`).toString('base64')}`) {
          return { status: 401, body: { error: 'unauthorized_client', error_description: 'Missing valid authorization header' } };
        }
        if (form?.get('grant_type') !== 'refresh_token' || form.get('client_id') !== CLIENT_ID || form.get('refresh_token') !== state.refreshToken) {
          return { status: 400, body: { error: 'invalid_request', error_description: 'Value passed for the token was invalid.' } };
        }
        state.accessToken = opaque();
        state.refreshToken = opaque();
        issued.push(state.accessToken, state.refreshToken);
        return {
          status: 200,
          body: { token_type: 'bearer', expires_in: 7200, access_token: state.accessToken, scope: 'tweet.write users.read tweet.read offline.access', refresh_token: state.refreshToken },
        };
      }
      case 'GET /2/users/me':
        if (!authorized) return unauthorized;
        return { status: 200, body: { data: { id: '2244994945', name: 'X Dev', username: 'XDevelopers' } } };
      default:
        return { status: 404, body: problem(404, 'Not Found Error', 'Sorry, that page does not exist.') };
    }
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const type = req.headers['content-type'] ?? '';
      let body: Record<string, unknown> | null = null;
      if (raw !== '' && type.startsWith('application/json')) {
        try {
          body = JSON.parse(raw) as Record<string, unknown>;
        } catch {
          body = null;
        }
      }
      const form = type.startsWith('application/x-www-form-urlencoded') ? new URLSearchParams(raw) : null;
      const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
      requests.push({ method: req.method ?? '', path, headers: req.headers, body, form, raw });
      const reply = route(req, path, body, form);
      if (reply === 'cut') {
        req.socket.destroy();
        return;
      }
      res.writeHead(reply.status, { 'content-type': 'application/json; charset=utf-8', ...reply.headers });
      res.end(typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    requests,
    posts,
    postOverrides,
    tokenOverrides,
    issued,
    get accessToken() {
      return state.accessToken;
    },
    set accessToken(value: string) {
      state.accessToken = value;
    },
    get refreshToken() {
      return state.refreshToken;
    },
    set refreshToken(value: string) {
      state.refreshToken = value;
    },
    get clientSecret() {
      return state.clientSecret;
    },
    set clientSecret(value: string | null) {
      state.clientSecret = value;
    },
    expireAccessToken() {
      state.accessToken = opaque();
      issued.push(state.accessToken);
    },
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
