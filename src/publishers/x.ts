import { createHash } from 'node:crypto';
import * as v from 'valibot';
import { createHttpClient, HttpSendFailure, multipartBody, type HttpClient, type HttpResponse } from './http-client.ts';
import {
  CredentialsRejectedError,
  PermanentPublishError,
  RetryablePublishError,
  SettingsError,
  type LoadedImage,
  type MediaLimits,
  type Publisher,
  type PublisherModule,
  type PublisherOptions,
  type PublishRequest,
  parseWith,
} from './publisher.ts';
import { answerExcerpt } from './redact.ts';
import { apiUrlProblem, sendFailure } from './network.ts';
import { MINUTE } from '../ratelimits/units.ts';

/**
 * `x`: publishes a post on X through the API v2 "create post" endpoint with an OAuth 2.0
 * user access token (https://docs.x.com/x-api/posts/create-post).
 *
 * - `POST {api_url}/2/tweets` with `Authorization: Bearer <access_token>` and a JSON body
 *   `{ text, media?: { media_ids }, reply?: { in_reply_to_tweet_id } }`. A 201
 *   `{ data: { id, text } }` is published: the external id is `data.id`, the URL
 *   `https://x.com/i/web/status/<id>`. A 2xx without an id is an unknown outcome. A post
 *   with images may have no text (the body then has none).
 * - Images (X_MEDIA: up to 4, JPEG, PNG or WebP, 5 MB each, alt text up to 1000
 *   characters), each before the post, in order: `POST {api_url}/2/media/upload`
 *   (https://docs.x.com/x-api/media/upload-media), a multipart/form-data body with the
 *   raw bytes as `media`, `media_category=tweet_image` and `media_type`; the answer's
 *   `data.id` is the media id. An image with alt text then gets `POST
 *   {api_url}/2/media/metadata` with `{ id, metadata: { alt_text: { text } } }`. The
 *   token needs the `media.write` scope. A media call publishes nothing, so none of its
 *   failures is an unknown outcome: 400 (and other 4xx) fails the post naming the image,
 *   413 too (the image is too big), 403 refuses the credentials (no `media.write`), 401
 *   refreshes as below, 429 waits as for posts, 5xx and a cut or timeout are retried
 *   (not delivered). A retry uploads the images again (media ids are not kept).
 * - Threads: a part after the first replies to the part before it,
 *   `reply.in_reply_to_tweet_id` = the id this module returned for it (`replyTo.parent`).
 *   A 403 about a deleted or invisible post to reply to fails the post (it does not
 *   refuse the credentials). Each part is one call of publish; a thread is no safer
 *   than its parts: a part whose create call was cut (or answered 5xx) is an unknown
 *   outcome, and under `hold` (the default) the post stops there, its earlier parts
 *   published, until an operator finds out whether that part is on X.
 * - Tokens (OAuth 2.0 authorization code flow with PKCE and `offline.access`; scopes
 *   `tweet.write`, `users.read`, `tweet.read`, and `media.write` for images): the
 *   credentials are `{ access_token, refresh_token?, client_id, client_secret?,
 *   expires_at? }`. An access token lives about two hours. Before sending, a token that
 *   expires within REFRESH_MARGIN_MS is refreshed; a 401 (of a media call or of the post)
 *   leads to one refresh and one resend of that call (a 401 means nothing was done),
 *   never more than one refresh per part. A refresh is
 *   `POST {api_url}/2/oauth2/token` with a form body `grant_type=refresh_token`,
 *   `refresh_token`, `client_id`, and HTTP Basic `client_id:client_secret` for a
 *   confidential client. X rotates the refresh token on every refresh (the old one stops
 *   working), so the new access token, refresh token and expiry are stored at once with
 *   `saveCredentials`, and this process remembers them per channel: a post that still
 *   carries the old tokens (claimed before the save) uses the new ones instead of
 *   refreshing with a dead refresh token, and concurrent posts share one refresh. Other
 *   processes see the stored tokens; two processes refreshing the same channel in the
 *   same instant can still race (the loser's refresh is refused: credentials rejected,
 *   and an operator gives the channel new tokens).
 * - A refused refresh (400 `invalid_grant` / `invalid_request`, 401) rejects the
 *   credentials; a refresh that fails otherwise (429, 5xx, no answer) is retried later,
 *   and the post was not sent.
 * - Answers of the create endpoint:
 *   - 403 whose detail speaks of duplicate content: permanent ("X refused a duplicate of
 *     an earlier post");
 *   - any other 403 (not permitted, suspended, missing scope, client not enrolled): the
 *     credentials are refused (the channel waits for an operator);
 *   - 429: not posted; retried at `x-rate-limit-reset` (Unix seconds), or at the 24-hour
 *     user or app limit's reset when that one is used up;
 *   - 5xx, and a request that was sent and then timed out or was cut: maybe delivered;
 *   - 400 and other 4xx: permanent, with a short redacted excerpt of the problem's detail;
 *   - redirects are not followed: permanent (fix api_url).
 * - No protection against a double post: the endpoint takes no idempotency key and
 *   nothing looks a post up by a key of ours, so X channels default to
 *   `--on-unknown hold` and offer no `check`.
 * - Text: at most 280 characters as X counts them (see xLength: weighted code points,
 *   emoji 2, URLs 23).
 * - SSRF protection (as for webhooks): `api_url` defaults to https://api.x.com; any
 *   other must be https://, http:// only with `allow_private_network`.
 * - Secrets: the access and refresh tokens and the client secret (old and new) go only
 *   into the Authorization header and the token request's body; every error text is
 *   scrubbed of them (and of anything that looks like a credential) before it is shown.
 */

