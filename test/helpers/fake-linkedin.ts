import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';

/** the channel's access token: it must never appear in an error */
export const TOKEN = `AQV${randomBytes(24).toString('base64url')}`;
export const MEMBER = 'urn:li:person:8675309abc';
/** the token may not post for this organization (it lacks w_organization_social) */
export const ORGANIZATION = 'urn:li:organization:2414183';
/** the only LinkedIn-Version the fake accepts (the publisher's default) */
export const VERSION = '202603';

export interface ApiRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: http.IncomingHttpHeaders;
  /** the parsed JSON body (null when there is none or it is not JSON) */
  readonly body: Record<string, unknown> | null;
}

export interface Post {
  readonly urn: string;
  readonly commentary: string;
}

/** what the server does with the next POST /rest/posts instead of answering as LinkedIn */
export type Override =
  | { readonly kind: 'answer'; readonly status: number; readonly body: string; readonly headers?: Record<string, string> }
  /** create the post, then cut the connection before answering */
  | { readonly kind: 'cut-after-post' };

export interface FakeLinkedIn {
  /** the API's base URL, like https://api.linkedin.com */
  readonly url: string;
  readonly host: string;
  readonly requests: ApiRequest[];
  readonly posts: Post[];
  readonly postOverrides: Override[];
  close(): Promise<void>;
}

/**
 * A local stand-in for LinkedIn's Posts API and OpenID userinfo, answering as
 * learn.microsoft.com documents them: POST /rest/posts needs a Bearer token (401
 * otherwise), a LinkedIn-Version header (426 for one it does not know) and
 * X-Restli-Protocol-Version 2.0.0, and answers 201 with an empty body and the post's URN
 * in x-restli-id; the token may post as MEMBER only (403 for another author).
 */
export async function startLinkedIn(): Promise<FakeLinkedIn> {
  const requests: ApiRequest[] = [];
  const posts: Post[] = [];
  const postOverrides: Override[] = [];
  let counter = 7_100_000_000_000_000_000n;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: Record<string, unknown> | null = null;
      try {
        body = raw === '' ? null : (JSON.parse(raw) as Record<string, unknown>);
      } catch {
        body = null;
      }
      const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
      requests.push({ method: req.method ?? '', path, headers: req.headers, body });
      const reply = route(req, path, body);
      if (reply === 'cut') {
        req.socket.destroy();
        return;
      }
      res.writeHead(reply.status, { 'content-type': 'application/json', ...reply.headers });
      res.end(typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body));
    });
  });
  type Reply = { readonly status: number; readonly body: unknown; readonly headers?: Record<string, string> } | 'cut';
  const error = (status: number, message: string, code?: string): Reply => ({
    status,
    body: { status, message, ...(code === undefined ? {} : { code }), serviceErrorCode: 100 },
  });
  const route = (req: http.IncomingMessage, path: string, body: Record<string, unknown> | null): Reply => {
    const authorized = req.headers['authorization'] === `Bearer ${TOKEN}`;
    const call = `${req.method ?? ''} ${path}`;
    if (call === 'GET /v2/userinfo') {
      if (!authorized) return error(401, 'Invalid access token', 'REVOKED_ACCESS_TOKEN');
      return { status: 200, body: { sub: '8675309abc', name: 'Ada Lovelace', given_name: 'Ada', family_name: 'Lovelace' } };
    }
    if (call !== 'POST /rest/posts') return error(404, 'No resource found');
    const override = postOverrides.shift();
    if (override?.kind === 'answer') return { status: override.status, body: override.body, ...(override.headers === undefined ? {} : { headers: override.headers }) };
    if (!authorized) return error(401, 'Invalid access token', 'REVOKED_ACCESS_TOKEN');
    const version = req.headers['linkedin-version'];
    if (version !== VERSION) return error(426, `Requested version ${String(version)} is not active`, 'NONEXISTENT_VERSION');
    if (req.headers['x-restli-protocol-version'] !== '2.0.0') return error(400, 'Restli protocol version required');
    if (body === null || typeof body['commentary'] !== 'string') return error(422, 'ERROR :: /commentary :: field is required but not found and has no default value');
    if (body['author'] !== MEMBER) return error(403, `Not enough permissions to access: partnerApiPostsExternal.CREATE.${VERSION}`, 'ACCESS_DENIED');
    counter += 1n;
    const urn = `urn:li:share:${counter.toString()}`;
    posts.push({ urn, commentary: body['commentary'] });
    if (override?.kind === 'cut-after-post') return 'cut';
    return { status: 201, body: '', headers: { 'x-restli-id': urn, 'x-linkedin-id': urn } };
  };
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    requests,
    posts,
    postOverrides,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
