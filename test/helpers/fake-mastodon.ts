import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { mastodonLength } from '../../src/publishers/mastodon.ts';

/** the channel's token: it must never appear in an error */
export const TOKEN = `tok${randomBytes(20).toString('hex')}`;
/** a token of scopes write:statuses and write:media only (no read:accounts, no profile) */
export const WRITE_ONLY_TOKEN = `wtok${randomBytes(20).toString('hex')}`;

export interface ApiRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Record<string, unknown> | null;
  /** the parts of a multipart/form-data body */
  readonly form: readonly FormPart[] | null;
}

export interface Status {
  readonly id: string;
  readonly url: string;
  readonly content: string;
  readonly visibility: string;
  readonly spoiler_text: string;
  readonly sensitive: boolean;
  readonly language: string | null;
  readonly media_ids: readonly string[];
  readonly in_reply_to_id: string | null;
}

/** An uploaded media attachment, as the instance keeps it. */
export interface Media {
  readonly id: string;
  readonly description: string | null;
  readonly filename: string;
  readonly contentType: string;
  readonly bytes: Buffer;
  /** polls still answered 206 before the media is processed (Infinity: never) */
  pollsLeft: number;
  /** the status it is attached to */
  statusId: string | null;
}

/** A multipart/form-data part as the fake read it. */
export interface FormPart {
  readonly name: string;
  readonly filename: string | null;
  readonly contentType: string | null;
  readonly data: Buffer;
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
  readonly media: Media[];
  /** the next media uploads (POST /api/v2/media) are handled by these, in order */
  readonly mediaOverrides: Override[];
  /**
   * how the next uploads are processed: null at once (200 with a url); a number n: 202,
   * then n polls answered 206, then 200 (Infinity: never done)
   */
  mediaProcessing: number | null;
  /** the instance's `image_size_limit` (Mastodon's default, 16 MiB) */
  imageSizeLimit: number;
  /** when each POST /api/v1/statuses arrived (epoch ms, this process's clock), in order */
  readonly arrivals: number[];
  close(): Promise<void>;
}

export const VISIBILITIES = new Set(['public', 'unlisted', 'private', 'direct']);
/** the limit this fake instance enforces (Mastodon's default) */
export const INSTANCE_MAX = 500;
/** Mastodon's MediaAttachment description limit */
export const DESCRIPTION_LIMIT = 1500;
export const IMAGE_TYPES = new Set(['image/jpeg', 'image/png', 'image/gif', 'image/webp']);

/** The parts of a multipart/form-data body (RFC 7578), as Rack reads them. */
export function parseMultipart(body: Buffer, contentType: string): FormPart[] | null {
  const boundary = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(contentType);
  const mark = boundary?.[1] ?? boundary?.[2];
  if (mark === undefined) return null;
  const delimiter = Buffer.from(`--${mark}`);
  const parts: FormPart[] = [];
  let at = body.indexOf(delimiter);
  if (at < 0) return null;
  for (;;) {
    at += delimiter.length;
    if (body.subarray(at, at + 2).toString() === '--') return parts;
    at += 2; // CRLF
    const headerEnd = body.indexOf('\r\n\r\n', at);
    const next = body.indexOf(delimiter, at);
    if (headerEnd < 0 || next < 0) return null;
    const headers = body.subarray(at, headerEnd).toString('utf8');
    const data = body.subarray(headerEnd + 4, next - 2); // the CRLF before the delimiter
    const disposition = /content-disposition:\s*form-data;([^\r\n]*)/i.exec(headers)?.[1] ?? '';
    const name = /\bname="([^"]*)"/.exec(disposition)?.[1];
    if (name === undefined) return null;
    parts.push({
      name,
      filename: /\bfilename="([^"]*)"/.exec(disposition)?.[1] ?? null,
      contentType: /content-type:\s*([^\r\n]+)/i.exec(headers)?.[1]?.trim() ?? null,
      data,
    });
    at = next;
  }
}

