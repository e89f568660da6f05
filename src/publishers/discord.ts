import * as v from 'valibot';
import { createHttpClient, HttpSendFailure, type HttpClient, type HttpResponse } from './http-client.ts';
import {
  CredentialsRejectedError,
  PermanentPublishError,
  RetryablePublishError,
  SettingsError,
  type Publisher,
  type PublisherModule,
  type PublisherOptions,
  type PublishRequest,
  parseWith,
} from './publisher.ts';
import { answerExcerpt, withoutSecrets } from './redact.ts';
import { sendFailure } from './network.ts';
import { SECOND, MINUTE } from '../ratelimits/units.ts';

/**
 * `discord`: posts a message to a Discord channel through one of its webhooks
 * (https://discord.com/developers/docs/resources/webhook#execute-webhook).
 *
 * - The credentials are the webhook's URL, `https://discord.com/api/webhooks/{id}/{token}`:
 *   whoever has it can post to the channel, so the whole URL is a secret, sealed with
 *   the channel's credentials. Any https:// host is taken (a compatible or self-hosted
 *   endpoint); http:// only when the channel has `allow_private_network`. Errors and
 *   logs name the channel and the host, never the path (which holds the token).
 * - `POST {webhook_url}?wait=true` (any query of the URL, `thread_id` for instance, is
 *   kept) with a JSON body: `content`, the channel's optional `username` and
 *   `avatar_url`, and `allowed_mentions: { parse: [] }`.
 *   With `wait=true` Discord answers 200 with the message object once the message is
 *   saved; its `id` is the external id and, when the answer names the channel,
 *   `https://discord.com/channels/{guild_id or @me}/{channel_id}/{id}` the external URL.
 *   A 204 (a server that ignored `wait`) is published without an id.
 * - Answers, as the API documents them:
 *   - 401 (Invalid Webhook Token), 403, 404 (Unknown Webhook): the webhook is gone or the
 *     URL is wrong; the credentials are refused and the post waits for an operator.
 *   - 429: rate limited, not processed; retried after the body's `retry_after` (seconds,
 *     fractional), else `X-RateLimit-Reset-After` or `Retry-After`.
 *   - 400 (Invalid Form Body, empty message...) and other 4xx: permanent, with a short
 *     excerpt of the API's `message`, `code` and first field error.
 *   - 5xx, a 200 without a message id, and a request cut or timed out after it was sent:
 *     maybe delivered.
 *   - redirects are not followed: permanent.
 * - Discord webhooks take no idempotency key, and a look-up (`GET .../messages/{id}`)
 *   needs the id an unknown outcome never gave: no `check`; new channels default to
 *   `--on-unknown hold`.
 * - Text: at most 2000 characters (Discord's `content` limit), counted as code points.
 * - SSRF protection as for webhooks: loopback, private and link-local addresses only with
 *   the channel's `allow_private_network` (or the config ALLOW_PRIVATE_NETWORK).
 */

/** Discord's limit on a message's `content` */
export const MAX_CONTENT = 2000;

/** `/webhooks/{id}/{token}` at the end of the path (after `/api` or `/api/v10`) */
const WEBHOOK_PATH = /\/webhooks\/(\d+)\/([A-Za-z0-9_.-]+)\/?$/;

// the messages name the field, never its value
function webhookUrlProblem(value: string): string | null {
  if (!URL.canParse(value)) return 'discord webhook_url must be a URL like https://discord.com/api/webhooks/{id}/{token}';
  const u = new URL(value);
  if (u.protocol !== 'https:' && u.protocol !== 'http:') return 'discord webhook_url must be an https:// URL';
  if (u.username !== '' || u.password !== '') return 'discord webhook_url must not carry a user name or password';
  if (u.hash !== '') return 'discord webhook_url must not have a #fragment';
  if (!WEBHOOK_PATH.test(u.pathname)) return 'discord webhook_url must end with /webhooks/{id}/{token}';
  return null;
}

const credentialsSchema = v.object(
  {
    webhook_url: v.pipe(
      v.string('discord credentials need a webhook_url (a string)'),
      v.minLength(1, 'discord webhook_url must not be empty'),
      v.check((s) => webhookUrlProblem(s) === null, (issue) => webhookUrlProblem(issue.input) ?? 'discord webhook_url is invalid'),
    ),
  },
  'discord credentials need a webhook_url',
);

type DiscordCredentials = v.InferOutput<typeof credentialsSchema>;

function avatarUrlProblem(value: string): string | null {
  if (!URL.canParse(value)) return 'discord avatar_url must be an http(s):// URL';
  const protocol = new URL(value).protocol;
  return protocol === 'https:' || protocol === 'http:' ? null : 'discord avatar_url must be an http(s):// URL';
}

