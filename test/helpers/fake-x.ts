import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { readMultipart } from './multipart.ts';

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
  /** a multipart/form-data body as a standard parser (undici's) reads it */
  readonly multipart: FormData | null;
  readonly raw: string;
  /** the body's bytes */
  readonly bytes: Buffer;
}

export interface Post {
  readonly id: string;
  /** absent when the post has media only */
  readonly text: string | undefined;
  readonly mediaIds: readonly string[];
  readonly inReplyTo: string | null;
}

/** an uploaded image */
export interface Media {
  readonly id: string;
  readonly bytes: Buffer;
  readonly filename: string;
  readonly mediaCategory: string;
  readonly mediaType: string | null;
  /** set by POST /2/media/metadata */
  alt: string | null;
}

/** the image types the one-request upload takes with media_category tweet_image, by their first bytes */
const IMAGE_SIGNATURES: Record<string, (b: Buffer) => boolean> = {
  'image/jpeg': (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff,
  'image/png': (b) => b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])),
  'image/webp': (b) => b.subarray(0, 4).toString('latin1') === 'RIFF' && b.subarray(8, 12).toString('latin1') === 'WEBP',
};
/** docs.x.com: images up to 5 MB */
export const MAX_IMAGE_BYTES = 5 * 1024 * 1024;

/** what the server does with the next call of an endpoint instead of answering as X */
export type Override =
  | { readonly kind: 'answer'; readonly status: number; readonly body: string; readonly headers?: Record<string, string> }
  /** create the post, then cut the connection before answering */
  | { readonly kind: 'cut-after-post' }
  /** do what the call does (upload, describe), then cut the connection before answering */
  | { readonly kind: 'cut-after' }
  /** answer as X would (lets a later override apply to a later call) */
  | { readonly kind: 'pass' };

export interface FakeX {
  readonly url: string;
  readonly host: string;
  readonly requests: ApiRequest[];
  readonly posts: Post[];
  /** the next POST /2/tweets calls are handled by these, in order */
  readonly postOverrides: Override[];
  /** the next POST /2/oauth2/token calls are handled by these, in order */
  readonly tokenOverrides: Override[];
  /** the next POST /2/media/upload calls are handled by these, in order */
  readonly uploadOverrides: Override[];
  /** the next POST /2/media/metadata calls are handled by these, in order */
  readonly metadataOverrides: Override[];
  /** every image uploaded */
  readonly media: Media[];
  /** the scopes the access token has (media.write is needed to upload) */
  scopes: string[];
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
 * `{ data: { id, text } }`, 401 for a wrong or expired token, 403 for a duplicate, 400
 * for a media id it never issued or more than 4, 403 for a reply to a post it does not
 * have), POST /2/media/upload (multipart: `media`, `media_category=tweet_image`,
 * `media_type`; 403 without the media.write scope, 400 for an image that is not what it
 * says or over 5 MB; `{ data: { id, media_key, size, expires_after_secs } }`), POST
 * /2/media/metadata (`{ id, metadata: { alt_text: { text } } }`, at most 1000
 * characters, 400 for an unknown id), POST /2/oauth2/token with the refresh_token grant
 * (rotating the refresh token; 400 invalid_request for a dead one), GET /2/users/me.
 */
