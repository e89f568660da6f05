import { createHash } from 'node:crypto';
import * as v from 'valibot';
import { createHttpClient, HttpSendFailure, type HttpClient, type HttpResponse } from './http-client.ts';
import {
  CredentialsRejectedError,
  PermanentPublishError,
  RetryablePublishError,
  SettingsError,
  type Publisher,
  type LoadedImage,
  type MediaLimits,
  type PublisherModule,
  type PublisherOptions,
  type PublishRequest,
  type PublishResult,
  parseWith,
} from './publisher.ts';
import { answerExcerpt } from './redact.ts';
import { buildFacets, checkPostText, recordKeyFor } from './bluesky-text.ts';
import { parseRetryAfter } from './webhook.ts';
import { addressRefused } from './network.ts';
import { imageSize } from './image-size.ts';
import { MINUTE, HOUR } from '../ratelimits/units.ts';

/**
 * `bluesky`: publishes `app.bsky.feed.post` records on an AT Protocol PDS (any: the
 * channel's `service`, https://bsky.social or a self-hosted one), through its XRPC API.
 *
 * - Session: com.atproto.server.createSession with the account's identifier (handle or
 *   DID) and an app password; the tokens it returns (access_jwt, refresh_jwt) and the
 *   account's DID are stored back with the channel's credentials (sealed) and used by
 *   later posts and other workers. An access token the PDS calls expired or invalid
 *   (ExpiredToken / InvalidToken) is renewed once with refreshSession (Bearer
 *   refresh token); when that one is refused too, a new session is created from the
 *   app password. createSession refused (401 AuthenticationRequired, AccountTakedown,
 *   ...) is CredentialsRejectedError: the post waits for an operator.
 * - The post: com.atproto.repo.createRecord into the session's repo with a record key
 *   chosen before sending, derived from the post's idempotency key (a TID: see
 *   recordKeyFor). A repeat of the same post cannot create a second record: the PDS
 *   refuses a create at a key that exists (the reference PDS answers 500, its MST
 *   refusing the duplicate key). So after a 5xx (or an answer saying the record exists)
 *   the key is looked up at once: a record there means the post is out.
 * - Lookup (the `check` policy): com.atproto.repo.getRecord at that key: the record, or
 *   RecordNotFound. So a new bluesky channel defaults to `check`.
 * - What a part returns: the record's `at://` uri (external id), its bsky.app URL, and
 *   `replyRef` {uri, cid} (the strong ref a reply needs) from createRecord's answer, or
 *   from getRecord's when the record was found at its key (a repeat, a lookup).
 * - Images (BLUESKY_MEDIA: up to 4, each at most 1,000,000 bytes): each is uploaded with
 *   com.atproto.repo.uploadBlob (the raw bytes, `Content-Type` the image's type) and the
 *   blob ref it answers goes into the record's `embed`
 *   ({$type: app.bsky.embed.images, images: [{image, alt, aspectRatio}]}, alt always
 *   present, empty when there is none; aspectRatio the width and height read from the
 *   image's header, see image-size.ts, left out when it cannot be read). Blobs are
 *   addressed by their content, so an attempt that uploads them again gets the same
 *   refs, and an uploaded blob no record uses is removed by the PDS. An upload failure is never "maybe delivered" (no record was written);
 *   413 (over the PDS's upload limit) and other 4xx fail the post naming the image, as
 *   does BlobTooLarge from createRecord (over the lexicon's 1,000,000 bytes). A token
 *   refused at an upload is renewed as for the record.
 * - Threads: a later part's record carries `reply: {root, parent}`, the strong refs of
 *   the thread's first part and of the part before (replyTo.root / replyTo.parent
 *   `replyRef`); its record key derives from the part's own idempotency key
 *   (`<post key>.<index>`), so a repeat of one part cannot double it and the lookup of a
 *   part finds it.
 * - verify creates a session to prove the app password and discards it (the channel's
 *   first post creates its own): one extra session per `channels add`, harmless.
 * - createdAt is when the record is written (now), as the lexicon defines it; the
 *   scheduled time is not claimed as the creation time.
 * - Facets (links, @mentions resolved to DIDs with com.atproto.identity.resolveHandle,
 *   #hashtags) on UTF-8 byte offsets; a handle that does not resolve gets none.
 * - Limits: 300 graphemes and 3000 UTF-8 bytes (the lexicon's), refused when scheduled.
 * - Errors: 429 is retried after `ratelimit-reset` (epoch seconds) or Retry-After, not
 *   delivered; a 5xx of createRecord, or a connection cut or timed out after it was
 *   sent, may have been delivered (the `check` policy then looks it up); other 4xx are
 *   permanent, with a short redacted excerpt of the PDS's answer.
 * - Secrets: errors name the channel and the PDS host, never a token or the password.
 */

