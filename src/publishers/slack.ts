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
import { answerExcerpt } from './redact.ts';
import { apiUrlProblem, retryAfterMs, sendFailure } from './network.ts';
import { SECOND } from '../ratelimits/units.ts';

/**
 * `slack`: posts a message to a Slack conversation with a bot token through the Web API
 * (https://docs.slack.dev/reference/methods/chat.postMessage).
 *
 * - `POST {api_url}/chat.postMessage` with `Authorization: Bearer <bot_token>` and a JSON
 *   body (`Content-Type: application/json; charset=utf-8`): `channel`, `text`, and
 *   `unfurl_links` when the channel's settings say.
 * - Slack answers HTTP 200 with `{ ok: true, channel, ts, message }` or
 *   `{ ok: false, error }`. The external id is `<channel id>:<ts>` (a message's `ts` is
 *   unique within its conversation); the external URL comes from a second call,
 *   `GET {api_url}/chat.getPermalink?channel=…&message_ts=…`. That call only decorates a
 *   post already made: when it fails in any way the post is published with no URL, never
 *   failed or retried (a retry would post it a second time).
 * - No protection against a double post exists: chat.postMessage takes no idempotency
 *   key and nothing looks a message up by a key of ours. Slack channels therefore
 *   default to `--on-unknown hold` and offer no `check`.
 * - Answers, as the Web API documents them:
 *   - `ok: false` with an error about the token (`invalid_auth`, `not_authed`,
 *     `account_inactive`, `token_revoked`, `token_expired`, `no_permission`,
 *     `missing_scope`, ...) or about the conversation (`not_in_channel`,
 *     `channel_not_found`, `is_archived`, `restricted_action`...): every post of the
 *     channel would meet it, so the credentials are refused and the channel waits for an
 *     operator (a new token, an invitation of the app to the conversation);
 *   - `ok: false` with `ratelimited` / `rate_limited`: not posted, retried later;
 *   - `ok: false` with `internal_error`, `fatal_error` or `service_unavailable`: Slack
 *     says part of the operation may have succeeded: maybe delivered;
 *   - `ok: false` with `request_timeout` (the body arrived cut): not posted, retried;
 *   - any other `ok: false` (`msg_too_long`, `no_text`, `invalid_blocks`,
 *     `invalid_arguments`, ...): permanent. The error code is always in the message;
 *   - HTTP 429: rate limited, not posted; retried after `Retry-After` (seconds);
 *   - HTTP 5xx, a 200 that is not the documented JSON (no `ts`), and a request that was
 *     sent and then timed out or was cut: maybe delivered;
 *   - redirects are not followed (permanent: fix `api_url`); other HTTP errors are
 *     permanent with a short redacted excerpt.
 * - Text: Slack truncates a `text` longer than 40,000 characters, so a longer one is
 *   refused when scheduled. Characters are counted as UTF-16 code units (JavaScript's
 *   length), never fewer than Slack counts, so an accepted text is never cut.
 * - SSRF protection (as for webhooks): `api_url` defaults to https://slack.com/api; any
 *   other must be https://, http:// only with `allow_private_network` (a test or an
 *   in-house proxy), which also lets the channel reach loopback and private addresses.
 * - The bot token is a credential: it is only ever put in the Authorization header.
 *   Errors name the channel and the API's host; an answer appears only as its error code
 *   or a short excerpt with the token and credential-looking values replaced. The
 *   settings hold no secret and are shown as they are.
 */

export const DEFAULT_API_URL = 'https://slack.com/api';
/** Slack truncates a message's `text` beyond this many characters */
export const MAX_TEXT_CHARACTERS = 40_000;

/** a conversation id (C… public, G… private, D… direct) or a channel name like #general */
const CHANNEL_ID = /^[CGD][A-Z0-9]{2,}$/;
const CHANNEL_NAME = /^#[\p{Ll}\p{Lo}\p{N}_-][\p{Ll}\p{Lo}\p{N}._-]{0,79}$/u;


const settingsSchema = v.pipe(
  v.object(
    {
      channel: v.pipe(
        v.string('slack channel needs a channel (an id like C0123ABCD or a name like #general)'),
        v.check(
          (s) => CHANNEL_ID.test(s) || CHANNEL_NAME.test(s),
          'slack channel must be a conversation id like C0123ABCD or a channel name like #general',
        ),
      ),
      api_url: v.optional(
        v.pipe(
          v.string('slack api_url must be a URL like https://slack.com/api'),
          v.check((s) => apiUrlProblem('slack', s, DEFAULT_API_URL) === null, (issue) => apiUrlProblem('slack', issue.input, DEFAULT_API_URL) ?? 'slack api_url is invalid'),
        ),
      ),
      unfurl_links: v.optional(v.boolean('slack unfurl_links must be true or false')),
      allow_private_network: v.optional(v.boolean('slack allow_private_network must be true or false')),
    },
    'slack channel needs a channel (an id like C0123ABCD or a name like #general)',
  ),
  v.check(
    (s) => s.api_url === undefined || new URL(s.api_url).protocol === 'https:' || s.allow_private_network === true,
    'slack api_url must be https:// (http:// only with allow_private_network)',
  ),
);