export const DEFAULT_API_URL = 'https://api.x.com';
/** X's limit for a post of a standard account (twitter-text's maxWeightedTweetLength) */
export const MAX_WEIGHTED_LENGTH = 280;
/** every URL counts as the t.co link that replaces it (twitter-text's transformedURLLength) */
export const CHARACTERS_PER_URL = 23;
/** an access token that expires within this is refreshed before sending */
export const REFRESH_MARGIN_MS = 60_000;

/**
 * The images one post takes (docs.x.com, media "Media types & size restrictions" and
 * best practices): up to 4 photos of at most 5 MB; alt text up to 1000 characters
 * (`POST /2/media/metadata`). The one-request upload takes `media_category=tweet_image`
 * for JPEG, PNG and WebP; a GIF is media_category `tweet_gif`, which needs the chunked
 * upload (INIT/APPEND/FINALIZE and processing), so GIFs are not offered.
 */
export const X_MEDIA: MediaLimits = {
  maxImages: 4,
  maxBytes: 5 * 1024 * 1024,
  maxAltLength: 1000,
  types: ['image/jpeg', 'image/png', 'image/webp'],
};


const settingsSchema = v.pipe(
  v.object(
    {
      api_url: v.optional(
        v.pipe(
          v.string('x api_url must be a URL like https://api.x.com'),
          v.check((s) => apiUrlProblem('x', s, DEFAULT_API_URL) === null, (issue) => apiUrlProblem('x', issue.input, DEFAULT_API_URL) ?? 'x api_url is invalid'),
        ),
      ),
      allow_private_network: v.optional(v.boolean('x allow_private_network must be true or false')),
    },
    'x channel settings must be an object',
  ),
  v.check(
    (s) => s.api_url === undefined || new URL(s.api_url).protocol === 'https:' || s.allow_private_network === true,
    'x api_url must be https:// (http:// only with allow_private_network)',
  ),
);

type XSettings = v.InferOutput<typeof settingsSchema>;

/** a token or id: printable ASCII without spaces (the messages name the field, never its value) */
const opaque = (field: string, required: boolean) =>
  v.pipe(
    v.string(`x credentials need ${required ? 'a' : 'their'} ${field} ${required ? '(a string)' : 'as a string'}`),
    v.minLength(1, `x ${field} must not be empty`),
    v.regex(/^[\x21-\x7e]+$/, `x ${field} must be printable ASCII without spaces`),
  );

const credentialsSchema = v.object(
  {
    access_token: opaque('access_token', true),
    refresh_token: v.optional(opaque('refresh_token', false)),
    client_id: opaque('client_id', true),
    client_secret: v.optional(opaque('client_secret', false)),
    expires_at: v.optional(
      v.pipe(
        v.string('x expires_at must be an ISO time like 2026-01-01T12:00:00Z'),
        v.check((s) => /^\d{4}-\d{2}-\d{2}T/.test(s) && !Number.isNaN(Date.parse(s)), 'x expires_at must be an ISO time like 2026-01-01T12:00:00Z'),
      ),
    ),
  },
  'x credentials need an access_token and a client_id',
);

type XCredentials = v.InferOutput<typeof credentialsSchema>;

function parseSettings(settings: Record<string, unknown>): XSettings {
  return parseWith(settingsSchema, settings);
}

function parseCredentials(credentials: Record<string, unknown>): XCredentials {
  return parseWith(credentialsSchema, credentials);
}

// --- text length as X counts it ----------------------------------------------------

/**
 * twitter-text's configuration v3 (the one X applies): weights in hundredths, code
 * points in these ranges weigh 1 character, every other one 2.
 */