const POST_COLLECTION = 'app.bsky.feed.post';

/**
 * The images of one post: app.bsky.embed.images takes 4, each blob at most 1,000,000
 * bytes (the lexicon's `maxSize`; a PDS refuses a larger one with BlobTooLarge when the
 * record is written). The lexicon sets no limit on `alt` (required, may be empty); 2000
 * characters is the Bluesky app's own limit. Types: the still images the app shows.
 */
export const BLUESKY_MEDIA: MediaLimits = {
  maxImages: 4,
  maxBytes: 1_000_000,
  maxAltLength: 2000,
  types: ['image/jpeg', 'image/png', 'image/gif', 'image/webp'],
};

/** A com.atproto.repo.strongRef: a record's `uri` and the `cid` of the version meant. */
interface StrongRef {
  readonly uri: string;
  readonly cid: string;
}

/** The strong ref a published part's replyRef holds, or null. */
function strongRef(part: { readonly replyRef?: Readonly<Record<string, string>> }): StrongRef | null {
  const uri = part.replyRef?.['uri'];
  const cid = part.replyRef?.['cid'];
  return typeof uri === 'string' && uri.startsWith('at://') && typeof cid === 'string' && cid !== '' ? { uri, cid } : null;
}

/** `image 2 of 3 (photo.png)` */
function describeImage(image: LoadedImage, index: number, count: number): string {
  return `image ${index + 1} of ${count} (${image.filename})`;
}

/** One app.bsky.embed.images#image: the blob, its alt text, and its aspect ratio when its header tells it. */
function embedded(blob: unknown, image: LoadedImage | undefined): Record<string, unknown> {
  const size = image === undefined ? null : imageSize(image.bytes);
  return { image: blob, alt: image?.alt ?? '', ...(size === null ? {} : { aspectRatio: { width: size.width, height: size.height } }) };
}

/** What a post's `uri` and `cid` answer (createRecord, getRecord) says, with the uri asked for as the fallback. */
function published(res: HttpResponse, did: string, rkey: string): PublishResult {
  let uri = `at://${did}/${POST_COLLECTION}/${rkey}`;
  let cid: string | null = null;
  const body = res.json();
  if (typeof body === 'object' && body !== null) {
    const o = body as Record<string, unknown>;
    if (typeof o['uri'] === 'string' && o['uri'].startsWith('at://')) uri = o['uri'];
    if (typeof o['cid'] === 'string' && o['cid'] !== '') cid = o['cid'];
  }
  return { externalId: uri, externalUrl: postUrl(did, rkey), ...(cid === null ? {} : { replyRef: { uri, cid } }) };
}

const settingsSchema = v.object(
  {
    service: v.pipe(
      v.string('bluesky channel needs a service (its PDS URL, e.g. https://bsky.social)'),
      v.check((u) => URL.canParse(u) && /^https?:$/.test(new URL(u).protocol), 'bluesky service must be an https:// URL'),
      v.check((u) => !URL.canParse(u) || (new URL(u).username === '' && new URL(u).password === ''), 'bluesky service must not carry a user or password'),
      v.check((u) => !URL.canParse(u) || (new URL(u).search === '' && new URL(u).hash === ''), 'bluesky service must have no query or fragment'),
    ),
    /** the posts' languages (BCP-47), at most 3 as the lexicon allows */
    langs: v.optional(
      v.pipe(
        v.array(
          v.pipe(
            v.string('bluesky langs must be language tags'),
            v.check(isLanguageTag, 'bluesky langs must be BCP-47 language tags (e.g. en, pt-BR)'),
          ),
          'bluesky langs must be an array of language tags',
        ),
        v.maxLength(3, 'bluesky langs takes at most 3 languages'),
      ),
    ),
    /** may connect to loopback, private and link-local addresses (a PDS on the same network) */
    allow_private_network: v.optional(v.boolean('bluesky allow_private_network must be true or false')),
  },
  'bluesky channel needs a service (its PDS URL)',
);

