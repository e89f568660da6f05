import * as v from 'valibot';
import { createHttpClient, HttpSendFailure, type HttpClient, type HttpResponse } from './http-client.ts';
import {
  CredentialsRejectedError,
  PermanentPublishError,
  RetryablePublishError,
  SettingsError,
  type Publisher,
  type PublisherModule,
  type MediaLimits,
  type PublisherOptions,
  type PublishRequest,
  parseWith,
} from './publisher.ts';
import { answerExcerpt } from './redact.ts';
import { sendFailure } from './network.ts';
import { apiError, credentialsRefusal, retryAfterMs, SCOPE_ERROR } from './mastodon-api.ts';
import { uploadImages } from './mastodon-media.ts';
import { MINUTE, HOUR } from '../ratelimits/units.ts';

/**
 * `mastodon`: publishes a status on any Mastodon instance through its REST API
 * (https://docs.joinmastodon.org/methods/statuses/#create).
 *
 * - `POST {instance}/api/v1/statuses` with `Authorization: Bearer <access_token>` and a
 *   JSON body: `status`, `media_ids` (images), `in_reply_to_id` (a thread's later part),
 *   and from the channel's settings `visibility`, `language`, `spoiler_text` (a content
 *   warning; the status is then marked `sensitive`).
 * - `Idempotency-Key`: the part's key (the post's key for a post of one part), the same
 *   on every retry. Mastodon keeps a key for about an hour (per account) and answers a repeat within that time with the status
 *   the first request created, so a resend after an unknown outcome cannot post twice:
 *   new Mastodon channels default to `--on-unknown retry`. A resend more than an hour
 *   after a request that did arrive can post a second time (the key has expired); the
 *   worker's backoff retries far sooner than that unless MAX_ATTEMPTS and RETRY_MAX_MS
 *   are raised a lot. Mastodon offers no look-up by key, so `check` is not available.
 * - Answers, as the API documents them:
 *   - 200: published; the status's `id` and `url` are stored. A 200 without an `id` is
 *     an unknown outcome (maybe delivered).
 *   - 401, a 403 about the token, its scopes or the account's login, and a 422 "requires
 *     an authenticated user" (an app token without a user): the credentials are refused
 *     (the post waits for an operator to give the channel a new token).
 *   - 429: rate limited, not processed; retried at `X-RateLimit-Reset` (an ISO time) or
 *     `Retry-After`.
 *   - 5xx (503 included): maybe delivered; resent with the same key.
 *   - 422 (validation: too long, blank, bad language...) and any other 4xx: permanent,
 *     with a short excerpt of the API's `error`.
 *   - redirects are not followed: permanent (fix the instance URL).
 * - No answer: a request that was sent (timed out, cut) is maybe delivered; one that
 *   never left (refused connection, DNS) is a plain retry.
 * - Images (up to 4 a status; see MASTODON_MEDIA for the default limits): each is
 *   uploaded first with `POST /api/v2/media` (multipart `file`, `description` = its alt
 *   text) and, when the instance answers 202 (still processing), polled with
 *   `GET /api/v1/media/:id` until it is processed, within the publisher's timeout; the
 *   status then carries their `media_ids` in order (details in mastodon-media.ts). An
 *   upload is not idempotent: an attempt that fails after uploading (or a resend after an
 *   unknown outcome) uploads the images again, and the earlier uploads stay unattached
 *   until the instance removes them: harmless, never a second status. A processing that
 *   does not end in time, or any failure of an upload, is retried and never "maybe
 *   delivered" (no status was sent yet); a 422 or 413 of an upload fails the post,
 *   naming the image. The token needs `write:media` besides `write:statuses`.
 *   Instances configured below the defaults: the channel settings `image_size_limit`
 *   (bytes) and `description_limit` (characters), checked before anything is sent. A
 *   part of images alone may have an empty text (checkText, which knows no images,
 *   still calls a blank text empty).
 * - Threads: a later part is a status with `in_reply_to_id` = the id of the part before
 *   (`replyTo.parent.externalId`), with its own Idempotency-Key (`<post key>.<index>`),
 *   so a resend of one part cannot double it either.
 * - verify: `GET /api/v1/accounts/verify_credentials` needs `read:accounts` (or
 *   `profile`, Mastodon 4.3+). A token of write scopes only gets a 403 "outside the
 *   authorized scopes" there: the instance knew the token (an unknown one is a 401), so
 *   it is accepted, shown without the account's name.
 * - SSRF protection (as for webhooks): loopback, private and link-local addresses are
 *   refused unless the channel has `allow_private_network` (or the config
 *   ALLOW_PRIVATE_NETWORK is true). The instance must be https://; http:// is taken only
 *   with `allow_private_network` (a test or in-house instance).
 * - Text limits as Mastodon counts them: grapheme clusters of the content warning plus
 *   the text, where every http(s) URL counts 23 characters and a mention
 *   `@user@domain` counts as `@user`; at most `max_characters` (default 500: instances
 *   differ, see their /api/v2/instance `configuration.statuses.max_characters`).
 * - The access token is a credential: it is only ever put in the Authorization header.
 *   Errors name the channel and the instance's host, and an answer appears only as a
 *   short excerpt with the token and credential-looking values replaced.
 *   The settings hold no secret and are shown as they are.
 */