export async function startX(): Promise<FakeX> {
  const requests: ApiRequest[] = [];
  const posts: Post[] = [];
  const postOverrides: Override[] = [];
  const tokenOverrides: Override[] = [];
  const uploadOverrides: Override[] = [];
  const metadataOverrides: Override[] = [];
  const media: Media[] = [];
  let nextId = 1_860_000_000_000_000_000n;
  let nextMediaId = 1_870_000_000_000_000_000n;
  const state = {
    accessToken: opaque(),
    refreshToken: opaque(),
    clientSecret: null as string | null,
    scopes: ['tweet.read', 'tweet.write', 'users.read', 'offline.access', 'media.write'],
  };
  const issued = [state.accessToken, state.refreshToken];
  type Reply = { readonly status: number; readonly body: unknown; readonly headers?: Record<string, string> } | 'cut';

  const invalid = (message: string): Reply => ({
    status: 400,
    body: { errors: [{ message }], title: 'Invalid Request', detail: 'One or more parameters to your request was invalid.', type: 'https://api.twitter.com/2/problems/invalid-request' },
  });
  const answered = (override: Override | undefined): Reply | null =>
    override?.kind === 'answer' ? { status: override.status, body: override.body, ...(override.headers === undefined ? {} : { headers: override.headers }) } : null;

  const route = async (req: http.IncomingMessage, path: string, body: Record<string, unknown> | null, form: URLSearchParams | null, multipart: FormData | null): Promise<Reply> => {
    const authorized = req.headers['authorization'] === `Bearer ${state.accessToken}`;
    const unauthorized: Reply = { status: 401, body: problem(401, 'Unauthorized', 'Unauthorized') };
    switch (`${req.method ?? ''} ${path}`) {
      case 'POST /2/tweets': {
        const override = postOverrides.shift();
        const answer = answered(override);
        if (answer !== null) return answer;
        if (!authorized) return unauthorized;
        const text = body?.['text'];
        const mediaField = body?.['media'];
        const mediaIds = typeof mediaField === 'object' && mediaField !== null ? (mediaField as Record<string, unknown>)['media_ids'] : undefined;
        if (mediaField !== undefined && (!Array.isArray(mediaIds) || mediaIds.length === 0 || !mediaIds.every((id) => typeof id === 'string'))) return invalid('media.media_ids must be a non-empty array of strings');
        const ids = (mediaIds ?? []) as string[];
        if (ids.length > 4) return invalid('Your media IDs are invalid.');
        for (const id of ids) if (!media.some((m) => m.id === id)) return invalid(`Your media IDs are invalid: ${id}`);
        if (text !== undefined && typeof text !== 'string') return invalid('text must be a string');
        if ((text === undefined || text === '') && ids.length === 0) return invalid('text is required');
        if (text !== undefined && text !== '' && posts.some((p) => p.text === text)) return { status: 403, body: problem(403, 'Forbidden', 'You are not allowed to create a Tweet with duplicate content.') };
        const replyField = body?.['reply'];
        let inReplyTo: string | null = null;
        if (replyField !== undefined) {
          const parent = typeof replyField === 'object' && replyField !== null ? (replyField as Record<string, unknown>)['in_reply_to_tweet_id'] : undefined;
          if (typeof parent !== 'string') return invalid('reply.in_reply_to_tweet_id must be a string');
          if (!posts.some((p) => p.id === parent)) return { status: 403, body: problem(403, 'Forbidden', 'You attempted to reply to a Tweet that is deleted or not visible to you.') };
          inReplyTo = parent;
        }
        nextId += 1n;
        const post: Post = { id: String(nextId), text: typeof text === 'string' ? text : undefined, mediaIds: ids, inReplyTo };
        posts.push(post);
        if (override?.kind === 'cut-after-post' || override?.kind === 'cut-after') return 'cut';
        return { status: 201, body: { data: { id: post.id, text: text ?? '', edit_history_tweet_ids: [post.id] } } };
      }
      case 'POST /2/media/upload': {
        const override = uploadOverrides.shift();
        const answer = answered(override);
        if (answer !== null) return answer;
        if (!authorized) return unauthorized;
        if (!state.scopes.includes('media.write')) return { status: 403, body: problem(403, 'Forbidden', 'You are not permitted to perform this action. Missing scope: media.write') };
        if (multipart === null) return invalid('the request must be multipart/form-data or JSON');
        const file = multipart.get('media');
        const category = multipart.get('media_category');
        const type = multipart.get('media_type');
        if (!(file instanceof Blob)) return invalid('media is required');
        if (category !== 'tweet_image') return invalid('media_category must be tweet_image for a one-request upload');
        if (type !== null && (typeof type !== 'string' || IMAGE_SIGNATURES[type] === undefined)) return invalid(`media_type ${typeof type === 'string' ? type : '(a file)'} is not supported`);
        const bytes = Buffer.from(await file.arrayBuffer());
        if (bytes.length > MAX_IMAGE_BYTES) return invalid(`File size exceeds ${MAX_IMAGE_BYTES} bytes.`);
        const detected = Object.keys(IMAGE_SIGNATURES).find((t) => IMAGE_SIGNATURES[t]?.(bytes) === true);
        if (detected === undefined || (type !== null && type !== detected)) return invalid('media type unrecognized.');
        nextMediaId += 1n;
        const id = String(nextMediaId);
        media.push({ id, bytes, filename: file instanceof File ? file.name : '', mediaCategory: category, mediaType: typeof type === 'string' ? type : null, alt: null });
        if (override?.kind === 'cut-after') return 'cut';
        return { status: 200, body: { data: { id, media_key: `3_${id}`, size: bytes.length, expires_after_secs: 86400 } } };
      }
      case 'POST /2/media/metadata': {
        const override = metadataOverrides.shift();
        const answer = answered(override);
        if (answer !== null) return answer;
        if (!authorized) return unauthorized;
        const id = body?.['id'];
        const metadata = body?.['metadata'];
        const altText = typeof metadata === 'object' && metadata !== null ? (metadata as Record<string, unknown>)['alt_text'] : undefined;
        const alt = typeof altText === 'object' && altText !== null ? (altText as Record<string, unknown>)['text'] : undefined;
        const target = media.find((m) => m.id === id);
        if (target === undefined) return invalid(`media id ${String(id)} not found`);
        if (typeof alt !== 'string' || Array.from(alt).length > 1000) return invalid('metadata.alt_text.text must be a string of at most 1000 characters');
        target.alt = alt;
        if (override?.kind === 'cut-after') return 'cut';
        return { status: 200, body: { data: { id: target.id, associated_metadata: { alt_text: { text: alt } } } } };
      }
      case 'POST /2/oauth2/token': {
        const answer = answered(tokenOverrides.shift());
        if (answer !== null) return answer;
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
          body: { token_type: 'bearer', expires_in: 7200, access_token: state.accessToken, scope: state.scopes.join(' '), refresh_token: state.refreshToken },
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
    const form = type.startsWith('application/x-www-form-urlencoded') ? new URLSearchParams(raw) : null;
    const multipart = type.startsWith('multipart/form-data') ? await readMultipart(bytes, type) : null;
    const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    requests.push({ method: req.method ?? '', path, headers: req.headers, body, form, multipart, raw, bytes });
    const reply = await route(req, path, body, form, multipart);
    if (reply === 'cut') {
      req.socket.destroy();
      return;
    }
    res.writeHead(reply.status, { 'content-type': 'application/json; charset=utf-8', ...reply.headers });
    res.end(typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body));
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
    tokenOverrides,
    uploadOverrides,
    metadataOverrides,
    media,
    issued,
    get scopes() {
      return state.scopes;
    },
    set scopes(value: string[]) {
      state.scopes = value;
    },
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
