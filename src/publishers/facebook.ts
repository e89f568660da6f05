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
import { apiUrlProblem, sendFailure } from './network.ts';
import { HOUR } from '../ratelimits/units.ts';

/**
 * `facebook`: publishes a text post on a Facebook Page with a Page access token through
 * the Graph API (developers.facebook.com/docs/pages-api, /docs/graph-api/reference/page/feed).
 *
 * - `POST {api_url}/{graph_version}/{page_id}/feed` with `Authorization: Bearer <token>`
 *   and a JSON body `{ message }`. The token never goes into the URL (URLs end up in
 *   logs and proxies), although the Graph API also takes it as `access_token`.
 * - Success: HTTP 200 with `{ id: "<page id>_<post id>" }`; the external id is that id and
 *   the external URL https://www.facebook.com/<id>.
 * - No protection against a double post exists: the feed edge takes no idempotency key,
 *   and nothing looks a post up by a key of ours. Facebook channels therefore default to
 *   `--on-unknown hold` and offer no `check`.
 * - Errors come as the Graph error object `{ error: { message, type, code,
 *   error_subcode, fbtrace_id } }` (docs: graph-api/guides/error-handling) and are
 *   classified by `code`:
 *   - 190 (access token expired or invalid) and 102 (API session): the token is refused;
 *     10 and 200-299 (permission denied or removed): the token cannot post here. Every
 *     post of the channel would meet them: the credentials are refused and the channel
 *     waits for an operator;
 *   - 368 (temporarily blocked for policy violations): also waits for an operator, with
 *     Facebook's message; a retry loop would only prolong the block;
 *   - 4, 17, 32, 613, 80001 (and 341, application limit): throttled, not posted; retried
 *     after `estimated_time_to_regain_access` (minutes) from `X-Business-Use-Case-Usage`
 *     or `X-App-Usage` when one of them gives it;
 *   - 506 (duplicate post): permanent;
 *   - 1 (unknown) and 2 (service): a temporary problem on Facebook's side that may come
 *     after the post was made: maybe delivered;
 *   - HTTP 5xx without one of the codes above, a 200 without an id, and a request that
 *     was sent and then timed out or was cut: maybe delivered;
 *   - redirects are not followed (permanent: fix `api_url`); any other error is permanent
 *     with the code and a short redacted excerpt of Facebook's message (fbtrace_id kept,
 *     it is what Meta's support asks for).
 * - Text: a Page post's message holds at most 63,206 characters. Characters are counted
 *   as UTF-16 code units (JavaScript's length), never fewer than Facebook counts.
 * - SSRF protection (as for webhooks): `api_url` defaults to https://graph.facebook.com;
 *   any other must be https://, http:// only with `allow_private_network`, which also
 *   lets the channel reach loopback and private addresses.
 * - The token is a credential: only ever in the Authorization header; errors name the
 *   channel and the API's host, and an answer appears only as codes and a short excerpt
 *   with the token and credential-looking values replaced.
 */

export const DEFAULT_API_URL = 'https://graph.facebook.com';
/** a recent Graph API version (released October 2025, available until February 2028) */
export const DEFAULT_GRAPH_VERSION = 'v24.0';
/** the longest message a Page post may hold */
export const MAX_TEXT_CHARACTERS = 63_206;

const PAGE_ID = /^\d{1,32}$/;
const GRAPH_VERSION = /^v\d{1,3}\.\d{1,2}$/;
/** a post id as the feed edge answers it: <page id>_<post id> */
const POST_ID = /^\d{1,32}_\d{1,32}$/;


const settingsSchema = v.pipe(
  v.object(
    {
      page_id: v.pipe(
        v.string('facebook channel needs a page_id (the Page\'s numeric id, as a string)'),
        v.regex(PAGE_ID, 'facebook page_id must be the Page\'s numeric id (digits only)'),
      ),
      graph_version: v.optional(
        v.pipe(v.string('facebook graph_version must be a version like v24.0'), v.regex(GRAPH_VERSION, 'facebook graph_version must be a version like v24.0')),
      ),
      api_url: v.optional(
        v.pipe(
          v.string('facebook api_url must be a URL like https://graph.facebook.com'),
          v.check((s) => apiUrlProblem('facebook', s, DEFAULT_API_URL) === null, (issue) => apiUrlProblem('facebook', issue.input, DEFAULT_API_URL) ?? 'facebook api_url is invalid'),
        ),
      ),
      allow_private_network: v.optional(v.boolean('facebook allow_private_network must be true or false')),
    },
    'facebook channel needs a page_id',
  ),
  v.check(
    (s) => s.api_url === undefined || new URL(s.api_url).protocol === 'https:' || s.allow_private_network === true,
    'facebook api_url must be https:// (http:// only with allow_private_network)',
  ),
);