const VISIBILITIES = ['public', 'unlisted', 'private', 'direct'] as const;

/** Mastodon's default limit; instances may configure another */
export const DEFAULT_MAX_CHARACTERS = 500;
/** every URL counts this many characters (the instance's `characters_reserved_per_url`) */
export const CHARACTERS_PER_URL = 23;

/**
 * The images of one status as a default Mastodon instance takes them (its
 * /api/v2/instance `configuration`): 4 attachments (`statuses.max_media_attachments`),
 * 16 MiB an image (`media_attachments.image_size_limit`, 16777216), alt text of 1500
 * characters (`media_attachments.description_limit`), and the still-image types every
 * instance lists in `supported_mime_types`.
 */
export const MASTODON_MEDIA: MediaLimits = {
  maxImages: 4,
  maxBytes: 16 * 1024 * 1024,
  maxAltLength: 1500,
  types: ['image/jpeg', 'image/png', 'image/gif', 'image/webp'],
};

function instanceProblem(value: string): string | null {
  if (!URL.canParse(value)) return 'mastodon instance must be a URL like https://mastodon.social';
  const u = new URL(value);
  if (u.protocol !== 'https:' && u.protocol !== 'http:') return 'mastodon instance must be an https:// URL';
  if (u.username !== '' || u.password !== '') return 'mastodon instance must not carry a user name or password';
  if ((u.pathname !== '/' && u.pathname !== '') || u.search !== '' || u.hash !== '') {
    return 'mastodon instance must be the address of the instance only, like https://mastodon.social';
  }
  return null;
}

const settingsSchema = v.pipe(
  v.object(
    {
      instance: v.pipe(
        v.string('mastodon channel needs an instance (its https:// URL)'),
        v.check((s) => instanceProblem(s) === null, (issue) => instanceProblem(issue.input) ?? 'mastodon instance is invalid'),
      ),
      visibility: v.optional(v.picklist(VISIBILITIES, 'mastodon visibility must be public, unlisted, private or direct')),
      language: v.optional(
        v.pipe(v.string('mastodon language must be a two-letter ISO 639-1 code, like en'), v.regex(/^[a-z]{2}$/, 'mastodon language must be a two-letter ISO 639-1 code, like en')),
      ),
      spoiler_text: v.optional(
        v.pipe(
          v.string('mastodon spoiler_text (content warning) must be text'),
          v.check((s) => s.trim() !== '', 'mastodon spoiler_text (content warning) must not be empty'),
        ),
      ),
      max_characters: v.optional(
        v.pipe(
          v.number('mastodon max_characters must be a number'),
          v.integer('mastodon max_characters must be a whole number'),
          v.minValue(1, 'mastodon max_characters must be at least 1'),
        ),
      ),
      image_size_limit: v.optional(
        v.pipe(
          v.number('mastodon image_size_limit must be a number (bytes)'),
          v.integer('mastodon image_size_limit must be a whole number of bytes'),
          v.minValue(1, 'mastodon image_size_limit must be at least 1 byte'),
        ),
      ),
      description_limit: v.optional(
        v.pipe(
          v.number('mastodon description_limit must be a number'),
          v.integer('mastodon description_limit must be a whole number'),
          v.minValue(0, 'mastodon description_limit must not be negative'),
        ),
      ),
      allow_private_network: v.optional(v.boolean('mastodon allow_private_network must be true or false')),
    },
    'mastodon channel needs an instance (its https:// URL)',
  ),
  v.check(
    (s) => new URL(s.instance).protocol === 'https:' || s.allow_private_network === true,
    'mastodon instance must be https:// (http:// only with allow_private_network)',
  ),
);