type SlackSettings = v.InferOutput<typeof settingsSchema>;

// the messages name the field, never its value
const credentialsSchema = v.object(
  {
    bot_token: v.pipe(
      v.string('slack credentials need a bot_token (a string)'),
      v.minLength(1, 'slack bot_token must not be empty'),
      v.regex(/^[\x21-\x7e]+$/, 'slack bot_token must be printable ASCII without spaces'),
      v.check((s) => s.startsWith('xoxb-'), 'slack bot_token must be a bot token (it starts with xoxb-)'),
    ),
  },
  'slack credentials need a bot_token',
);

type SlackCredentials = v.InferOutput<typeof credentialsSchema>;

function parseSettings(settings: Record<string, unknown>): SlackSettings {
  return parseWith(settingsSchema, settings);
}

function parseCredentials(credentials: Record<string, unknown>): SlackCredentials {
  return parseWith(credentialsSchema, credentials);
}

/** Why this text cannot go to a Slack channel, or null when it can. */
function checkText(text: string): string | null {
  if (text.trim() === '') return 'text is empty (Slack refuses a message without text: no_text)';
  if (text.length > MAX_TEXT_CHARACTERS) {
    return `text is ${text.length} characters; Slack truncates a message over ${MAX_TEXT_CHARACTERS} characters, so the channel takes at most ${MAX_TEXT_CHARACTERS}`;
  }
  return null;
}

function redactSettings(settings: Record<string, unknown>): Record<string, unknown> {
  // channel, API URL, flags: nothing secret
  return { ...settings };
}

/** A Web API method's URL under the channel's api_url. */
function methodUrl(apiUrl: URL, method: string): URL {
  return new URL(`${apiUrl.href.replace(/\/+$/, '')}/${method}`);
}


/** The errors that say the token cannot post here: an operator must give the channel another. */
const TOKEN_ERRORS = new Set([
  'not_authed',
  'invalid_auth',
  'account_inactive',
  'token_revoked',
  'token_expired',
  'no_permission',
  'missing_scope',
  'not_allowed_token_type',
  'access_denied',
  'ekm_access_denied',
  'team_access_not_granted',
  'org_login_required',
  'two_factor_setup_required',
  'enterprise_is_restricted',
  'accesslimited',
]);
/** The errors that say the app cannot post to this conversation: an operator must fix the channel. */
const CONVERSATION_ERRORS = new Set([
  'not_in_channel',
  'channel_not_found',
  'is_archived',
  'restricted_action',
  'restricted_action_read_only_channel',
  'restricted_action_thread_only_channel',
  'restricted_action_non_threadable_channel',
]);
const RATE_LIMITED_ERRORS = new Set(['ratelimited', 'rate_limited']);
/** Slack's own words: "it's possible some aspect of the operation succeeded" */
const MAYBE_DONE_ERRORS = new Set(['internal_error', 'fatal_error', 'service_unavailable']);

interface SlackAnswer {
  readonly ok: boolean;
  readonly fields: Record<string, unknown>;
}

/** The documented `{ ok, ... }` object, or null when the answer is something else. */
function slackAnswer(answer: HttpResponse): SlackAnswer | null {
  const json = answer.json();
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return null;
  const fields = json as Record<string, unknown>;
  return typeof fields['ok'] === 'boolean' ? { ok: fields['ok'], fields } : null;
}

/** An error code as it may be shown: a code as it is, anything else as a redacted excerpt without the token. */
function errorCode(fields: Record<string, unknown>, token: string): string {
  const error = fields['error'];
  if (typeof error !== 'string' || error === '') return 'no error code';
  if (/^[a-z0-9_]{1,64}$/.test(error)) return error;
  return answerExcerpt(token === '' ? error : error.split(token).join('***')) || 'unreadable error code';
}

/** `(needed: chat:write)` for missing_scope, when Slack names the scope */
function neededScope(fields: Record<string, unknown>): string {
  const needed = fields['needed'];
  return typeof needed === 'string' && /^[a-z0-9:._,-]{1,200}$/i.test(needed) ? ` (needed: ${needed})` : '';
}