const settingsSchema = v.object(
  {
    // Discord's rules for a webhook's name: 1 to 80 characters, neither "clyde" nor "discord" in it
    username: v.optional(
      v.pipe(
        v.string('discord username must be text'),
        v.check((s) => s.trim() !== '', 'discord username must not be empty'),
        v.maxLength(80, 'discord username must be at most 80 characters'),
        v.check((s) => !/clyde|discord/i.test(s), 'discord username must not contain "clyde" or "discord" (Discord refuses it)'),
      ),
    ),
    avatar_url: v.optional(
      v.pipe(
        v.string('discord avatar_url must be an http(s):// URL'),
        v.check((s) => avatarUrlProblem(s) === null, (issue) => avatarUrlProblem(issue.input) ?? 'discord avatar_url is invalid'),
      ),
    ),
    allow_private_network: v.optional(v.boolean('discord allow_private_network must be true or false')),
  },
  'discord settings must be an object',
);

type DiscordSettings = v.InferOutput<typeof settingsSchema>;

function parseSettings(settings: Record<string, unknown>): DiscordSettings {
  return parseWith(settingsSchema, settings);
}

function parseCredentials(credentials: Record<string, unknown>): DiscordCredentials {
  return parseWith(credentialsSchema, credentials);
}

/** the length of a text in Unicode code points (an emoji made of several counts as several) */
export function codePoints(text: string): number {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    // a high surrogate followed by a low one is one code point
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

/** Why this text cannot go to a Discord channel, or null when it can. */
function checkText(text: string): string | null {
  if (text.trim() === '') return 'text is empty (Discord refuses an empty message)';
  const length = codePoints(text);
  if (length <= MAX_CONTENT) return null;
  return `text is ${length} characters; a Discord message takes at most ${MAX_CONTENT}`;
}

function redactSettings(settings: Record<string, unknown>): Record<string, unknown> {
  // username, avatar, private network: nothing secret (the webhook URL is a credential)
  return { ...settings };
}

/** the webhook's URL and the parts of it that must never be shown */
interface Webhook {
  readonly url: URL;
  readonly host: string;
  /** the token, the path and the whole URL: replaced in anything a server answers */
  readonly secrets: readonly string[];
}

function webhookOf(credentials: DiscordCredentials): Webhook {
  const url = new URL(credentials.webhook_url);
  const token = WEBHOOK_PATH.exec(url.pathname)?.[2] ?? '';
  return { url, host: url.host, secrets: [credentials.webhook_url, url.href, url.pathname, token] };
}

function scrub(text: string, webhook: Webhook): string {
  return withoutSecrets(text, webhook.secrets);
}

/** seconds (maybe fractional) as milliseconds; null when not a non-negative number */
function secondsMs(value: unknown): number | null {
  const n = typeof value === 'number' ? value : typeof value === 'string' && value.trim() !== '' ? Number(value.trim()) : Number.NaN;
  return Number.isFinite(n) && n >= 0 ? Math.ceil(n * 1000) : null;
}

/** How long Discord asks to wait after a 429: the body's retry_after, else its headers. */
function rateLimitWaitMs(answer: HttpResponse, now = Date.now()): number | null {
  const json = answer.json();
  const body = typeof json === 'object' && json !== null ? (json as Record<string, unknown>) : {};
  const fromBody = secondsMs(body['retry_after']);
  if (fromBody !== null) return fromBody;
  const resetAfter = secondsMs(answer.headers['x-ratelimit-reset-after']);
  if (resetAfter !== null) return resetAfter;
  return retryAfterHeaderMs(answer.headers['retry-after'], now);
}

/** Retry-After: seconds or an HTTP date */
function retryAfterHeaderMs(header: string | undefined, now = Date.now()): number | null {
  if (header === undefined || header.trim() === '') return null;
  const seconds = secondsMs(header);
  if (seconds !== null) return seconds;
  const at = Date.parse(header.trim());
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

/** the first `_errors` message of Discord's nested `errors` object, with its field path */
function firstFieldError(errors: unknown, path: readonly string[] = []): string | null {
  if (typeof errors !== 'object' || errors === null || path.length > 8) return null;
  const o = errors as Record<string, unknown>;
  const list = o['_errors'];
  if (Array.isArray(list)) {
    const first: unknown = list[0];
    const message = typeof first === 'object' && first !== null ? (first as Record<string, unknown>)['message'] : undefined;
    if (typeof message === 'string') return path.length === 0 ? message : `${path.join('.')}: ${message}`;
  }
  for (const [key, value] of Object.entries(o)) {
    if (key === '_errors') continue;
    const found = firstFieldError(value, [...path, key]);
    if (found !== null) return found;
  }
  return null;
}

/**
 * Discord's own error sentences that the excerpt's redaction would mangle ("Token" is
 * followed by what looks like its value), shown as they are.
 */
const KNOWN_ERRORS = new Set(
  ['Invalid Webhook Token', 'Unknown Webhook', 'Missing Permissions', 'Missing Access', 'Unknown Channel', 'Invalid Form Body', 'Cannot send an empty message'].map((m) =>
    m.toLowerCase(),
  ),
);

/** The API's error (`message`, `code`, first field error) or the body, as a short excerpt without the webhook's secrets. */
function apiError(answer: HttpResponse, webhook: Webhook): string {
  const json = answer.json();
  if (typeof json === 'object' && json !== null) {
    const o = json as Record<string, unknown>;
    const message = typeof o['message'] === 'string' ? o['message'] : null;
    if (message !== null) {
      const known = KNOWN_ERRORS.has(message.trim().toLowerCase());
      const shown = known ? message.trim() : answerExcerpt(scrub(message, webhook));
      // a number, formatted here: nothing of the answer's text
      const code = typeof o['code'] === 'number' && Number.isSafeInteger(o['code']) ? ` (code ${String(o['code'])})` : '';
      const field = firstFieldError(o['errors']);
      return `${shown}${code}${field === null ? '' : `: ${answerExcerpt(scrub(field, webhook))}`}`;
    }
  }
  // the webhook's own secrets first (whatever their shape), then whatever looks like a credential
  return answerExcerpt(scrub(answer.text(), webhook));
}


function objectOf(json: unknown): Record<string, unknown> {
  return typeof json === 'object' && json !== null && !Array.isArray(json) ? (json as Record<string, unknown>) : {};
}

function snowflake(value: unknown): string | null {
  if (typeof value === 'string' && /^\d{1,30}$/.test(value)) return value;
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return String(value);
  return null;
}

/** the webhook_url's scheme against the channel's allow_private_network */
function schemeProblem(webhook: Webhook, settings: DiscordSettings): string | null {
  if (webhook.url.protocol === 'https:' || settings.allow_private_network === true) return null;
  return 'webhook_url must be https:// (http:// only with allow_private_network)';
}

export const discordPublisher: PublisherModule = {
  platform: 'discord',
  parseSettings,
  parseCredentials,
  redactSettings,
  checkText,
  // a look-up needs the message id, which an unknown outcome never gave
  canLookUp: false,
  // no idempotency key: a resend after an unknown outcome could post twice
  defaultOnUnknown: 'hold',
  /** Discord's webhook limits: 5 requests per 2 seconds per webhook, 30 messages a minute to a channel (one at a time per webhook: parallel executions of one webhook share its bucket and are refused with 429) */
  rateLimits: () => ({ posts: { limit: 30, windowMs: MINUTE }, requests: { limit: 5, windowMs: 2 * SECOND }, concurrency: 1 }),

  async verify(settingsIn, credentialsIn, options) {
    const settings = parseSettings(settingsIn);
    if (credentialsIn === null) throw new SettingsError('discord channel needs credentials with a webhook_url');
    const webhook = webhookOf(parseCredentials(credentialsIn));
    const where = `webhook on ${webhook.host}`;
    const scheme = schemeProblem(webhook, settings);
    if (scheme !== null) throw new SettingsError(`discord ${scheme}`);
    const client = createHttpClient({ timeoutMs: options.timeoutMs, concurrency: 1, allowPrivateNetwork: options.allowPrivateNetwork === true });
    try {
      // Get Webhook with Token: GET the webhook's URL itself (its query is for executing)
      const url = new URL(webhook.url);
      url.search = '';
      let answer: HttpResponse;
      try {
        answer = await client.request({
          method: 'GET',
          url,
          headers: { accept: 'application/json' },
          signal: new AbortController().signal,
          allowPrivateNetwork: settings.allow_private_network === true,
        });
      } catch (e) {
        if (!(e instanceof HttpSendFailure)) throw e;
        const failure = sendFailure('discord', e, where, options.timeoutMs, (text) => scrub(text, webhook));
        throw e.addressRefused ? new SettingsError(failure.message) : failure;
      }
      const { status } = answer;
      if (status === 200) {
        // the webhook object; it holds the token too, which is never shown
        const o = objectOf(answer.json());
        const name = o['name'];
        const channelId = snowflake(o['channel_id']);
        if (typeof name !== 'string' || channelId === null) throw new Error(`discord ${where}: the webhook answered without its name and channel`);
        return { account: `webhook ${answerExcerpt(scrub(name, webhook), 80)} in channel ${channelId}` };
      }
      if (status === 401 || status === 403 || status === 404) {
        throw new CredentialsRejectedError(`discord ${where} refused the webhook URL (HTTP ${status}: ${apiError(answer, webhook)})`);
      }
      throw new Error(`discord ${where}: Get Webhook answered HTTP ${status}: ${apiError(answer, webhook)}`);
    } finally {
      await client.close();
    }
  },

  createPublisher(options: PublisherOptions): Publisher {
    // one client (keep-alive pools) for every Discord channel this worker publishes to
    const client: HttpClient = createHttpClient({
      timeoutMs: options.timeoutMs,
      concurrency: options.concurrency,
      allowPrivateNetwork: options.allowPrivateNetwork === true,
    });
    return {
      async publish(request: PublishRequest) {
        const channel = request.channel;
        let settings: DiscordSettings;
        try {
          settings = parseSettings(channel.settings);
        } catch (e) {
          throw new PermanentPublishError(`channel ${channel.name}: ${(e as Error).message}`);
        }
        if (request.credentials === null) {
          throw new CredentialsRejectedError(`discord channel ${channel.name} has no credentials: give it a webhook_url`);
        }
        let webhook: Webhook;
        try {
          webhook = webhookOf(parseCredentials({ ...request.credentials }));
        } catch (e) {
          throw new CredentialsRejectedError(`discord channel ${channel.name}: ${(e as Error).message}`);
        }
        const where = `channel ${channel.name} (${webhook.host})`;
        const scheme = schemeProblem(webhook, settings);
        if (scheme !== null) throw new CredentialsRejectedError(`discord ${where}: ${scheme}`);
        const refused = checkText(request.text);
        if (refused !== null) throw new PermanentPublishError(`discord ${where}: ${refused}`);

        const body: Record<string, unknown> = { content: request.text };
        if (settings.username !== undefined) body['username'] = settings.username;
        if (settings.avatar_url !== undefined) body['avatar_url'] = settings.avatar_url;
        // no mention in a scheduled text pings anyone (@everyone, @here, roles, users):
        // the text was written long before it goes out, and a ping cannot be taken back
        body['allowed_mentions'] = { parse: [] };
        const url = new URL(webhook.url);
        // wait for the saved message (its id); any other query (thread_id) is kept
        url.searchParams.set('wait', 'true');
        let answer: HttpResponse;
        try {
          answer = await client.request({
            method: 'POST',
            url,
            headers: { 'content-type': 'application/json', accept: 'application/json' },
            body: JSON.stringify(body),
            signal: request.signal,
            allowPrivateNetwork: settings.allow_private_network === true,
          });
        } catch (e) {
          if (e instanceof HttpSendFailure) throw sendFailure('discord', e, where, options.timeoutMs, (text) => scrub(text, webhook));
          throw e;
        }

        const { status } = answer;
        const error = () => apiError(answer, webhook);
        if (status === 204) return { externalId: null, externalUrl: null };
        if (status >= 200 && status < 300) {
          const message = objectOf(answer.json());
          const id = snowflake(message['id']);
          if (id === null) {
            // Discord took the request and said something else: it may have posted
            throw new RetryablePublishError(
              `discord ${where}: HTTP ${status} without a message id (${answerExcerpt(scrub(answer.text(), webhook)) || 'empty answer'})`,
              null,
              true,
            );
          }
          const channelId = snowflake(message['channel_id']);
          const guildId = snowflake(message['guild_id']) ?? '@me';
          return { externalId: id, externalUrl: channelId === null ? null : `https://discord.com/channels/${guildId}/${channelId}/${id}` };
        }
        if (status === 401 || status === 403 || status === 404) {
          throw new CredentialsRejectedError(`discord ${where} refused the webhook URL (HTTP ${status}: ${error()})`);
        }
        if (status === 429) throw new RetryablePublishError(`discord ${where}: rate limited (HTTP 429)`, rateLimitWaitMs(answer), false, true);
        if (status >= 500) {
          // it may have posted, and Discord has no key to make a resend safe
          throw new RetryablePublishError(`discord ${where}: HTTP ${status}`, retryAfterHeaderMs(answer.headers['retry-after']), true);
        }
        if (status >= 300 && status < 400) {
          throw new PermanentPublishError(`discord ${where}: HTTP ${status} redirect (redirects are not followed; check the webhook URL)`);
        }
        const excerpt = error();
        throw new PermanentPublishError(`discord ${where}: HTTP ${status}${excerpt === '' ? '' : `: ${excerpt}`}`);
      },
      async close() {
        await client.close();
      },
    };
  },
};