type FacebookSettings = v.InferOutput<typeof settingsSchema>;

// the messages name the field, never its value
const credentialsSchema = v.object(
  {
    page_access_token: v.pipe(
      v.string('facebook credentials need a page_access_token (a string)'),
      v.minLength(1, 'facebook page_access_token must not be empty'),
      v.regex(/^[\x21-\x7e]+$/, 'facebook page_access_token must be printable ASCII without spaces'),
    ),
  },
  'facebook credentials need a page_access_token',
);

type FacebookCredentials = v.InferOutput<typeof credentialsSchema>;

function parseSettings(settings: Record<string, unknown>): FacebookSettings {
  return parseWith(settingsSchema, settings);
}

function parseCredentials(credentials: Record<string, unknown>): FacebookCredentials {
  return parseWith(credentialsSchema, credentials);
}

/** Why this text cannot go to a Facebook Page, or null when it can. */
function checkText(text: string): string | null {
  if (text.trim() === '') return 'text is empty (a Page post needs a message)';
  if (text.length > MAX_TEXT_CHARACTERS) {
    return `text is ${text.length} characters; a Facebook post holds at most ${MAX_TEXT_CHARACTERS}`;
  }
  return null;
}

function redactSettings(settings: Record<string, unknown>): Record<string, unknown> {
  // page id, version, API URL, flags: nothing secret
  return { ...settings };
}

/** {api_url}/{version}/{path} */
function graphUrl(settings: FacebookSettings, path: string): URL {
  const base = (settings.api_url ?? DEFAULT_API_URL).replace(/\/+$/, '');
  return new URL(`${base}/${settings.graph_version ?? DEFAULT_GRAPH_VERSION}/${path}`);
}

/** the rate-limit codes: throttled, nothing was posted */
const RATE_LIMIT_CODES = new Set([4, 17, 32, 341, 613, 80001]);

/**
 * `estimated_time_to_regain_access` (minutes) from the usage headers, as milliseconds:
 * X-Business-Use-Case-Usage is `{ "<business id>": [{ type, call_count, ...,
 * estimated_time_to_regain_access }] }`; X-App-Usage is one such object. The longest
 * wait given wins; null when none is given or the headers are unreadable.
 */
export function regainAccessMs(headers: HttpResponse['headers']): number | null {
  const minutes: number[] = [];
  const consider = (entry: unknown) => {
    if (typeof entry !== 'object' || entry === null) return;
    const value = (entry as Record<string, unknown>)['estimated_time_to_regain_access'];
    if (typeof value === 'number' && Number.isFinite(value) && value >= 0) minutes.push(value);
  };
  const parse = (name: string): unknown => {
    const raw = headers[name];
    if (typeof raw !== 'string') return null;
    try {
      return JSON.parse(raw) as unknown;
    } catch {
      return null;
    }
  };
  const business = parse('x-business-use-case-usage');
  if (typeof business === 'object' && business !== null) {
    for (const entries of Object.values(business)) {
      if (Array.isArray(entries)) for (const entry of entries) consider(entry);
    }
  }
  consider(parse('x-app-usage'));
  return minutes.length === 0 ? null : Math.round(Math.max(...minutes) * 60_000);
}

interface GraphError {
  readonly code: number | null;
  readonly subcode: number | null;
  readonly type: string | null;
  readonly message: string;
  readonly fbtraceId: string | null;
}