const LIGHT_RANGES: readonly (readonly [number, number])[] = [
  [0x0000, 0x10ff], // Latin, Greek, Cyrillic, Hebrew, Arabic, Indic... (up to Georgian)
  [0x2000, 0x200d], // spaces, zero-width joiner
  [0x2010, 0x201f], // dashes, quotes
  [0x2032, 0x2037], // primes
];

function codePointWeight(cp: number): number {
  for (const [start, end] of LIGHT_RANGES) if (cp >= start && cp <= end) return 1;
  return 2;
}

/**
 * URLs as twitter-text finds them, approximately: anything starting http(s):// with a
 * dotted host, and bare domains (example.com, www.example.org/path) under common
 * top-level domains. Trailing punctuation is not part of a URL.
 */
const COMMON_TLDS =
  'com|org|net|edu|gov|mil|int|info|biz|io|co|ai|app|dev|me|tv|ly|gl|gg|xyz|online|site|tech|blog|news|shop|store|cloud|page|' +
  'uk|us|ca|au|de|fr|es|it|nl|be|ch|at|se|no|dk|fi|pl|cz|pt|ie|ru|ua|jp|cn|kr|tw|hk|sg|in|br|mx|ar|cl|nz|za|eu|tr|il|gr|ro|hu';
const URL_IN_TEXT = new RegExp(
  String.raw`(?<![\p{L}\p{N}_@/.-])(?:https?://(?:[\p{L}\p{N}-]+\.)+[\p{L}\p{N}-]{2,}|(?:[\p{L}\p{N}-]+\.)+(?:${COMMON_TLDS})(?![\p{L}\p{N}-]))(?::\d+)?(?:[/?#][^\s]*)?`,
  'giu',
);
const TRAILING_PUNCTUATION = /[.,;:!?'")\]}>]+$/u;

const graphemes = new Intl.Segmenter('und', { granularity: 'grapheme' });
/** an emoji as a whole sequence (ZWJ sequences, skin tones, flags, keycaps) */
const EMOJI = /[\u{1100}-\u{10ffff}]|\ufe0f|\u20e3/u;
const PICTOGRAPHIC = /\p{Extended_Pictographic}|\p{Regional_Indicator}/u;

function plainLength(text: string): number {
  let length = 0;
  for (const { segment } of graphemes.segment(text)) {
    // with emoji parsing on, an emoji sequence counts 2 however many code points it takes
    if (PICTOGRAPHIC.test(segment) && EMOJI.test(segment)) {
      length += 2;
      continue;
    }
    for (const ch of segment) length += codePointWeight(ch.codePointAt(0) ?? 0);
  }
  return length;
}

/**
 * The length of a post as X counts it (twitter-text's weighted length): the text in
 * Unicode NFC; every URL 23; every emoji sequence 2; every other code point 1 inside
 * LIGHT_RANGES (Latin and most alphabetic scripts, common punctuation), else 2 (CJK...).
 *
 * Approximations: URLs are found by the regular expression above, not by twitter-text's
 * extractor with the full list of top-level domains (a bare domain under a rare TLD is
 * counted by its characters); emoji are grapheme clusters holding a pictographic code
 * point outside the light ranges or an emoji presentation selector, not twitter-text's
 * emoji list (©, ® and ™ without a selector count 1 here).
 */
export function xLength(text: string): number {
  const normalized = text.normalize('NFC');
  let length = 0;
  let last = 0;
  for (const match of normalized.matchAll(URL_IN_TEXT)) {
    const url = match[0];
    const trailing = TRAILING_PUNCTUATION.exec(url)?.[0] ?? '';
    length += plainLength(normalized.slice(last, match.index)) + CHARACTERS_PER_URL + plainLength(trailing);
    last = match.index + url.length;
  }
  return length + plainLength(normalized.slice(last));
}

/** Why this text cannot be posted on X, or null when it can. */
function checkText(text: string, images = 0): string | null {
  if (text.trim() === '') return images > 0 ? null : 'text is empty (X refuses a post without text or media)';
  const length = xLength(text);
  if (length <= MAX_WEIGHTED_LENGTH) return null;
  return `text is ${length} characters as X counts them (URLs 23 each, emoji and CJK characters 2); X takes at most ${MAX_WEIGHTED_LENGTH}`;
}

function redactSettings(settings: Record<string, unknown>): Record<string, unknown> {
  // API URL and a flag: nothing secret
  return { ...settings };
}

// --- answers -----------------------------------------------------------------------

/** An API path under the channel's api_url (which may carry a path prefix). */
function apiPath(apiUrl: URL, path: string): URL {
  return new URL(`${apiUrl.href.replace(/\/+$/, '')}${path}`);
}

/** The text with every secret replaced, then cut to a short redacted excerpt. */
function scrub(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) if (secret !== '') out = out.split(secret).join('***');
  return answerExcerpt(out);
}