type BlueskySettings = v.InferOutput<typeof settingsSchema>;

function isLanguageTag(tag: string): boolean {
  if (!/^[a-zA-Z]{2,8}(?:-[a-zA-Z0-9]{1,8})*$/.test(tag)) return false;
  try {
    return Intl.getCanonicalLocales(tag).length === 1;
  } catch {
    return false;
  }
}

function parseSettings(settings: Record<string, unknown>): BlueskySettings {
  const s = parseWith(settingsSchema, settings);
  if (new URL(s.service).protocol === 'http:' && s.allow_private_network !== true) {
    throw new SettingsError('bluesky service must be an https:// URL (http:// only for a PDS on a private network, with allow_private_network)');
  }
  return s;
}

const credentialsSchema = v.object(
  {
    identifier: v.pipe(v.string('bluesky credentials need an identifier (handle or DID)'), v.minLength(1, 'bluesky credentials need an identifier (handle or DID)')),
    app_password: v.pipe(v.string('bluesky credentials need an app_password'), v.minLength(1, 'bluesky credentials need an app_password')),
    access_jwt: v.optional(v.string('bluesky credentials: access_jwt must be a string')),
    refresh_jwt: v.optional(v.string('bluesky credentials: refresh_jwt must be a string')),
    did: v.optional(v.pipe(v.string('bluesky credentials: did must be a string'), v.startsWith('did:', 'bluesky credentials: did must be a DID'))),
    handle: v.optional(v.string('bluesky credentials: handle must be a string')),
  },
  'bluesky credentials need an identifier and an app_password',
);

type BlueskyCredentials = v.InferOutput<typeof credentialsSchema>;

function parseCredentials(credentials: Record<string, unknown>): BlueskyCredentials {
  return parseWith(credentialsSchema, credentials);
}

interface Session {
  readonly accessJwt: string;
  readonly refreshJwt: string;
  readonly did: string;
  readonly handle: string | null;
}

/** What a PDS says in an XRPC error body: {"error": "Name", "message": "..."} */
interface XrpcError {
  readonly error: string | null;
  readonly message: string | null;
}

function xrpcError(res: HttpResponse): XrpcError {
  try {
    const body = res.json();
    if (typeof body === 'object' && body !== null) {
      const o = body as Record<string, unknown>;
      return { error: typeof o['error'] === 'string' ? o['error'] : null, message: typeof o['message'] === 'string' ? o['message'] : null };
    }
  } catch {
    // not JSON: no XRPC error name
  }
  return { error: null, message: null };
}

/** The errors that say the token the request carried is no good (expired, revoked, malformed). */
const TOKEN_ERRORS = new Set(['ExpiredToken', 'InvalidToken']);

function isTokenRefusal(res: HttpResponse): boolean {
  if (res.status !== 400 && res.status !== 401) return false;
  const { error } = xrpcError(res);
  // a 401 AuthenticationRequired on a call made with a token: the token was not accepted
  return (error !== null && TOKEN_ERRORS.has(error)) || (res.status === 401 && (error === null || error === 'AuthenticationRequired'));
}

/** The delay a 429 asks for: `ratelimit-reset` (epoch seconds) or Retry-After; null when neither says. */
export function rateLimitDelay(res: HttpResponse, now = Date.now()): number | null {
  const reset = res.headers['ratelimit-reset'];
  const resetValue = typeof reset === 'string' ? reset : undefined;
  if (resetValue !== undefined && /^\d+$/.test(resetValue.trim())) return Math.max(0, Number(resetValue.trim()) * 1000 - now);
  const retryAfter = res.headers['retry-after'];
  return parseRetryAfter(typeof retryAfter === 'string' ? retryAfter : undefined, now);
}

/** Text from a PDS as it may be shown: the known secrets replaced, then a short redacted excerpt. */
function shown(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) if (secret.length >= 4) out = out.split(secret).join('***');
  return answerExcerpt(out);
}

/** `HTTP 400 InvalidRequest: message` (redacted) */
function describe(res: HttpResponse, secrets: readonly string[]): string {
  const { error, message } = xrpcError(res);
  // the error name is an identifier (shown when it looks like one); the message is the
  // PDS's free text, excerpted apart so that the name is not taken for a key of a secret
  const name = error !== null && /^[A-Za-z][A-Za-z0-9]{0,63}$/.test(error) ? error : null;
  const excerpt = shown(name === null && message === null ? res.text() : (message ?? ''), secrets);
  const parts = [name, excerpt].filter((p) => p !== null && p !== '');
  return `HTTP ${res.status}${parts.length === 0 ? '' : ` ${parts.join(': ')}`}`;
}