/** The Graph error object of an answer, or null when it has none. */
function graphError(answer: HttpResponse): GraphError | null {
  const json = answer.json();
  if (typeof json !== 'object' || json === null) return null;
  const error = (json as Record<string, unknown>)['error'];
  if (typeof error !== 'object' || error === null || Array.isArray(error)) return null;
  const e = error as Record<string, unknown>;
  const int = (value: unknown) => (typeof value === 'number' && Number.isInteger(value) ? value : null);
  const type = typeof e['type'] === 'string' && /^[A-Za-z0-9_.]{1,64}$/.test(e['type']) ? e['type'] : null;
  const trace = typeof e['fbtrace_id'] === 'string' && /^[A-Za-z0-9_/+=-]{1,64}$/.test(e['fbtrace_id']) ? e['fbtrace_id'] : null;
  return { code: int(e['code']), subcode: int(e['error_subcode']), type, message: typeof e['message'] === 'string' ? e['message'] : '', fbtraceId: trace };
}

/** text without the token, as a short excerpt */
function withoutToken(text: string, token: string): string {
  return answerExcerpt(token === '' ? text : text.split(token).join('***'));
}

/** `code 190/463 OAuthException: <message> (fbtrace_id X)` with the message redacted */
function describe(error: GraphError, token: string): string {
  const code = error.code === null ? 'no code' : `code ${error.code}${error.subcode === null ? '' : `/${error.subcode}`}`;
  const message = withoutToken(error.message, token);
  return `${code}${error.type === null ? '' : ` ${error.type}`}${message === '' ? '' : `: ${message}`}${error.fbtraceId === null ? '' : ` (fbtrace_id ${error.fbtraceId})`}`;
}

function refusesToken(code: number | null): boolean {
  return code === 190 || code === 102 || code === 10 || (code !== null && code >= 200 && code <= 299);
}


/** A failed answer of the feed edge, classified. */
function postError(answer: HttpResponse, where: string, token: string): Error {
  const { status } = answer;
  const error = graphError(answer);
  if (error !== null) {
    const { code } = error;
    const text = describe(error, token);
    if (refusesToken(code)) {
      const what = code === 190 || code === 102 ? 'refused the Page access token' : 'denied the permission to post';
      return new CredentialsRejectedError(`facebook ${where} ${what} (${text}); give the channel a working Page access token`);
    }
    if (code === 368) return new CredentialsRejectedError(`facebook ${where}: the Page is temporarily blocked from posting (${text})`);
    if (code !== null && RATE_LIMIT_CODES.has(code)) {
      return new RetryablePublishError(`facebook ${where}: rate limited (${text})`, regainAccessMs(answer.headers), false, true);
    }
    if (code === 506) return new PermanentPublishError(`facebook ${where}: duplicate post (${text})`);
    if (code === 1 || code === 2) return new RetryablePublishError(`facebook ${where}: HTTP ${status}, ${text} (Facebook may have posted it)`, null, true);
  }
  if (status >= 500) {
    // Facebook may have posted it before failing; nothing makes a resend safe
    return new RetryablePublishError(`facebook ${where}: HTTP ${status}${error === null ? '' : `, ${describe(error, token)}`}`, null, true);
  }
  if (status >= 300 && status < 400) {
    return new PermanentPublishError(`facebook ${where}: HTTP ${status} redirect (redirects are not followed; check api_url)`);
  }
  if (status === 429) return new RetryablePublishError(`facebook ${where}: rate limited (HTTP 429)`, regainAccessMs(answer.headers), false, true);
  const detail = error === null ? withoutToken(answer.text(), token) : describe(error, token);
  return new PermanentPublishError(`facebook ${where}: HTTP ${status}${detail === '' ? '' : `: ${detail}`}`);
}