function fieldsOf(answer: HttpResponse): Record<string, unknown> {
  const json = answer.json();
  return typeof json === 'object' && json !== null && !Array.isArray(json) ? (json as Record<string, unknown>) : {};
}

/**
 * A v2 problem's first `errors[].message` (X puts the specific reason there, beside a
 * generic `detail` such as "One or more parameters to your request was invalid."), else
 * its `detail`, `title` or the body, without secrets.
 */
function problem(answer: HttpResponse, secrets: readonly string[]): string {
  const fields = fieldsOf(answer);
  const errors = fields['errors'];
  const first = Array.isArray(errors) && typeof errors[0] === 'object' && errors[0] !== null ? (errors[0] as Record<string, unknown>) : {};
  for (const candidate of [first['message'], first['detail'], fields['detail'], fields['title'], fields['error_description'], fields['error']]) {
    if (typeof candidate === 'string' && candidate.trim() !== '') return scrub(candidate, secrets);
  }
  return scrub(answer.text(), secrets);
}

const DUPLICATE = /duplicate/i;

/** One header as a string (the first when repeated). */
function header(headers: HttpResponse['headers'], name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}

/** Unix seconds as milliseconds from now; null when absent or unreadable. */
function resetMs(value: string | undefined, now: number): number | null {
  if (value === undefined || !/^\d{1,12}$/.test(value.trim())) return null;
  return Math.max(0, Number(value.trim()) * 1000 - now);
}

/**
 * When a 429 may be retried: `x-rate-limit-reset` (the endpoint's 15-minute window), or
 * the later reset of a 24-hour user or app limit that is used up; else Retry-After.
 */
function rateLimitWaitMs(headers: HttpResponse['headers'], now = Date.now()): number | null {
  const waits: number[] = [];
  const window = resetMs(header(headers, 'x-rate-limit-reset'), now);
  if (window !== null) waits.push(window);
  for (const scope of ['user', 'app']) {
    if (header(headers, `x-${scope}-limit-24hour-remaining`)?.trim() === '0') {
      const daily = resetMs(header(headers, `x-${scope}-limit-24hour-reset`), now);
      if (daily !== null) waits.push(daily);
    }
  }
  if (waits.length > 0) return Math.max(...waits);
  const retryAfter = header(headers, 'retry-after')?.trim();
  return retryAfter !== undefined && /^\d{1,9}$/.test(retryAfter) ? Number(retryAfter) * 1000 : null;
}


// --- tokens --------------------------------------------------------------------------

function secretsOf(c: XCredentials): string[] {
  return [c.access_token, c.refresh_token ?? '', c.client_secret ?? ''].filter((s) => s !== '');
}

function expiresSoon(c: XCredentials, now = Date.now()): boolean {
  return c.expires_at !== undefined && Date.parse(c.expires_at) - now <= REFRESH_MARGIN_MS;
}

interface TokenContext {
  readonly client: HttpClient;
  readonly apiUrl: URL;
  readonly where: string;
  readonly allowPrivate: boolean;
  readonly signal: AbortSignal;
  readonly timeoutMs: number;
  /** every secret met so far (the new tokens are added as they come) */
  readonly secrets: string[];
}

/**
 * The refresh_token grant: the new credentials (a new access token, the rotated refresh
 * token, its expiry). Throws CredentialsRejectedError when X refuses the refresh token
 * or the client, RetryablePublishError (not delivered) when it cannot say.
 */