/** A body as a short excerpt without the token. */
function bodyExcerpt(answer: HttpResponse, token: string): string {
  const text = answer.text();
  return answerExcerpt(token === '' ? text : text.split(token).join('***'));
}


/** The error of an `ok: false` answer of chat.postMessage, classified. */
function postError(fields: Record<string, unknown>, answer: HttpResponse, where: string, channel: string, token: string): Error {
  const code = errorCode(fields, token);
  if (TOKEN_ERRORS.has(code)) {
    return new CredentialsRejectedError(`slack ${where} refused the bot token (${code}${neededScope(fields)}); give the channel a working bot token`);
  }
  if (CONVERSATION_ERRORS.has(code)) {
    const hint = code === 'not_in_channel' ? ': invite the app to the conversation' : code === 'channel_not_found' ? ': check the channel setting' : '';
    return new CredentialsRejectedError(`slack ${where} cannot post to ${channel} (${code})${hint}`);
  }
  if (RATE_LIMITED_ERRORS.has(code)) return new RetryablePublishError(`slack ${where}: rate limited (${code})`, retryAfterMs(answer.headers), false, true);
  if (MAYBE_DONE_ERRORS.has(code)) return new RetryablePublishError(`slack ${where}: ${code} (Slack may have posted it)`, retryAfterMs(answer.headers), true);
  if (code === 'request_timeout') return new RetryablePublishError(`slack ${where}: ${code} (the request arrived incomplete)`, null, false);
  return new PermanentPublishError(`slack ${where}: chat.postMessage refused the message (${code})`);
}

/** `{ ok: true, permalink }` of chat.getPermalink, or null on any failure: the post is published either way. */
async function permalink(client: HttpClient, apiUrl: URL, token: string, channel: string, ts: string, settings: SlackSettings, signal: AbortSignal): Promise<string | null> {
  try {
    const url = methodUrl(apiUrl, 'chat.getPermalink');
    url.searchParams.set('channel', channel);
    url.searchParams.set('message_ts', ts);
    const answer = await client.request({
      method: 'GET',
      url,
      headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
      signal,
      allowPrivateNetwork: settings.allow_private_network === true,
    });
    if (answer.status !== 200) return null;
    const parsed = slackAnswer(answer);
    const link = parsed?.ok === true ? parsed.fields['permalink'] : undefined;
    if (typeof link !== 'string' || !URL.canParse(link)) return null;
    const protocol = new URL(link).protocol;
    return protocol === 'https:' || protocol === 'http:' ? link.slice(0, 2000) : null;
  } catch {
    return null;
  }
}