function postUrl(did: string, rkey: string): string {
  return `https://bsky.app/profile/${did}/post/${rkey}`;
}

function sessionFrom(res: HttpResponse): Session | null {
  try {
    const body = res.json();
    if (typeof body !== 'object' || body === null) return null;
    const o = body as Record<string, unknown>;
    const { accessJwt, refreshJwt, did, handle } = o;
    if (typeof accessJwt !== 'string' || typeof refreshJwt !== 'string' || typeof did !== 'string' || !did.startsWith('did:')) return null;
    return { accessJwt, refreshJwt, did, handle: typeof handle === 'string' ? handle : null };
  } catch {
    return null;
  }
}

/** One channel's PDS, as one request of one post sees it. */
interface Target {
  readonly client: HttpClient;
  readonly service: URL;
  /** how errors name it: `channel NAME (host)` */
  readonly where: string;
  readonly allowPrivate: boolean;
  readonly signal: AbortSignal;
  /** values never shown: the app password and every token met (grows as tokens are renewed) */
  readonly secrets: string[];
}

/** A request that never got an answer; `sent`: it may have reached the PDS. */
class NoAnswer extends Error {
  override name = 'NoAnswer';
  constructor(
    message: string,
    readonly sent: boolean,
  ) {
    super(message);
  }
}

function endpoint(service: URL, nsid: string, params?: Record<string, string>): URL {
  const base = service.href.endsWith('/') ? service.href : `${service.href}/`;
  const url = new URL(`xrpc/${nsid}`, base);
  for (const [k, value] of Object.entries(params ?? {})) url.searchParams.set(k, value);
  return url;
}

async function xrpc(
  t: Target,
  method: 'GET' | 'POST',
  nsid: string,
  options: { params?: Record<string, string>; body?: unknown; raw?: { readonly bytes: Buffer; readonly contentType: string }; token?: string } = {},
): Promise<HttpResponse> {
  const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'post-scheduler' };
  if (options.token !== undefined) headers['authorization'] = `Bearer ${options.token}`;
  let body: string | Buffer | undefined;
  if (options.raw !== undefined) {
    body = options.raw.bytes;
    headers['content-type'] = options.raw.contentType;
  } else if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers['content-type'] = 'application/json';
  }
  try {
    return await t.client.request({
      method,
      url: endpoint(t.service, nsid, options.params),
      headers,
      ...(body === undefined ? {} : { body }),
      signal: t.signal,
      allowPrivateNetwork: t.allowPrivate,
    });
  } catch (e) {
    if (e instanceof HttpSendFailure) {
      if (e.addressRefused) throw addressRefused('bluesky', t.where);
      const after = e.sent ? ' after the request was sent' : '';
      const why = shown(e.message, t.secrets);
      throw new NoAnswer(`bluesky ${t.where}: ${nsid}: ${why}${after}`, e.sent);
    }
    if (t.signal.aborted) throw new NoAnswer(`bluesky ${t.where}: ${nsid}: interrupted (${String(t.signal.reason)})`, true);
    throw e;
  }
}

/** A failed answer to a call that writes nothing (sessions, lookups, handles) as the error a worker understands. */
function readError(t: Target, nsid: string, res: HttpResponse): Error {
  const what = `bluesky ${t.where}: ${nsid}: ${describe(res, t.secrets)}`;
  if (res.status === 429) return new RetryablePublishError(what, rateLimitDelay(res), false, true);
  if (res.status >= 500 || res.status === 408) return new RetryablePublishError(what, null, false);
  return new PermanentPublishError(what);
}

/** A NoAnswer of a call that writes nothing: retryable, nothing was published. */
function notDelivered(e: unknown): unknown {
  return e instanceof NoAnswer ? new RetryablePublishError(e.message, null, false) : e;
}