async function refreshTokens(t: TokenContext, c: XCredentials): Promise<XCredentials> {
  const refreshToken = c.refresh_token;
  if (refreshToken === undefined) {
    throw new CredentialsRejectedError(`x ${t.where}: the access token expired or was refused and the channel has no refresh_token; give it new tokens`);
  }
  const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: c.client_id });
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
  if (c.client_secret !== undefined) {
    headers['authorization'] = `Basic ${Buffer.from(`${c.client_id}:${c.client_secret}`, 'utf8').toString('base64')}`;
  }
  let answer: HttpResponse;
  try {
    answer = await t.client.request({
      method: 'POST',
      url: apiPath(t.apiUrl, '/2/oauth2/token'),
      headers,
      body: form.toString(),
      signal: t.signal,
      allowPrivateNetwork: t.allowPrivate,
    });
  } catch (e) {
    if (!(e instanceof HttpSendFailure)) throw e;
    // the post itself was not sent, whatever became of the refresh
    const failure = sendFailure('x', e, t.where, t.timeoutMs, (text) => scrub(text, t.secrets), 'token refresh');
    throw failure instanceof RetryablePublishError ? new RetryablePublishError(failure.message, null, false) : failure;
  }
  const { status } = answer;
  const fields = fieldsOf(answer);
  const error = typeof fields['error'] === 'string' && /^[a-z_]{1,64}$/.test(fields['error']) ? fields['error'] : null;
  if (status === 401 || (status === 400 && (error === 'invalid_grant' || error === 'invalid_request' || error === 'unauthorized_client' || error === 'invalid_client'))) {
    throw new CredentialsRejectedError(`x ${t.where} refused to refresh the access token (HTTP ${status}${error === null ? '' : ` ${error}`}: ${problem(answer, t.secrets)}); give the channel new tokens`);
  }
  if (status === 429) throw new RetryablePublishError(`x ${t.where}: token refresh rate limited (HTTP 429)`, rateLimitWaitMs(answer.headers), false, true);
  if (status < 200 || status >= 300) {
    throw new RetryablePublishError(`x ${t.where}: token refresh answered HTTP ${status}: ${problem(answer, t.secrets)}`, null, false);
  }
  const access = fields['access_token'];
  const refresh = fields['refresh_token'];
  const expiresIn = fields['expires_in'];
  const token = /^[\x21-\x7e]+$/;
  if (typeof access !== 'string' || !token.test(access) || (refresh !== undefined && (typeof refresh !== 'string' || !token.test(refresh)))) {
    throw new RetryablePublishError(`x ${t.where}: token refresh answered HTTP ${status} without a usable access token`, null, false);
  }
  t.secrets.push(access);
  if (typeof refresh === 'string') t.secrets.push(refresh);
  const fresh: XCredentials = { ...c, access_token: access };
  if (typeof refresh === 'string') fresh.refresh_token = refresh;
  if (typeof expiresIn === 'number' && Number.isFinite(expiresIn) && expiresIn > 0) {
    fresh.expires_at = new Date(Date.now() + expiresIn * 1000).toISOString();
  } else {
    delete fresh.expires_at;
  }
  return fresh;
}

// --- media ---------------------------------------------------------------------------

/** an API call as publish makes it (the token, and one refresh on a 401, are its business) */
type ApiCall = (path: string, contentType: string, body: Buffer | string, doing: string, delivers: boolean) => Promise<HttpResponse>;

/** `data.<field>` of an answer as a string, or null */
function dataField(answer: HttpResponse, field: string): string | null {
  const data = fieldsOf(answer)['data'];
  const value = typeof data === 'object' && data !== null ? (data as Record<string, unknown>)[field] : undefined;
  return typeof value === 'string' ? value : null;
}

/** X's 403 for a reply to a post that was deleted or is not visible */
const GONE_PARENT = /deleted|not visible|reply/i;

/** Why these images cannot go with one post (the core checks them first; this is the last guard). */
function mediaProblem(images: readonly LoadedImage[]): string | null {
  if (images.length > X_MEDIA.maxImages) return `${images.length} images; X takes at most ${X_MEDIA.maxImages} with one post`;
  for (const [index, image] of images.entries()) {
    const name = imageName(image, index);
    if (!X_MEDIA.types.includes(image.mimeType)) return `${name} is ${image.mimeType}; X's simple upload takes ${X_MEDIA.types.join(', ')}`;
    if (image.bytes.length > X_MEDIA.maxBytes) return `${name} is ${image.bytes.length} bytes; X takes at most ${X_MEDIA.maxBytes}`;
    if (Array.from(image.alt).length > X_MEDIA.maxAltLength) return `${name} has an alt text over ${X_MEDIA.maxAltLength} characters`;
  }
  return null;
}

function imageName(image: LoadedImage, index: number): string {
  return `image ${index + 1} (${image.filename})`;
}

/** The error of a media call's answer that is not a success (nothing was posted). */
function mediaFailure(answer: HttpResponse, where: string, secrets: readonly string[], what: string): Error {
  const { status } = answer;
  const detail = problem(answer, secrets);
  const said = detail === '' ? '' : `: ${detail}`;
  if (status === 401) return new CredentialsRejectedError(`x ${where} refused the access token for ${what} even after a refresh (HTTP 401${said}); give the channel new tokens`);
  if (status === 403) return new CredentialsRejectedError(`x ${where}: X does not permit this app to upload media (HTTP 403${said}); the token needs the media.write scope`);
  if (status === 413) return new PermanentPublishError(`x ${where}: ${what}: the image is too big for X (HTTP 413)`);
  if (status === 429) return new RetryablePublishError(`x ${where}: ${what}: rate limited (HTTP 429)`, rateLimitWaitMs(answer.headers), false, true);
  if (status >= 500) return new RetryablePublishError(`x ${where}: ${what}: HTTP ${status}${said}`, null, false);
  if (status >= 300 && status < 400) return new PermanentPublishError(`x ${where}: ${what}: HTTP ${status} redirect (redirects are not followed; check api_url)`);
  return new PermanentPublishError(`x ${where}: X refused ${what} (HTTP ${status}${said})`);
}