/**
 * A local stand-in for a Mastodon instance, answering as docs.joinmastodon.org documents
 * POST /api/v1/statuses, POST /api/v2/media, GET /api/v1/media/:id and
 * GET /api/v1/accounts/verify_credentials: Bearer tokens (with scopes: WRITE_ONLY_TOKEN
 * may not read the account), `{"error": "..."}` bodies, 401 / 404 / 422, and
 * Idempotency-Key: a repeat of a key (per account, kept an hour) gets the status the
 * first request created, whatever its body. Media: 200 when processed at once, else 202
 * and 206 polls; a status may attach only processed media of its account not attached
 * elsewhere, at most 4; `in_reply_to_id` must name an existing status.
 */
export async function startMastodon(): Promise<FakeMastodon> {
  const requests: ApiRequest[] = [];
  const statuses: Status[] = [];
  const overrides: Override[] = [];
  const media: Media[] = [];
  const mediaOverrides: Override[] = [];
  const state = { mediaProcessing: null as number | null, imageSizeLimit: 16 * 1024 * 1024 };
  let nextMediaId = 110_000_000_000_000_000n;
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
      media_ids: Array.isArray(body['media_ids']) ? body['media_ids'].map(String) : [],
      in_reply_to_id: typeof body['in_reply_to_id'] === 'string' ? body['in_reply_to_id'] : null,
    };
    for (const mediaId of status.media_ids) {
      const attached = media.find((m) => m.id === mediaId);
      if (attached !== undefined) attached.statusId = id;
    }
    statuses.push(status);
    if (key !== undefined) byKey.set(key, status);
    return status;
  };
  const server = http.createServer((req, res) => {
    if (req.method === 'POST' && req.url === '/api/v1/statuses') arrivals.push(Date.now());
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const bytes = Buffer.concat(chunks);
      const raw = bytes.toString('utf8');
      const contentType = req.headers['content-type'] ?? '';
      const form = contentType.startsWith('multipart/form-data') ? parseMultipart(bytes, contentType) : null;
      let body: Record<string, unknown> | null = null;
      if (raw !== '' && (req.headers['content-type'] ?? '').startsWith('application/json')) {
        try {
          body = JSON.parse(raw) as Record<string, unknown>;
        } catch {
          body = null;
        }
      }
      const path = req.url ?? '';
      requests.push({ method: req.method ?? '', path, headers: req.headers, body, form });
      const reply = route(req, path, body, form);
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
  const mediaJson = (m: Media) => {
    const done = m.pollsLeft <= 0;
    return {
      id: m.id,
      type: 'image',
      url: done ? `${base}/system/media_attachments/files/${m.id}/original/${m.filename}` : null,
      preview_url: `${base}/system/media_attachments/files/${m.id}/small/${m.filename}`,
      description: m.description,
      blurhash: 'UFBWY:8_0Jxv4nWBt7WB~qoz%MxuxtWBRjWB',
    };
  };
  const uploadMedia = (form: readonly FormPart[] | null): Reply => {
    const override = mediaOverrides.shift();
    if (override?.kind === 'answer') return { status: override.status, body: override.body, ...(override.headers === undefined ? {} : { headers: override.headers }) };
    if (override?.kind === 'hang') return 'hang';
    const file = form?.find((p) => p.name === 'file' && p.filename !== null);
    if (form === null || file === undefined) return error(422, "Validation failed: File can't be blank");
    const description = form.find((p) => p.name === 'description')?.data.toString('utf8') ?? null;
    const type = file.contentType ?? 'application/octet-stream';
    if (!IMAGE_TYPES.has(type)) return error(422, 'Validation failed: File content type is invalid, File is invalid');
    if (file.data.length > state.imageSizeLimit) return error(422, `Validation failed: File file size must be less than ${state.imageSizeLimit / 1024 / 1024} MB`);
    if (description !== null && Array.from(description).length > DESCRIPTION_LIMIT) {
      return error(422, `Validation failed: Description is too long (maximum is ${DESCRIPTION_LIMIT} characters)`);
    }
    nextMediaId += 1n;
    const m: Media = {
      id: String(nextMediaId),
      description,
      filename: file.filename ?? 'file',
      contentType: type,
      bytes: Buffer.from(file.data),
      pollsLeft: state.mediaProcessing === null ? 0 : state.mediaProcessing + 1,
      statusId: null,
    };
    media.push(m);
    if (override?.kind === 'cut-after-create') return 'cut';
    return { status: state.mediaProcessing === null ? 200 : 202, body: mediaJson(m) };
  };
  const route = (req: http.IncomingMessage, path: string, body: Record<string, unknown> | null, form: readonly FormPart[] | null): Reply => {
    const bearer = req.headers['authorization'];
    const authorized = bearer === `Bearer ${TOKEN}` || bearer === `Bearer ${WRITE_ONLY_TOKEN}`;
    const key = typeof req.headers['idempotency-key'] === 'string' ? req.headers['idempotency-key'] : undefined;
    if (req.method === 'GET' && path === '/api/v1/accounts/verify_credentials') {
      if (!authorized) return error(401, 'The access token is invalid');
      if (bearer !== `Bearer ${TOKEN}`) return error(403, 'This action is outside the authorized scopes');
      return { status: 200, body: { id: '1', username: 'alice', acct: 'alice', display_name: 'Alice', locked: false, bot: true } };
    }
    if (req.method === 'POST' && path === '/api/v2/media') {
      if (!authorized) return error(401, 'The access token is invalid');
      return uploadMedia(form);
    }
    const polled = /^\/api\/v1\/media\/([^/]+)$/.exec(path);
    if (req.method === 'GET' && polled !== null) {
      if (!authorized) return error(401, 'The access token is invalid');
      const m = media.find((x) => x.id === polled[1]);
      if (m === undefined) return error(404, 'Record not found');
      m.pollsLeft -= 1;
      return { status: m.pollsLeft <= 0 ? 200 : 206, body: mediaJson(m) };
    }
    if (req.method !== 'POST' || path !== '/api/v1/statuses') return error(404, 'Record not found');
    const override = overrides.shift();
    if (override?.kind === 'answer') return { status: override.status, body: override.body, ...(override.headers === undefined ? {} : { headers: override.headers }) };
    if (override?.kind === 'hang') return 'hang';
    if (!authorized) return error(401, 'The access token is invalid');
    const text = typeof body?.['status'] === 'string' ? body['status'] : '';
    const attaches = Array.isArray(body?.['media_ids']) && (body['media_ids'] as unknown[]).length > 0;
    if (body === null || (text.trim() === '' && !attaches)) return error(422, "Validation failed: Text can't be blank");
    const spoiler = typeof body['spoiler_text'] === 'string' ? body['spoiler_text'] : '';
    if (mastodonLength(text, spoiler) > INSTANCE_MAX) return error(422, `Validation failed: Text character limit of ${INSTANCE_MAX} exceeded`);
    const visibility = body['visibility'];
    if (visibility !== undefined && (typeof visibility !== 'string' || !VISIBILITIES.has(visibility))) {
      return error(422, 'Validation failed: Visibility is not included in the list');
    }
    // a repeat of a key gets the first status, whatever this request attaches
    const repeat = key === undefined ? undefined : byKey.get(key);
    if (repeat === undefined) {
      const ids = body['media_ids'] ?? [];
      if (!Array.isArray(ids) || ids.some((id) => typeof id !== 'string')) return error(422, 'Validation failed: media_ids must be an array of ids');
      if (ids.length > 4) return error(422, 'Cannot attach more than 4 files');
      for (const id of ids as string[]) {
        const m = media.find((x) => x.id === id);
        if (m === undefined || m.statusId !== null) return error(422, 'Validation failed: Media attachments are invalid');
        if (m.pollsLeft > 0) return error(422, 'Cannot attach files that have not finished processing. Try again in a moment!');
      }
      const replyTo = body['in_reply_to_id'];
      if (replyTo !== undefined && (typeof replyTo !== 'string' || !statuses.some((x) => x.id === replyTo))) return error(404, 'Record not found');
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
        in_reply_to_id: status.in_reply_to_id,
        media_attachments: status.media_ids.map((id) => {
          const m = media.find((x) => x.id === id);
          return m === undefined ? { id } : mediaJson(m);
        }),
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
    media,
    mediaOverrides,
    get mediaProcessing() {
      return state.mediaProcessing;
    },
    set mediaProcessing(value: number | null) {
      state.mediaProcessing = value;
    },
    get imageSizeLimit() {
      return state.imageSizeLimit;
    },
    set imageSizeLimit(value: number) {
      state.imageSizeLimit = value;
    },
    arrivals,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}