type MastodonSettings = v.InferOutput<typeof settingsSchema>;

// the messages name the field, never its value
const credentialsSchema = v.object(
  {
    access_token: v.pipe(
      v.string('mastodon credentials need an access_token (a string)'),
      v.minLength(1, 'mastodon access_token must not be empty'),
      v.regex(/^[\x21-\x7e]+$/, 'mastodon access_token must be printable ASCII without spaces'),
    ),
  },
  'mastodon credentials need an access_token',
);

type MastodonCredentials = v.InferOutput<typeof credentialsSchema>;

function parseSettings(settings: Record<string, unknown>): MastodonSettings {
  return parseWith(settingsSchema, settings);
}

function parseCredentials(credentials: Record<string, unknown>): MastodonCredentials {
  return parseWith(credentialsSchema, credentials);
}

const graphemes = new Intl.Segmenter('und', { granularity: 'grapheme' });
function graphemeLength(text: string): number {
  return Array.from(graphemes.segment(text)).length;
}

/**
 * An http(s) URL as Mastodon's extractor finds one: a scheme, a host with a dot or a
 * port (or localhost), then anything up to a space; trailing punctuation is not part of it.
 */
const URL_IN_TEXT = /(?<![\w@/])https?:\/\/(?:[\p{L}\p{N}-]+\.)+[\p{L}\p{N}-]{2,}(?::\d+)?(?:[/?#][^\s]*)?/giu;
const TRAILING_PUNCTUATION = /[.,;:!?'")\]}>]+$/u;
/** `@user@domain`: counts as `@user` (the domain is not counted) */
const MENTION_WITH_DOMAIN = /(?<![\p{L}\p{N}_/.@])@([a-z0-9_]+(?:[a-z0-9_.-]+[a-z0-9_])?)@[\p{L}\p{N}.-]+\.[\p{L}\p{N}-]+/giu;

/** The length of a status as Mastodon counts it (content warning included). */
export function mastodonLength(text: string, spoilerText = ''): number {
  let countable = text.replace(URL_IN_TEXT, (url) => {
    const trailing = TRAILING_PUNCTUATION.exec(url)?.[0] ?? '';
    return 'x'.repeat(CHARACTERS_PER_URL) + trailing;
  });
  countable = countable.replace(MENTION_WITH_DOMAIN, (_m, user: string) => `@${user}`);
  return graphemeLength(spoilerText) + graphemeLength(countable);
}

/** Why this text cannot go to a channel with these settings, or null when it can. */
function checkText(text: string, settings: Record<string, unknown>, images = 0): string | null {
  if (text.trim() === '') return images > 0 ? null : 'text is empty (Mastodon refuses a blank status without media)';
  const max = typeof settings['max_characters'] === 'number' ? settings['max_characters'] : DEFAULT_MAX_CHARACTERS;
  const spoiler = typeof settings['spoiler_text'] === 'string' ? settings['spoiler_text'] : '';
  const length = mastodonLength(text, spoiler);
  if (length <= max) return null;
  const counted = spoiler === '' ? 'URLs count 23 each' : 'URLs count 23 each, the content warning included';
  return `text is ${length} characters as Mastodon counts them (${counted}); the channel takes at most ${max}`;
}

/**
 * Why an image cannot go to this channel, by its own limits (`image_size_limit`,
 * `description_limit`, for an instance configured below the defaults), or null.
 */
function imageProblem(bytes: number, alt: string, settings: MastodonSettings): string | null {
  const maxBytes = settings.image_size_limit ?? MASTODON_MEDIA.maxBytes;
  if (bytes > maxBytes) return `is ${bytes} bytes; the instance takes at most ${maxBytes} (image_size_limit)`;
  // Mastodon counts a description's characters (code points)
  const altLength = Array.from(alt).length;
  const maxAlt = settings.description_limit ?? MASTODON_MEDIA.maxAltLength;
  if (altLength > maxAlt) return `has alt text of ${altLength} characters; the instance takes at most ${maxAlt} (description_limit)`;
  return null;
}

function redactSettings(settings: Record<string, unknown>): Record<string, unknown> {
  // instance, visibility, language, content warning, limits: nothing secret
  return { ...settings };
}

export const mastodonPublisher: PublisherModule = {
  platform: 'mastodon',
  parseSettings,
  parseCredentials,
  redactSettings,
  checkText,
  media: MASTODON_MEDIA,
  threads: true,
  canLookUp: false,
  // Mastodon honours Idempotency-Key: a resend with the same key cannot post twice
  defaultOnUnknown: 'retry',
  /** Mastodon's documented limits: 300 statuses per 3 hours per account, 300 API calls per 5 minutes */
  rateLimits: () => ({ posts: { limit: 300, windowMs: 3 * HOUR }, requests: { limit: 300, windowMs: 5 * MINUTE } }),

  async verify(settingsIn, credentialsIn, options) {
    const settings = parseSettings(settingsIn);
    if (credentialsIn === null) throw new SettingsError('mastodon channel needs credentials with an access_token');
    const { access_token: token } = parseCredentials(credentialsIn);
    const instance = new URL(settings.instance);
    const where = `instance ${instance.host}`;
    const client = createHttpClient({ timeoutMs: options.timeoutMs, concurrency: 1, allowPrivateNetwork: options.allowPrivateNetwork === true });
    try {
      let answer: HttpResponse;
      try {
        answer = await client.request({
          method: 'GET',
          url: new URL('/api/v1/accounts/verify_credentials', instance),
          headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
          signal: new AbortController().signal,
          allowPrivateNetwork: settings.allow_private_network === true,
        });
      } catch (e) {
        if (!(e instanceof HttpSendFailure)) throw e;
        const failure = sendFailure('mastodon', e, where, options.timeoutMs);
        throw e.addressRefused ? new SettingsError(failure.message) : failure;
      }
      const { status } = answer;
      const error = () => apiError(answer, token);
      if (status === 200) {
        const json = answer.json();
        const username = typeof json === 'object' && json !== null ? (json as Record<string, unknown>)['username'] : undefined;
        if (typeof username !== 'string' || username === '') throw new Error(`mastodon ${where}: verify_credentials answered without a username`);
        return { account: `@${username}@${instance.host}` };
      }
      if (status === 403 && SCOPE_ERROR.test(error())) {
        // a token of write scopes only (write:statuses, write:media): verify_credentials
        // needs read:accounts (or `profile`, Mastodon 4.3+); the instance knew the token
        // (an unknown one is a 401), so it is accepted without the account's name
        return { account: `a token of ${instance.host} without read:accounts or profile (the account's name cannot be read)` };
      }
      const refused = credentialsRefusal(answer, token, where);
      if (refused !== null) throw refused;
      throw new Error(`mastodon ${where}: verify_credentials answered HTTP ${status}: ${error()}`);
    } finally {
      await client.close();
    }
  },

  createPublisher(options: PublisherOptions): Publisher {
    // one client (keep-alive pools) for every Mastodon channel this worker publishes to
    const client: HttpClient = createHttpClient({
      timeoutMs: options.timeoutMs,
      concurrency: options.concurrency,
      allowPrivateNetwork: options.allowPrivateNetwork === true,
    });
    return {
      async publish(request: PublishRequest) {
        const channel = request.channel;
        let settings: MastodonSettings;
        try {
          settings = parseSettings(channel.settings);
        } catch (e) {
          throw new PermanentPublishError(`channel ${channel.name}: ${(e as Error).message}`);
        }
        const instance = new URL(settings.instance);
        const where = `channel ${channel.name} (${instance.host})`;
        if (request.credentials === null) {
          throw new CredentialsRejectedError(`mastodon ${where} has no credentials: give it an access_token`);
        }
        let token: string;
        try {
          token = parseCredentials({ ...request.credentials }).access_token;
        } catch (e) {
          throw new CredentialsRejectedError(`mastodon ${where}: ${(e as Error).message}`);
        }
        // a status of images alone may have no text (Mastodon needs text or media)
        const tooLong = checkText(request.text, channel.settings, request.images.length);
        if (tooLong !== null) throw new PermanentPublishError(`mastodon ${where}: ${tooLong}`);
        if (request.images.length > MASTODON_MEDIA.maxImages) {
          throw new PermanentPublishError(`mastodon ${where}: ${request.images.length} images; a status takes at most ${MASTODON_MEDIA.maxImages}`);
        }
        for (const [index, image] of request.images.entries()) {
          const problem = imageProblem(image.bytes.length, image.alt, settings);
          if (problem !== null) throw new PermanentPublishError(`mastodon ${where}: image ${index + 1} of ${request.images.length} (${image.filename}) ${problem}`);
        }
        let inReplyTo: string | null = null;
        if (request.replyTo !== null) {
          inReplyTo = request.replyTo.parent.externalId;
          if (inReplyTo === null || inReplyTo === '') {
            throw new PermanentPublishError(`mastodon ${where}: part ${request.part.index + 1} of ${request.part.count} replies to a part without a status id`);
          }
        }

        // the images first (each attempt uploads them again: see mastodon-media.ts)
        const mediaIds =
          request.images.length === 0
            ? []
            : await uploadImages(
                {
                  client,
                  instance,
                  token,
                  where,
                  allowPrivateNetwork: settings.allow_private_network === true,
                  signal: request.signal,
                  timeoutMs: options.timeoutMs,
                },
                request.images,
              );

        const body: Record<string, unknown> = { status: request.text };
        if (mediaIds.length > 0) body['media_ids'] = mediaIds;
        if (inReplyTo !== null) body['in_reply_to_id'] = inReplyTo;
        if (settings.visibility !== undefined) body['visibility'] = settings.visibility;
        if (settings.language !== undefined) body['language'] = settings.language;
        if (settings.spoiler_text !== undefined) {
          body['spoiler_text'] = settings.spoiler_text;
          body['sensitive'] = true;
        }
        let answer: HttpResponse;
        try {
          answer = await client.request({
            method: 'POST',
            url: new URL('/api/v1/statuses', instance),
            headers: {
              authorization: `Bearer ${token}`,
              'content-type': 'application/json',
              accept: 'application/json',
              'idempotency-key': request.idempotencyKey,
            },
            body: JSON.stringify(body),
            signal: request.signal,
            allowPrivateNetwork: settings.allow_private_network === true,
          });
        } catch (e) {
          if (e instanceof HttpSendFailure) throw sendFailure('mastodon', e, where, options.timeoutMs);
          throw e;
        }

        const { status } = answer;
        const error = () => apiError(answer, token);
        if (status >= 200 && status < 300) {
          const json = answer.json();
          const o = typeof json === 'object' && json !== null ? (json as Record<string, unknown>) : {};
          const id = o['id'];
          if ((typeof id !== 'string' && typeof id !== 'number') || String(id) === '') {
            // the instance took the request and said something else: it may have posted
            throw new RetryablePublishError(`mastodon ${where}: HTTP ${status} without a status id (${answerExcerpt(answer.text()) || 'empty answer'})`, null, true);
          }
          const url = typeof o['url'] === 'string' ? o['url'] : typeof o['uri'] === 'string' ? o['uri'] : null;
          return { externalId: String(id).slice(0, 500), externalUrl: url === null ? null : url.slice(0, 2000) };
        }
        const refused = credentialsRefusal(answer, token, where);
        if (refused !== null) throw refused;
        if (status === 429) {
          throw new RetryablePublishError(`mastodon ${where}: rate limited (HTTP 429)`, retryAfterMs(answer.headers), false, true);
        }
        if (status === 408) throw new RetryablePublishError(`mastodon ${where}: HTTP 408`, retryAfterMs(answer.headers), false);
        if (status >= 500) {
          // it may have posted; a resend with the same Idempotency-Key is safe
          // X-RateLimit-Reset comes on every answer and names the end of the rate window
          // (hours away): after a 5xx that may have posted, the resend must come while
          // Mastodon still remembers the key, so only an explicit Retry-After counts here
          throw new RetryablePublishError(`mastodon ${where}: HTTP ${status}`, retryAfterMs({ 'retry-after': answer.headers['retry-after'] }), true);
        }
        if (status >= 300 && status < 400) {
          throw new PermanentPublishError(`mastodon ${where}: HTTP ${status} redirect (redirects are not followed; check the instance URL)`);
        }
        const excerpt = error();
        throw new PermanentPublishError(`mastodon ${where}: HTTP ${status}${excerpt === '' ? '' : `: ${excerpt}`}`);
      },
      async close() {
        await client.close();
      },
    };
  },
};