/**
 * Uploads one image (`POST /2/media/upload`, multipart: the raw bytes as `media`,
 * `media_category=tweet_image`, `media_type`), then gives it its alt text
 * (`POST /2/media/metadata`) when it has one: the media id.
 */
async function uploadImage(call: ApiCall, where: string, t: TokenContext, image: LoadedImage, index: number): Promise<string> {
  const name = imageName(image, index);
  const { body, contentType } = multipartBody({ media_category: 'tweet_image', media_type: image.mimeType }, [
    { name: 'media', filename: image.filename, contentType: image.mimeType, data: image.bytes },
  ]);
  const uploaded = await call('/2/media/upload', contentType, body, `media upload of ${name}`, false);
  if (uploaded.status < 200 || uploaded.status >= 300) throw mediaFailure(uploaded, where, t.secrets, `the upload of ${name}`);
  const id = dataField(uploaded, 'id');
  if (id === null || !/^\d{1,30}$/.test(id)) {
    throw new RetryablePublishError(`x ${where}: the upload of ${name} answered HTTP ${uploaded.status} without a media id (${scrub(uploaded.text(), t.secrets) || 'empty answer'})`, null, false);
  }
  if (image.alt !== '') {
    const metadata = JSON.stringify({ id, metadata: { alt_text: { text: image.alt } } });
    const described = await call('/2/media/metadata', 'application/json', metadata, `alt text of ${name}`, false);
    if (described.status < 200 || described.status >= 300) throw mediaFailure(described, where, t.secrets, `the alt text of ${name}`);
  }
  return id;
}

function digest(value: string): string {
  return createHash('sha256').update(value).digest('hex');
}

/** how many channels' refreshed tokens one publisher remembers */
const MAX_REMEMBERED = 1_000;