export const blueskyPublisher: PublisherModule = {
  platform: 'bluesky',
  parseSettings,
  parseCredentials,
  checkText: (text) => checkPostText(text),
  // nothing in the settings is a secret (the credentials live apart, sealed)
  redactSettings: (settings) => ({ ...settings }),
  media: BLUESKY_MEDIA,
  threads: true,
  canLookUp: true,
  defaultOnUnknown: 'check',
  /** Bluesky's documented limits: createRecord costs 3 of 5,000 points an hour per account (1,666 posts), and 3,000 API calls per 5 minutes */
  rateLimits: () => ({ posts: { limit: 1666, windowMs: HOUR }, requests: { limit: 3000, windowMs: 5 * MINUTE } }),

  async verify(settings, credentials, options) {
    const s = parseSettings(settings);
    if (credentials === null) throw new CredentialsRejectedError('bluesky needs credentials: identifier and app_password');
    const creds = parseCredentials(credentials);
    const client = createHttpClient({ timeoutMs: options.timeoutMs, concurrency: 1, ...(options.allowPrivateNetwork === undefined ? {} : { allowPrivateNetwork: options.allowPrivateNetwork }) });
    const service = new URL(s.service);
    const t: Target = {
      client,
      service,
      where: `(${service.host})`,
      allowPrivate: options.allowPrivateNetwork === true || s.allow_private_network === true,
      signal: AbortSignal.timeout(options.timeoutMs * 2),
      secrets: [creds.app_password],
    };
    try {
      const session = await createSession(t, creds);
      return { account: session.handle === null ? session.did : `@${session.handle}` };
    } catch (e) {
      throw notDelivered(e);
    } finally {
      await client.close();
    }
  },

  createPublisher(options: PublisherOptions): Publisher {
    const client = createHttpClient({
      timeoutMs: options.timeoutMs,
      concurrency: options.concurrency,
      ...(options.allowPrivateNetwork === undefined ? {} : { allowPrivateNetwork: options.allowPrivateNetwork }),
    });
    /**
     * The newest session of each channel in this process: the credentials a post was
     * claimed with may be older than a refresh another post of this worker just made
     * (a PDS rotates the refresh token on every refresh).
     */
    const sessions = new Map<number, { identity: string; session: Session }>();
    /** one renewal per channel at a time, joined by every post that needs it */
    const renewals = new Map<number, Promise<Session>>();

    interface Context {
      readonly t: Target;
      readonly settings: BlueskySettings;
      readonly creds: BlueskyCredentials;
      readonly request: PublishRequest;
      /** a hash of service, identifier and app password: a cached session belongs to the same account */
      readonly identity: string;
    }

    const open = (request: PublishRequest): Context => {
      const name = request.channel.name;
      let settings: BlueskySettings;
      try {
        settings = parseSettings(request.channel.settings);
      } catch (e) {
        throw new PermanentPublishError(`channel ${name}: ${(e as Error).message}`);
      }
      const service = new URL(settings.service);
      const where = `channel ${name} (${service.host})`;
      if (request.credentials === null) throw new CredentialsRejectedError(`bluesky ${where}: the channel has no credentials (identifier and app_password)`);
      let creds: BlueskyCredentials;
      try {
        creds = parseCredentials({ ...request.credentials });
      } catch (e) {
        throw new CredentialsRejectedError(`bluesky ${where}: ${(e as Error).message}`);
      }
      const secrets = [creds.app_password, creds.access_jwt, creds.refresh_jwt].filter((s): s is string => s !== undefined);
      const t: Target = {
        client,
        service,
        where,
        allowPrivate: options.allowPrivateNetwork === true || settings.allow_private_network === true,
        signal: request.signal,
        secrets,
      };
      // a new app password is a new identity: the sessions of the old one are not reused
      const identity = createHash('sha256').update(`${service.href}\n${creds.identifier}\n${creds.app_password}`).digest('hex');
      return { t, settings, creds, request, identity };
    };

    /** this post's errors never show the session's tokens, even when a PDS echoes them */
    const hide = (ctx: Context, session: Session): Session => {
      for (const token of [session.accessJwt, session.refreshJwt]) if (!ctx.t.secrets.includes(token)) ctx.t.secrets.push(token);
      return session;
    };

    const remember = async (ctx: Context, session: Session): Promise<void> => {
      sessions.set(ctx.request.channel.id, { identity: ctx.identity, session });
      hide(ctx, session);
      try {
        await ctx.request.saveCredentials({
          ...ctx.request.credentials,
          identifier: ctx.creds.identifier,
          app_password: ctx.creds.app_password,
          access_jwt: session.accessJwt,
          refresh_jwt: session.refreshJwt,
          did: session.did,
          ...(session.handle === null ? {} : { handle: session.handle }),
        });
      } catch (e) {
        // nothing was sent yet: the post is tried again, and the next attempt renews again
        throw new RetryablePublishError(`bluesky ${ctx.t.where}: could not store the renewed session: ${(e as Error).message}`);
      }
    };

    /** The session to use: this process's newest, else the stored tokens, else a new one. */
    const currentSession = async (ctx: Context): Promise<Session> => {
      const cached = sessions.get(ctx.request.channel.id);
      if (cached?.identity === ctx.identity) return hide(ctx, cached.session);
      const { access_jwt, refresh_jwt, did } = ctx.creds;
      if (access_jwt !== undefined && refresh_jwt !== undefined && did !== undefined) {
        return { accessJwt: access_jwt, refreshJwt: refresh_jwt, did, handle: ctx.creds.handle ?? null };
      }
      return renew(ctx, null);
    };

    /**
     * A fresh session after `stale` was refused (null: there was none): refreshed with
     * its refresh token, or created from the app password when that is refused too. A
     * renewal another post already made since is used as it is.
     */
    const renew = async (ctx: Context, stale: Session | null): Promise<Session> => {
      const id = ctx.request.channel.id;
      const cached = sessions.get(id);
      if (stale !== null && cached?.identity === ctx.identity && cached.session.accessJwt !== stale.accessJwt) return hide(ctx, cached.session);
      let running = renewals.get(id);
      if (running === undefined) {
        running = (async () => {
          let session: Session | null = null;
          if (stale !== null) session = await refreshSession(ctx.t, stale);
          session ??= await createSession(ctx.t, ctx.creds);
          await remember(ctx, session);
          return session;
        })();
        renewals.set(id, running);
        const clear = () => {
          if (renewals.get(id) === running) renewals.delete(id);
        };
        running.then(clear, clear);
      }
      return hide(ctx, await running);
    };

    /** Runs `call` with the session's access token; renews once when the PDS refuses the token. */
    const authorized = async (ctx: Context, call: (session: Session) => Promise<HttpResponse>): Promise<{ res: HttpResponse; session: Session }> => {
      let session = await currentSession(ctx);
      let res = await call(session);
      if (isTokenRefusal(res)) {
        session = await renew(ctx, session);
        res = await call(session);
      }
      return { res, session };
    };

    /** The DID of the channel's account without a session when it is known. */
    const repoDid = async (ctx: Context): Promise<string> => {
      const cached = sessions.get(ctx.request.channel.id);
      if (cached?.identity === ctx.identity) return cached.session.did;
      if (ctx.creds.did !== undefined) return ctx.creds.did;
      if (ctx.creds.identifier.startsWith('did:')) return ctx.creds.identifier;
      return (await currentSession(ctx)).did;
    };

    /** The record at the post's key, or null (RecordNotFound). */
    const getRecord = async (ctx: Context, did: string, rkey: string): Promise<PublishResult | null> => {
      const nsid = 'com.atproto.repo.getRecord';
      const res = await xrpc(ctx.t, 'GET', nsid, { params: { repo: did, collection: POST_COLLECTION, rkey } });
      // the record is there; its uri is known anyway, its cid (for replies) from the answer
      if (res.status === 200) return published(res, did, rkey);
      if (res.status === 400 || res.status === 404) {
        const { error } = xrpcError(res);
        if (error === 'RecordNotFound' || (res.status === 404 && error === null)) return null;
      }
      throw readError(ctx.t, nsid, res);
    };

    const resolveHandle = async (ctx: Context, handle: string): Promise<string | null> => {
      try {
        const res = await xrpc(ctx.t, 'GET', 'com.atproto.identity.resolveHandle', { params: { handle } });
        if (res.status !== 200) return null;
        const body = res.json() as { did?: unknown };
        return typeof body.did === 'string' && body.did.startsWith('did:') ? body.did : null;
      } catch (e) {
        if (e instanceof PermanentPublishError) throw e;
        // a mention that cannot be resolved now stays plain text; the post still goes out
        return null;
      }
    };

    /**
     * One image as a blob (com.atproto.repo.uploadBlob: the raw bytes with their type):
     * the blob ref the record embeds. Nothing is published yet, so no failure here is
     * "maybe delivered"; a refused size or type fails the post, naming the image.
     */
    const uploadBlob = async (ctx: Context, image: LoadedImage, index: number, count: number): Promise<unknown> => {
      const nsid = 'com.atproto.repo.uploadBlob';
      const what = `${describeImage(image, index, count)}: ${nsid}`;
      const { res } = await authorized(ctx, (session) => xrpc(ctx.t, 'POST', nsid, { token: session.accessJwt, raw: { bytes: image.bytes, contentType: image.mimeType } }));
      const { t } = ctx;
      if (res.status === 200) {
        const body = res.json();
        const blob = typeof body === 'object' && body !== null ? (body as Record<string, unknown>)['blob'] : undefined;
        if (typeof blob !== 'object' || blob === null || (blob as Record<string, unknown>)['ref'] === undefined) {
          throw new RetryablePublishError(`bluesky ${t.where}: ${what}: an answer without a blob ref`);
        }
        return blob;
      }
      if (isTokenRefusal(res)) throw new CredentialsRejectedError(`bluesky ${t.where}: the PDS refused a fresh session: ${describe(res, t.secrets)}`);
      if (res.status === 401) throw new CredentialsRejectedError(`bluesky ${t.where}: ${what}: ${describe(res, t.secrets)}`);
      if (res.status === 429) throw new RetryablePublishError(`bluesky ${t.where}: ${what}: ${describe(res, t.secrets)}`, rateLimitDelay(res), false, true);
      if (res.status >= 500 || res.status === 408) throw new RetryablePublishError(`bluesky ${t.where}: ${what}: ${describe(res, t.secrets)}`, null, false);
      // 413 PayloadTooLarge (over the PDS's upload limit), 400 (a type or size refused), ...
      throw new PermanentPublishError(`bluesky ${t.where}: ${what}: ${describe(res, t.secrets)}`);
    };

    return {
      async publish(request: PublishRequest): Promise<PublishResult> {
        const ctx = open(request);
        const { t } = ctx;
        const tooLong = checkPostText(request.text);
        if (tooLong !== null) throw new PermanentPublishError(`channel ${request.channel.name}: ${tooLong}`);
        if (request.images.length > BLUESKY_MEDIA.maxImages) {
          throw new PermanentPublishError(`bluesky ${t.where}: ${request.images.length} images; a post takes at most ${BLUESKY_MEDIA.maxImages}`);
        }
        let reply: { root: StrongRef; parent: StrongRef } | null = null;
        if (request.replyTo !== null) {
          const root = strongRef(request.replyTo.root);
          const parent = strongRef(request.replyTo.parent);
          if (root === null || parent === null) {
            throw new PermanentPublishError(
              `bluesky ${t.where}: part ${request.part.index + 1} of ${request.part.count} replies to a part without its record's uri and cid`,
            );
          }
          reply = { root, parent };
        }
        const rkey = recordKeyFor(request.idempotencyKey);
        const nsid = 'com.atproto.repo.createRecord';
        let answer: { res: HttpResponse; session: Session };
        try {
          const facets = await buildFacets(request.text, (handle) => resolveHandle(ctx, handle));
          // blobs are addressed by their content: an attempt that uploads them again gets the same refs
          const blobs: unknown[] = [];
          for (const [index, image] of request.images.entries()) blobs.push(await uploadBlob(ctx, image, index, request.images.length));
          const record = {
            $type: POST_COLLECTION,
            text: request.text,
            createdAt: new Date().toISOString(),
            ...(ctx.settings.langs === undefined || ctx.settings.langs.length === 0 ? {} : { langs: ctx.settings.langs }),
            ...(facets.length === 0 ? {} : { facets }),
            ...(reply === null ? {} : { reply }),
            ...(blobs.length === 0
              ? {}
              : { embed: { $type: 'app.bsky.embed.images', images: blobs.map((blob, index) => embedded(blob, request.images[index])) } }),
          };
          answer = await authorized(ctx, async (session) => {
            try {
              return await xrpc(t, 'POST', nsid, { token: session.accessJwt, body: { repo: session.did, collection: POST_COLLECTION, rkey, record } });
            } catch (e) {
              if (!(e instanceof NoAnswer)) throw e;
              // the write may have reached the PDS: the `check` policy looks the key up next time
              throw new RetryablePublishError(e.message, null, e.sent);
            }
          });
        } catch (e) {
          throw notDelivered(e);
        }
        const { res, session } = answer;
        if (res.status === 200) {
          // 200 is the record written; its uri is the one asked for, its cid what a reply needs
          const written = published(res, session.did, rkey);
          if (written.replyRef !== undefined) return written;
          try {
            return (await getRecord(ctx, session.did, rkey)) ?? written;
          } catch {
            // published all the same; only a reply to it would miss its cid
            return written;
          }
        }
        if (isTokenRefusal(res)) {
          throw new CredentialsRejectedError(`bluesky ${t.where}: the PDS refused a fresh session: ${describe(res, t.secrets)}`);
        }
        if (res.status === 401) {
          // the account, not this post (AccountTakedown, ...): the post waits for an operator
          throw new CredentialsRejectedError(`bluesky ${t.where}: ${nsid}: ${describe(res, t.secrets)}`);
        }
        if (res.status === 429) throw new RetryablePublishError(`bluesky ${t.where}: ${nsid}: ${describe(res, t.secrets)}`, rateLimitDelay(res), false, true);
        const { error, message } = xrpcError(res);
        const mayExist = res.status >= 500 || res.status === 409 || /already exists|already a value|AlreadyExists/i.test(`${error ?? ''} ${message ?? ''}`);
        if (mayExist) {
          // a record at the key: this post, written by this attempt or an earlier one
          try {
            const found = await getRecord(ctx, session.did, rkey);
            if (found !== null) return found;
          } catch {
            // the lookup failed too: the outcome stays unknown
          }
          if (res.status >= 500) throw new RetryablePublishError(`bluesky ${t.where}: ${nsid}: ${describe(res, t.secrets)}`, null, true);
        }
        if (res.status === 408) throw new RetryablePublishError(`bluesky ${t.where}: ${nsid}: ${describe(res, t.secrets)}`, null, false);
        if (error === 'BlobTooLarge') {
          // the PDS's message gives sizes, not which image: name those over the lexicon's limit
          const over = request.images.flatMap((image, index) => (image.bytes.length > BLUESKY_MEDIA.maxBytes ? [describeImage(image, index, request.images.length)] : []));
          const which = over.length === 0 ? 'an image' : over.join(', ');
          throw new PermanentPublishError(`bluesky ${t.where}: ${which} too large for Bluesky (at most ${BLUESKY_MEDIA.maxBytes} bytes): ${nsid}: ${describe(res, t.secrets)}`);
        }
        throw new PermanentPublishError(`bluesky ${t.where}: ${nsid}: ${describe(res, t.secrets)}`);
      },

      async lookup(request: PublishRequest): Promise<PublishResult | null> {
        const ctx = open(request);
        try {
          return await getRecord(ctx, await repoDid(ctx), recordKeyFor(request.idempotencyKey));
        } catch (e) {
          throw notDelivered(e);
        }
      },

      async close() {
        sessions.clear();
        await client.close();
      },
    };
  },
};