export const slackPublisher: PublisherModule = {
  platform: 'slack',
  parseSettings,
  parseCredentials,
  redactSettings,
  checkText,
  canLookUp: false,
  // no idempotency key, no look-up: a resend after an unknown outcome could post twice
  defaultOnUnknown: 'hold',
  /** Slack's chat.postMessage limit: 1 message a second per channel (one at a time per conversation: chat.postMessage is limited per channel, in bursts too) */
  rateLimits: () => ({ posts: { limit: 1, windowMs: SECOND }, concurrency: 1 }),

  async verify(settingsIn, credentialsIn, options) {
    const settings = parseSettings(settingsIn);
    if (credentialsIn === null) throw new SettingsError('slack channel needs credentials with a bot_token');
    const { bot_token: token } = parseCredentials(credentialsIn);
    const apiUrl = new URL(settings.api_url ?? DEFAULT_API_URL);
    const where = `API ${apiUrl.host}`;
    const client = createHttpClient({ timeoutMs: options.timeoutMs, concurrency: 1, allowPrivateNetwork: options.allowPrivateNetwork === true });
    try {
      let answer: HttpResponse;
      try {
        answer = await client.request({
          method: 'POST',
          url: methodUrl(apiUrl, 'auth.test'),
          headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
          signal: new AbortController().signal,
          allowPrivateNetwork: settings.allow_private_network === true,
        });
      } catch (e) {
        if (!(e instanceof HttpSendFailure)) throw e;
        const failure = sendFailure('slack', e, where, options.timeoutMs);
        throw e.addressRefused ? new SettingsError(failure.message) : failure;
      }
      if (answer.status === 429) throw new Error(`slack ${where}: auth.test is rate limited (HTTP 429); try again later`);
      if (answer.status !== 200) throw new Error(`slack ${where}: auth.test answered HTTP ${answer.status}: ${bodyExcerpt(answer, token)}`);
      const parsed = slackAnswer(answer);
      if (parsed === null) throw new Error(`slack ${where}: auth.test answered something else than the Web API's JSON: ${bodyExcerpt(answer, token)}`);
      if (!parsed.ok) {
        const code = errorCode(parsed.fields, token);
        if (TOKEN_ERRORS.has(code)) throw new CredentialsRejectedError(`slack ${where} refused the bot token (${code})`);
        throw new Error(`slack ${where}: auth.test failed (${code})`);
      }
      const { user, team } = parsed.fields;
      if (typeof user !== 'string' || user === '' || typeof team !== 'string' || team === '') {
        throw new Error(`slack ${where}: auth.test answered without a user and team`);
      }
      return { account: `${answerExcerpt(user, 80)} in ${answerExcerpt(team, 80)}` };
    } finally {
      await client.close();
    }
  },

  createPublisher(options: PublisherOptions): Publisher {
    // one client (keep-alive pools) for every Slack channel this worker publishes to
    const client: HttpClient = createHttpClient({
      timeoutMs: options.timeoutMs,
      concurrency: options.concurrency,
      allowPrivateNetwork: options.allowPrivateNetwork === true,
    });
    return {
      async publish(request: PublishRequest) {
        const channel = request.channel;
        let settings: SlackSettings;
        try {
          settings = parseSettings(channel.settings);
        } catch (e) {
          throw new PermanentPublishError(`channel ${channel.name}: ${(e as Error).message}`);
        }
        const apiUrl = new URL(settings.api_url ?? DEFAULT_API_URL);
        const where = `channel ${channel.name} (${apiUrl.host})`;
        if (request.credentials === null) {
          throw new CredentialsRejectedError(`slack ${where} has no credentials: give it a bot_token`);
        }
        let token: string;
        try {
          token = parseCredentials({ ...request.credentials }).bot_token;
        } catch (e) {
          throw new CredentialsRejectedError(`slack ${where}: ${(e as Error).message}`);
        }
        const refused = checkText(request.text);
        if (refused !== null) throw new PermanentPublishError(`slack ${where}: ${refused}`);

        const body: Record<string, unknown> = { channel: settings.channel, text: request.text };
        if (settings.unfurl_links !== undefined) body['unfurl_links'] = settings.unfurl_links;
        let answer: HttpResponse;
        try {
          answer = await client.request({
            method: 'POST',
            url: methodUrl(apiUrl, 'chat.postMessage'),
            headers: {
              authorization: `Bearer ${token}`,
              'content-type': 'application/json; charset=utf-8',
              accept: 'application/json',
            },
            body: JSON.stringify(body),
            signal: request.signal,
            allowPrivateNetwork: settings.allow_private_network === true,
          });
        } catch (e) {
          if (e instanceof HttpSendFailure) throw sendFailure('slack', e, where, options.timeoutMs);
          throw e;
        }

        const { status } = answer;
        if (status === 429) {
          throw new RetryablePublishError(`slack ${where}: rate limited (HTTP 429)`, retryAfterMs(answer.headers), false, true);
        }
        if (status >= 500) {
          // Slack may have posted it before failing; nothing makes a resend safe
          throw new RetryablePublishError(`slack ${where}: HTTP ${status}`, retryAfterMs(answer.headers), true);
        }
        if (status >= 300 && status < 400) {
          throw new PermanentPublishError(`slack ${where}: HTTP ${status} redirect (redirects are not followed; check api_url)`);
        }
        const parsed = slackAnswer(answer);
        if (parsed !== null && !parsed.ok) throw postError(parsed.fields, answer, where, settings.channel, token);
        if (status === 408) throw new RetryablePublishError(`slack ${where}: HTTP 408`, retryAfterMs(answer.headers), false);
        if (status < 200 || status >= 300) {
          const excerpt = bodyExcerpt(answer, token);
          throw new PermanentPublishError(`slack ${where}: HTTP ${status}${excerpt === '' ? '' : `: ${excerpt}`}`);
        }
        const ts = parsed?.fields['ts'];
        if (parsed === null || typeof ts !== 'string' || !/^\d{1,20}\.\d{1,20}$/.test(ts)) {
          // Slack took the request and answered something else: it may have posted
          const excerpt = bodyExcerpt(answer, token);
          throw new RetryablePublishError(`slack ${where}: HTTP ${status} without a message ts (${excerpt === '' ? 'empty answer' : excerpt})`, null, true);
        }
        // the answer names the conversation by its id, also when the setting is a #name
        const answered = parsed.fields['channel'];
        const channelId = typeof answered === 'string' && CHANNEL_ID.test(answered) ? answered : settings.channel;
        const externalUrl = await permalink(client, apiUrl, token, channelId, ts, settings, request.signal);
        return { externalId: `${channelId}:${ts}`.slice(0, 500), externalUrl };
      },
      async close() {
        await client.close();
      },
    };
  },
};