export const xPublisher: PublisherModule = {
  platform: 'x',
  parseSettings,
  parseCredentials,
  redactSettings,
  checkText: (text, _settings, images) => checkText(text, images),
  media: X_MEDIA,
  threads: true,
  canLookUp: false,
  // no idempotency key, no look-up: a resend after an unknown outcome could post twice
  defaultOnUnknown: 'hold',
  /**
   * X API v2 POST /2/tweets: 100 per 15 minutes per user, and 10,000 per 24 hours per
   * app, shared by every channel of the app (counted per client_id, which is not secret)
   */
  rateLimits: (_settings, credentials) => {
    const client = credentials?.['client_id'];
    return {
      posts: { limit: 100, windowMs: 15 * MINUTE },
      ...(typeof client === 'string' && client !== '' ? { requests: { limit: 10_000, windowMs: 24 * 60 * MINUTE, per: `app ${client}` } } : {}),
    };
  },

  async verify(settingsIn, credentialsIn, options) {
    const settings = parseSettings(settingsIn);
    if (credentialsIn === null) throw new SettingsError('x channel needs credentials with an access_token and a client_id');
    const creds = parseCredentials(credentialsIn);
    const secrets = secretsOf(creds);
    const apiUrl = new URL(settings.api_url ?? DEFAULT_API_URL);
    const where = `API ${apiUrl.host}`;
    const client = createHttpClient({ timeoutMs: options.timeoutMs, concurrency: 1, allowPrivateNetwork: options.allowPrivateNetwork === true });
    try {
      // no refresh here: X rotates the refresh token, and verify cannot store the new one
      let answer: HttpResponse;
      try {
        answer = await client.request({
          method: 'GET',
          url: apiPath(apiUrl, '/2/users/me'),
          headers: { authorization: `Bearer ${creds.access_token}`, accept: 'application/json' },
          signal: new AbortController().signal,
          allowPrivateNetwork: settings.allow_private_network === true,
        });
      } catch (e) {
        if (!(e instanceof HttpSendFailure)) throw e;
        const failure = sendFailure('x', e, where, options.timeoutMs, (text) => scrub(text, secrets), 'users/me');
        throw e.addressRefused ? new SettingsError(failure.message) : failure;
      }
      const { status } = answer;
      if (status === 200) {
        const data = fieldsOf(answer)['data'];
        const username = typeof data === 'object' && data !== null ? (data as Record<string, unknown>)['username'] : undefined;
        if (typeof username !== 'string' || !/^\w{1,50}$/.test(username)) throw new Error(`x ${where}: users/me answered without a username`);
        return { account: `@${username}` };
      }
      if (status === 401 || status === 403) {
        throw new CredentialsRejectedError(`x ${where} refused the access token (HTTP ${status}: ${problem(answer, secrets)}); give the channel a fresh one`);
      }
      if (status === 429) throw new Error(`x ${where}: users/me is rate limited (HTTP 429); try again later`);
      throw new Error(`x ${where}: users/me answered HTTP ${status}: ${problem(answer, secrets)}`);
    } finally {
      await client.close();
    }
  },

  createPublisher(options: PublisherOptions): Publisher {
    // one client (keep-alive pools) for every X channel this worker publishes to
    const client: HttpClient = createHttpClient({
      timeoutMs: options.timeoutMs,
      concurrency: options.concurrency,
      allowPrivateNetwork: options.allowPrivateNetwork === true,
    });
    /**
     * channel id + digest of the refresh token a refresh started from -> its result: the
     * refresh token is rotated, so a post that still carries the old one takes these
     * instead of refreshing again (and concurrent posts share one refresh)
     */
    const refreshed = new Map<string, Promise<XCredentials>>();

    const refreshOnce = (t: TokenContext, channelId: number, c: XCredentials): Promise<XCredentials> => {
      const key = `${channelId}\n${digest(c.refresh_token ?? '')}`;
      let pending = refreshed.get(key);
      if (pending === undefined) {
        pending = refreshTokens(t, c);
        refreshed.set(key, pending);
        // a failed refresh is forgotten (the next post tries again); the map stays bounded
        pending.catch(() => refreshed.delete(key));
        if (refreshed.size > MAX_REMEMBERED) {
          const oldest = refreshed.keys().next().value;
          if (oldest !== undefined) refreshed.delete(oldest);
        }
      }
      return pending.then((fresh) => {
        for (const s of secretsOf(fresh)) if (!t.secrets.includes(s)) t.secrets.push(s);
        return fresh;
      });
    };

    /** the newest tokens this process knows for the channel, starting from the stored ones */
    const newest = async (t: TokenContext, channelId: number, stored: XCredentials): Promise<XCredentials> => {
      let c = stored;
      // follow the chain of refreshes made from these tokens (bounded)
      for (let i = 0; i < 5; i++) {
        const pending = refreshed.get(`${channelId}\n${digest(c.refresh_token ?? '')}`);
        if (c.refresh_token === undefined || pending === undefined) break;
        try {
          c = await pending;
        } catch {
          break;
        }
        for (const s of secretsOf(c)) if (!t.secrets.includes(s)) t.secrets.push(s);
      }
      return c;
    };

    const store = async (t: TokenContext, request: PublishRequest, fresh: XCredentials): Promise<void> => {
      try {
        await request.saveCredentials({ ...request.credentials, ...fresh });
      } catch (e) {
        // nothing was posted yet; this process keeps the new tokens for the next attempt
        throw new RetryablePublishError(`x ${t.where}: could not store the refreshed tokens: ${scrub((e as Error).message, t.secrets)}`);
      }
    };

    return {
      async publish(request: PublishRequest) {
        const channel = request.channel;
        let settings: XSettings;
        try {
          settings = parseSettings(channel.settings);
        } catch (e) {
          throw new PermanentPublishError(`channel ${channel.name}: ${(e as Error).message}`);
        }
        const apiUrl = new URL(settings.api_url ?? DEFAULT_API_URL);
        const where = `channel ${channel.name} (${apiUrl.host})`;
        if (request.credentials === null) {
          throw new CredentialsRejectedError(`x ${where} has no credentials: give it an access_token and a client_id`);
        }
        let stored: XCredentials;
        try {
          stored = parseCredentials({ ...request.credentials });
        } catch (e) {
          throw new CredentialsRejectedError(`x ${where}: ${(e as Error).message}`);
        }
        // a post with images may have no text (X takes media alone)
        const refused = checkText(request.text, request.images.length);
        if (refused !== null) throw new PermanentPublishError(`x ${where}: ${refused}`);
        const media = mediaProblem(request.images);
        if (media !== null) throw new PermanentPublishError(`x ${where}: ${media}`);

        const t: TokenContext = {
          client,
          apiUrl,
          where,
          allowPrivate: settings.allow_private_network === true,
          signal: request.signal,
          timeoutMs: options.timeoutMs,
          secrets: secretsOf(stored),
        };
        let creds = await newest(t, channel.id, stored);
        if (creds.access_token !== stored.access_token) await store(t, request, creds);
        let refreshedNow = false;
        if (expiresSoon(creds) && creds.refresh_token !== undefined) {
          creds = await refreshOnce(t, channel.id, creds);
          refreshedNow = true;
          await store(t, request, creds);
        }

        /** one API call with the current token; a 401 leads to one refresh per publish, and the call is made again */
        const call = async (path: string, contentType: string, body: Buffer | string, doing: string, delivers: boolean): Promise<HttpResponse> => {
          const once = async (token: string): Promise<HttpResponse> => {
            try {
              return await client.request({
                method: 'POST',
                url: apiPath(apiUrl, path),
                headers: { authorization: `Bearer ${token}`, 'content-type': contentType, accept: 'application/json' },
                body,
                signal: request.signal,
                allowPrivateNetwork: t.allowPrivate,
              });
            } catch (e) {
              if (!(e instanceof HttpSendFailure)) throw e;
              const failure = sendFailure('x', e, where, options.timeoutMs, (text) => scrub(text, t.secrets), doing);
              // a media call that was cut published nothing: only the create call may have
              throw failure instanceof RetryablePublishError && !delivers ? new RetryablePublishError(failure.message, null, false) : failure;
            }
          };
          let answer = await once(creds.access_token);
          if (answer.status === 401 && !refreshedNow) {
            // the token expired early or was revoked: one refresh, one resend (a 401 did nothing)
            creds = await refreshOnce(t, channel.id, creds);
            refreshedNow = true;
            await store(t, request, creds);
            answer = await once(creds.access_token);
          }
          return answer;
        };

        const mediaIds: string[] = [];
        for (const [index, image] of request.images.entries()) mediaIds.push(await uploadImage(call, where, t, image, index));

        const body: Record<string, unknown> = {};
        if (request.text.trim() !== '' || mediaIds.length === 0) body['text'] = request.text;
        if (mediaIds.length > 0) body['media'] = { media_ids: mediaIds };
        if (request.replyTo !== null) {
          const parent = request.replyTo.parent.externalId;
          if (parent === null || !/^\d{1,30}$/.test(parent)) throw new PermanentPublishError(`x ${where}: part ${request.part.index + 1} replies to a part without an X post id`);
          body['reply'] = { in_reply_to_tweet_id: parent };
        }
        const answer = await call('/2/tweets', 'application/json', JSON.stringify(body), 'create post', true);

        const { status } = answer;
        const detail = () => problem(answer, t.secrets);
        if (status >= 200 && status < 300) {
          const id = dataField(answer, 'id');
          if (id === null || !/^\d{1,30}$/.test(id)) {
            // X took the request and answered something else: it may have posted
            throw new RetryablePublishError(`x ${where}: HTTP ${status} without a post id (${scrub(answer.text(), t.secrets) || 'empty answer'})`, null, true);
          }
          return { externalId: id, externalUrl: `https://x.com/i/web/status/${id}` };
        }
        if (status === 401) throw new CredentialsRejectedError(`x ${where} refused the access token even after a refresh (HTTP 401: ${detail()}); give the channel new tokens`);
        if (status === 403) {
          if (DUPLICATE.test(detail())) throw new PermanentPublishError(`x ${where}: X refused a duplicate of an earlier post (HTTP 403: ${detail()})`);
          if (request.replyTo !== null && GONE_PARENT.test(detail())) {
            throw new PermanentPublishError(`x ${where}: part ${request.part.index + 1} cannot reply to the part before it (HTTP 403: ${detail()})`);
          }
          throw new CredentialsRejectedError(`x ${where}: X does not permit this account or app to post (HTTP 403: ${detail()})`);
        }
        if (status === 429) throw new RetryablePublishError(`x ${where}: rate limited (HTTP 429)`, rateLimitWaitMs(answer.headers), false, true);
        if (status >= 500) {
          // X may have posted it before failing; nothing makes a resend safe
          throw new RetryablePublishError(`x ${where}: HTTP ${status}`, null, true);
        }
        if (status >= 300 && status < 400) {
          throw new PermanentPublishError(`x ${where}: HTTP ${status} redirect (redirects are not followed; check api_url)`);
        }
        const excerpt = detail();
        throw new PermanentPublishError(`x ${where}: HTTP ${status}${excerpt === '' ? '' : `: ${excerpt}`}`);
      },
      async close() {
        refreshed.clear();
        await client.close();
      },
    };
  },
};