/** com.atproto.server.createSession from the app password; refused: CredentialsRejectedError. */
async function createSession(t: Target, creds: BlueskyCredentials): Promise<Session> {
  const nsid = 'com.atproto.server.createSession';
  const res = await xrpc(t, 'POST', nsid, { body: { identifier: creds.identifier, password: creds.app_password } });
  if (res.status === 200) {
    const session = sessionFrom(res);
    if (session === null) throw new RetryablePublishError(`bluesky ${t.where}: ${nsid}: an answer without tokens or DID`);
    return session;
  }
  if (res.status === 401 || res.status === 403 || (res.status === 400 && xrpcError(res).error !== 'RateLimitExceeded')) {
    throw new CredentialsRejectedError(`bluesky ${t.where}: ${nsid} refused the identifier and app password: ${describe(res, t.secrets)}`);
  }
  throw readError(t, nsid, res);
}

/** com.atproto.server.refreshSession; null when the refresh token is refused (create a new session). */
async function refreshSession(t: Target, stale: Session): Promise<Session | null> {
  const nsid = 'com.atproto.server.refreshSession';
  const res = await xrpc(t, 'POST', nsid, { token: stale.refreshJwt });
  if (res.status === 200) return sessionFrom(res);
  if (isTokenRefusal(res)) return null;
  throw readError(t, nsid, res);
}