export const facebookPublisher: PublisherModule = {
  platform: 'facebook',
  parseSettings,
  parseCredentials,
  redactSettings,
  checkText,
  canLookUp: false,
  // no idempotency key, no look-up: a resend after an unknown outcome could post twice
  defaultOnUnknown: 'hold',
  /** Facebook Pages publish no fixed posting limit: 200 calls an hour (the Graph API's per-user application limit) as a conservative default */
  rateLimits: () => ({ posts: { limit: 200, windowMs: HOUR } }),

  async verify(settingsIn, credentialsIn, options) {
    const settings = parseSettings(settingsIn);
    if (credentialsIn === null) throw new SettingsError('facebook channel needs credentials with a page_access_token');
    const { page_access_token: token } = parseCredentials(credentialsIn);
    const url = graphUrl(settings, settings.page_id);
    url.searchParams.set('fields', 'id,name');
    const where = `Graph API ${url.host}`;
    const client = createHttpClient({ timeoutMs: options.timeoutMs, concurrency: 1, allowPrivateNetwork: options.allowPrivateNetwork === true });
    try {
      let answer: HttpResponse;
      try {
        answer = await client.request({
          method: 'GET',
          url,
          headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
          signal: new AbortController().signal,
          allowPrivateNetwork: settings.allow_private_network === true,
        });
      } catch (e) {
        if (!(e instanceof HttpSendFailure)) throw e;
        const failure = sendFailure('facebook', e, where, options.timeoutMs);
        throw e.addressRefused ? new SettingsError(failure.message) : failure;
      }
      if (answer.status !== 200) {
        const error = graphError(answer);
        if (error !== null && refusesToken(error.code)) {
          throw new CredentialsRejectedError(`facebook ${where} refused the Page access token (${describe(error, token)})`);
        }
        const detail = error === null ? withoutToken(answer.text(), token) : describe(error, token);
        throw new Error(`facebook ${where}: reading Page ${settings.page_id} answered HTTP ${answer.status}: ${detail}`);
      }
      const json = answer.json();
      const name = typeof json === 'object' && json !== null ? (json as Record<string, unknown>)['name'] : undefined;
      if (typeof name !== 'string' || name === '') throw new Error(`facebook ${where}: Page ${settings.page_id} answered without a name`);
      return { account: withoutToken(name, token).slice(0, 80) };
    } finally {
      await client.close();
    }
  },

  createPublisher(options: PublisherOptions): Publisher {
    // one client (keep-alive pools) for every Facebook channel this worker publishes to
    const client: HttpClient = createHttpClient({
      timeoutMs: options.timeoutMs,
      concurrency: options.concurrency,
      allowPrivateNetwork: options.allowPrivateNetwork === true,
    });
    return {
      async publish(request: PublishRequest) {
        const channel = request.channel;
        let settings: FacebookSettings;
        try {
          settings = parseSettings(channel.settings);
        } catch (e) {
          throw new PermanentPublishError(`channel ${channel.name}: ${(e as Error).message}`);
        }
        const url = graphUrl(settings, `${settings.page_id}/feed`);
        const where = `channel ${channel.name} (${url.host})`;
        if (request.credentials === null) {
          throw new CredentialsRejectedError(`facebook ${where} has no credentials: give it a page_access_token`);
        }
        let token: string;
        try {
          token = parseCredentials({ ...request.credentials }).page_access_token;
        } catch (e) {
          throw new CredentialsRejectedError(`facebook ${where}: ${(e as Error).message}`);
        }
        const refused = checkText(request.text);
        if (refused !== null) throw new PermanentPublishError(`facebook ${where}: ${refused}`);

        let answer: HttpResponse;
        try {
          answer = await client.request({
            method: 'POST',
            url,
            headers: {
              authorization: `Bearer ${token}`,
              'content-type': 'application/json; charset=utf-8',
              accept: 'application/json',
            },
            body: JSON.stringify({ message: request.text }),
            signal: request.signal,
            allowPrivateNetwork: settings.allow_private_network === true,
          });
        } catch (e) {
          if (e instanceof HttpSendFailure) throw sendFailure('facebook', e, where, options.timeoutMs);
          throw e;
        }

        if (answer.status < 200 || answer.status >= 300 || graphError(answer) !== null) throw postError(answer, where, token);
        const json = answer.json();
        const id = typeof json === 'object' && json !== null ? (json as Record<string, unknown>)['id'] : undefined;
        if (typeof id !== 'string' || !POST_ID.test(id)) {
          // Facebook took the request and answered something else: it may have posted
          const excerpt = withoutToken(answer.text(), token);
          throw new RetryablePublishError(`facebook ${where}: HTTP ${answer.status} without a post id (${excerpt === '' ? 'empty answer' : excerpt})`, null, true);
        }
        return { externalId: id, externalUrl: `https://www.facebook.com/${id}` };
      },
      async close() {
        await client.close();
      },
    };
  },
};
