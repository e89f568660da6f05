import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { mastodonLength } from '../../src/publishers/mastodon.ts';

/** the channel's token: it must never appear in an error */
export const TOKEN = `tok${randomBytes(20).toString('hex')}`;

export interface ApiRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Record<string, unknown> | null;
}

export interface Status {
  readonly id: string;
  readonly url: string;
  readonly content: string;
  readonly visibility: string;
  readonly spoiler_text: string;
  readonly sensitive: boolean;
  readonly language: string | null;
}

/** what the server does with the next POST /api/v1/statuses instead of answering as Mastodon */
export type Override =
  | { readonly kind: 'answer'; readonly status: number; readonly body: string; readonly headers?: Record<string, string> }
  /** create the status, then cut the connection before answering */
  | { readonly kind: 'cut-after-create' }
  /** read the request and never answer */
  | { readonly kind: 'hang' };

export interface FakeMastodon {
  readonly url: string;
  readonly host: string;
  readonly requests: ApiRequest[];
  readonly statuses: Status[];
  /** the next status POSTs are handled by these, in order */
  readonly overrides: Override[];
  /** when each POST /api/v1/statuses arrived (epoch ms, this process's clock), in order */
  readonly arrivals: number[];
  close(): Promise<void>;
}

export const VISIBILITIES = new Set(['public', 'unlisted', 'private', 'direct']);
/** the limit this fake instance enforces (Mastodon's default) */
export const INSTANCE_MAX = 500;

/**
 * A local stand-in for a Mastodon instance, answering as docs.joinmastodon.org documents
 * POST /api/v1/statuses and GET /api/v1/accounts/verify_credentials: Bearer tokens,
 * `{"error": "..."}` bodies, 401 / 422, and Idempotency-Key: a repeat of a key (per
 * account, kept an hour) gets the status the first request created.
 */
export async function startMastodon(): Promise<FakeMastodon> {
  const requests: ApiRequest[] = [];
  const statuses: Status[] = [];
  const overrides: Override[] = [];
  const arrivals: number[] = [];
  const byKey = new Map<string, Status>();
  let nextId = 109_000_000_000_000_000n;
  let base = '';
  const create = (body: Record<string, unknown>, key: string | undefined): Status => {
    const existing = key === undefined ? undefined : byKey.get(key);
    if (existing !== undefined) return existing;
    nextId += 1n;
    const id = String(nextId);
    const status: Status = {
      id,
      url: `${base}/@alice/${id}`,
      content: `<p>${String(body['status'])}</p>`,
      visibility: typeof body['visibility'] === 'string' ? body['visibility'] : 'public',
      spoiler_text: typeof body['spoiler_text'] === 'string' ? body['spoiler_text'] : '',
      sensitive: body['sensitive'] === true,
      language: typeof body['language'] === 'string' ? body['language'] : null,
    };
    statuses.push(status);
    if (key !== undefined) byKey.set(key, status);
    return status;
  };
  const server = http.createServer((req, res) => {
    if (req.method === 'POST' && req.url === '/api/v1/statuses') arrivals.push(Date.now());
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
      res.writeHead(reply.status, { 'content-type': 'application/json; charset=utf-8', ...reply.headers });
      res.end(typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body));
    });
  });
  type Reply = { readonly status: number; readonly body: unknown; readonly headers?: Record<string, string> } | 'hang' | 'cut';
  const error = (status: number, message: string): Reply => ({ status, body: { error: message } });
  const route = (req: http.IncomingMessage, path: string, body: Record<string, unknown> | null): Reply => {
    const authorized = req.headers['authorization'] === `Bearer ${TOKEN}`;
    const key = typeof req.headers['idempotency-key'] === 'string' ? req.headers['idempotency-key'] : undefined;
    if (req.method === 'GET' && path === '/api/v1/accounts/verify_credentials') {
      if (!authorized) return error(401, 'The access token is invalid');
      return { status: 200, body: { id: '1', username: 'alice', acct: 'alice', display_name: 'Alice', locked: false, bot: true } };
    }
    if (req.method !== 'POST' || path !== '/api/v1/statuses') return error(404, 'Record not found');
    const override = overrides.shift();
    if (override?.kind === 'answer') return { status: override.status, body: override.body, ...(override.headers === undefined ? {} : { headers: override.headers }) };
    if (override?.kind === 'hang') return 'hang';
    if (!authorized) return error(401, 'The access token is invalid');
    const text = typeof body?.['status'] === 'string' ? body['status'] : '';
    if (body === null || text.trim() === '') return error(422, "Validation failed: Text can't be blank");
    const spoiler = typeof body['spoiler_text'] === 'string' ? body['spoiler_text'] : '';
    if (mastodonLength(text, spoiler) > INSTANCE_MAX) return error(422, `Validation failed: Text character limit of ${INSTANCE_MAX} exceeded`);
    const visibility = body['visibility'];
    if (visibility !== undefined && (typeof visibility !== 'string' || !VISIBILITIES.has(visibility))) {
      return error(422, 'Validation failed: Visibility is not included in the list');
    }
    const status = create(body, key);
    if (override?.kind === 'cut-after-create') return 'cut';
    return {
      status: 200,
      body: {
        id: status.id,
        created_at: new Date().toISOString(),
        sensitive: status.sensitive,
        spoiler_text: status.spoiler_text,
        visibility: status.visibility,
        language: status.language,
        uri: `${base}/users/alice/statuses/${status.id}`,
        url: status.url,
        content: status.content,
        account: { id: '1', username: 'alice', acct: 'alice' },
        media_attachments: [],
      },
    };
  };
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  base = `http://127.0.0.1:${port}`;
  return {
    url: base,
    host: `127.0.0.1:${port}`,
    requests,
    statuses,
    overrides,
    arrivals,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

