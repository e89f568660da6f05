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
import { DAY } from '../ratelimits/units.ts';

/**
 * `linkedin`: a text post for a member or an organization through LinkedIn's versioned
 * Posts API (learn.microsoft.com/linkedin/marketing/community-management/shares/posts-api).
 *
 * - `POST {api_url}/rest/posts` with `Authorization: Bearer <access_token>`,
 *   `LinkedIn-Version: <YYYYMM>` (the channel's `linkedin_version`; versioned APIs refuse
 *   a request without it) and `X-Restli-Protocol-Version: 2.0.0`, and a JSON body:
 *   `author`, `commentary`, `visibility`, `distribution` (main feed, no targeting),
 *   `lifecycleState: PUBLISHED`, `isReshareDisabledByAuthor: false`.
 * - LinkedIn answers 201 Created with an empty body and the new post's URN
 *   (`urn:li:share:…` or `urn:li:ugcPost:…`) in the `x-restli-id` header: that URN is
 *   the external id, and https://www.linkedin.com/feed/update/{urn}/ the external URL.
 * - `commentary` is in LinkedIn's "little" text format, where `\ | { } @ [ ] ( ) < > # * _ ~`
 *   are markup (mentions, hashtags templates...): an unescaped one can make LinkedIn cut
 *   the published text at it. Each is escaped with a backslash, except inside http(s)
 *   URLs (so links stay links) and a `#` that starts a hashtag (so hashtags stay hashtags).
 * - No protection against a double post exists: the Posts API takes no idempotency key
 *   and nothing looks a post up by a key of ours. LinkedIn channels therefore default to
 *   `--on-unknown hold` and offer no `check`.
 * - Answers, as the API documents them:
 *   - 401 (token invalid, expired or revoked) and 403 (the token lacks
 *     `w_member_social` / `w_organization_social`, or is not allowed to post as this
 *     author): every post of the channel would meet it, so the credentials are refused
 *     and the channel waits for an operator;
 *   - 426 (the `LinkedIn-Version` is not supported, typically sunset): permanent, naming
 *     `linkedin_version`, which the operator must raise;
 *   - 429 (the daily application or member limit, or infrastructure protection): not
 *     posted, retried after `Retry-After` when LinkedIn sends one;
 *   - 5xx, a 2xx without a post URN, and a request that was sent and then timed out or
 *     was cut: maybe delivered;
 *   - redirects are not followed (permanent: fix `api_url`); 400, 422 and other errors
 *     are permanent with a short redacted excerpt.
 * - Text: LinkedIn takes at most 3,000 characters of commentary. They are counted as
 *   UTF-16 code units (JavaScript's length) of the text as written, never fewer than
 *   LinkedIn counts.
 * - SSRF protection (as for webhooks): `api_url` defaults to https://api.linkedin.com;
 *   any other must be https://, http:// only with `allow_private_network` (a test or an
 *   in-house proxy), which also lets the channel reach loopback and private addresses.
 * - The access token is a credential: it is only ever put in the Authorization header.
 *   Errors name the channel and the API's host; an answer appears only as a short excerpt
 *   with the token and credential-looking values replaced. The settings hold no secret.
 */

export const DEFAULT_API_URL = 'https://api.linkedin.com';
/** a version the Marketing versioning page documents as current (supported a year from its release) */
export const DEFAULT_LINKEDIN_VERSION = '202603';
/** LinkedIn's limit on a post's commentary */
export const MAX_TEXT_CHARACTERS = 3_000;

const VISIBILITIES = ['PUBLIC', 'CONNECTIONS'] as const;
const AUTHOR = /^urn:li:(?:person|organization):[A-Za-z0-9_-]{1,100}$/;
/** what x-restli-id holds after a create: a share or ugcPost URN */
const POST_URN = /^urn:li:[A-Za-z]{1,40}:[A-Za-z0-9_-]{1,100}$/;


const settingsSchema = v.pipe(
  v.object(
    {
      author: v.pipe(
        v.string('linkedin channel needs an author (urn:li:person:… or urn:li:organization:…)'),
        v.regex(AUTHOR, 'linkedin author must be a member or organization URN like urn:li:person:abc123 or urn:li:organization:12345'),
      ),
      visibility: v.optional(v.picklist(VISIBILITIES, 'linkedin visibility must be PUBLIC or CONNECTIONS')),
      linkedin_version: v.optional(
        v.pipe(
          v.string('linkedin linkedin_version must be a version like 202603 (YYYYMM)'),
          v.regex(/^20\d{2}(?:0[1-9]|1[0-2])$/, 'linkedin linkedin_version must be a version like 202603 (YYYYMM)'),
        ),
      ),
      api_url: v.optional(
        v.pipe(
          v.string('linkedin api_url must be a URL like https://api.linkedin.com'),
          v.check((s) => apiUrlProblem('linkedin', s, DEFAULT_API_URL) === null, (issue) => apiUrlProblem('linkedin', issue.input, DEFAULT_API_URL) ?? 'linkedin api_url is invalid'),
        ),
      ),
      allow_private_network: v.optional(v.boolean('linkedin allow_private_network must be true or false')),
    },
    'linkedin channel needs an author (urn:li:person:… or urn:li:organization:…)',
  ),
  v.check(
    (s) => s.api_url === undefined || new URL(s.api_url).protocol === 'https:' || s.allow_private_network === true,
    'linkedin api_url must be https:// (http:// only with allow_private_network)',
  ),
);

type LinkedInSettings = v.InferOutput<typeof settingsSchema>;

// the messages name the field, never its value
const credentialsSchema = v.object(
  {
    access_token: v.pipe(
      v.string('linkedin credentials need an access_token (a string)'),
      v.minLength(1, 'linkedin access_token must not be empty'),
      v.regex(/^[\x21-\x7e]+$/, 'linkedin access_token must be printable ASCII without spaces'),
    ),
  },
  'linkedin credentials need an access_token',
);

type LinkedInCredentials = v.InferOutput<typeof credentialsSchema>;

function parseSettings(settings: Record<string, unknown>): LinkedInSettings {
  return parseWith(settingsSchema, settings);
}

function parseCredentials(credentials: Record<string, unknown>): LinkedInCredentials {
  return parseWith(credentialsSchema, credentials);
}

/** Why this text cannot go to a LinkedIn channel, or null when it can. */
function checkText(text: string): string | null {
  if (text.trim() === '') return 'text is empty (LinkedIn needs commentary for a text post)';
  if (text.length > MAX_TEXT_CHARACTERS) {
    return `text is ${text.length} characters; LinkedIn takes at most ${MAX_TEXT_CHARACTERS} characters of commentary`;
  }
  return null;
}

function redactSettings(settings: Record<string, unknown>): Record<string, unknown> {
  // author, visibility, version, API URL, flags: nothing secret
  return { ...settings };
}

/** the little text format's reserved characters */
const RESERVED = /[\\|{}@[\]()<>#*_~]/g;
/** an http(s) URL, up to a space: left as it is so that LinkedIn still links it */
const URL_IN_TEXT = /https?:\/\/[^\s]+/gi;

function escapePlain(text: string): string {
  return text.replace(RESERVED, (c, offset: number, whole: string) => {
    // `#tag` (after a start or a non-word character) stays a hashtag
    if (c === '#' && /^[\p{L}\p{N}]/u.test(whole.slice(offset + 1, offset + 2)) && !/[\p{L}\p{N}_]/u.test(whole.slice(offset - 1, offset))) return c;
    return `\\${c}`;
  });
}

/**
 * A plain text as LinkedIn's "little" text format shows it as written: every reserved
 * character backslash-escaped, except in http(s) URLs and a `#` that starts a hashtag.
 */
export function escapeLittleText(text: string): string {
  let out = '';
  let last = 0;
  for (const match of text.matchAll(URL_IN_TEXT)) {
    out += escapePlain(text.slice(last, match.index)) + match[0];
    last = match.index + match[0].length;
  }
  return out + escapePlain(text.slice(last));
}

/** `{api_url}{path}`, keeping a path prefix of api_url (a proxy) */
function apiPath(apiUrl: URL, path: string): URL {
  return new URL(`${apiUrl.href.replace(/\/+$/, '')}${path}`);
}


/** The API's `message` (or the body) as a short one-line excerpt, without the token. */
function apiError(answer: HttpResponse, token: string): string {
  const json = answer.json();
  const field = typeof json === 'object' && json !== null ? (json as Record<string, unknown>)['message'] : undefined;
  const error = typeof field === 'string' && field !== '' ? field : answer.text();
  return answerExcerpt(token === '' ? error : error.split(token).join('***'));
}


const withExcerpt = (excerpt: string) => (excerpt === '' ? '' : `: ${excerpt}`);

export const linkedinPublisher: PublisherModule = {
  platform: 'linkedin',
  parseSettings,
  parseCredentials,
  redactSettings,
  checkText,
  canLookUp: false,
  // no idempotency key, no look-up: a resend after an unknown outcome could post twice
  defaultOnUnknown: 'hold',
  /** LinkedIn's posts API: 150 member posts a day (its daily member limit; the application's, 100,000, is left to the app) */
  rateLimits: () => ({ posts: { limit: 150, windowMs: DAY } }),

  async verify(settingsIn, credentialsIn, options) {
    const settings = parseSettings(settingsIn);
    if (credentialsIn === null) throw new SettingsError('linkedin channel needs credentials with an access_token');
    const { access_token: token } = parseCredentials(credentialsIn);
    const apiUrl = new URL(settings.api_url ?? DEFAULT_API_URL);
    const where = `API ${apiUrl.host}`;
    const client = createHttpClient({ timeoutMs: options.timeoutMs, concurrency: 1, allowPrivateNetwork: options.allowPrivateNetwork === true });
    try {
      let answer: HttpResponse;
      try {
        answer = await client.request({
          method: 'GET',
          url: apiPath(apiUrl, '/v2/userinfo'),
          headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
          signal: new AbortController().signal,
          allowPrivateNetwork: settings.allow_private_network === true,
        });
      } catch (e) {
        if (!(e instanceof HttpSendFailure)) throw e;
        const failure = sendFailure('linkedin', e, where, options.timeoutMs);
        throw e.addressRefused ? new SettingsError(failure.message) : failure;
      }
      const { status } = answer;
      if (status === 401) throw new CredentialsRejectedError(`linkedin ${where} refused the access token (HTTP 401${withExcerpt(apiError(answer, token))})`);
      if (status === 429) throw new Error(`linkedin ${where}: userinfo is rate limited (HTTP 429); try again later`);
      if (status !== 200) throw new Error(`linkedin ${where}: userinfo answered HTTP ${status}${withExcerpt(apiError(answer, token))}`);
      const json = answer.json();
      const o = typeof json === 'object' && json !== null ? (json as Record<string, unknown>) : {};
      const name = o['name'];
      const sub = o['sub'];
      if (typeof name === 'string' && name.trim() !== '') return { account: answerExcerpt(name, 80) };
      if (typeof sub === 'string' && sub !== '') return { account: answerExcerpt(sub, 80) };
      throw new Error(`linkedin ${where}: userinfo answered without a name or sub`);
    } finally {
      await client.close();
    }
  },

  createPublisher(options: PublisherOptions): Publisher {
    // one client (keep-alive pools) for every LinkedIn channel this worker publishes to
    const client: HttpClient = createHttpClient({
      timeoutMs: options.timeoutMs,
      concurrency: options.concurrency,
      allowPrivateNetwork: options.allowPrivateNetwork === true,
    });
    return {
      async publish(request: PublishRequest) {
        const channel = request.channel;
        let settings: LinkedInSettings;
        try {
          settings = parseSettings(channel.settings);
        } catch (e) {
          throw new PermanentPublishError(`channel ${channel.name}: ${(e as Error).message}`);
        }
        const apiUrl = new URL(settings.api_url ?? DEFAULT_API_URL);
        const where = `channel ${channel.name} (${apiUrl.host})`;
        if (request.credentials === null) {
          throw new CredentialsRejectedError(`linkedin ${where} has no credentials: give it an access_token`);
        }
        let token: string;
        try {
          token = parseCredentials({ ...request.credentials }).access_token;
        } catch (e) {
          throw new CredentialsRejectedError(`linkedin ${where}: ${(e as Error).message}`);
        }
        const refused = checkText(request.text);
        if (refused !== null) throw new PermanentPublishError(`linkedin ${where}: ${refused}`);

        const version = settings.linkedin_version ?? DEFAULT_LINKEDIN_VERSION;
        const body = {
          author: settings.author,
          commentary: escapeLittleText(request.text),
          visibility: settings.visibility ?? 'PUBLIC',
          distribution: { feedDistribution: 'MAIN_FEED', targetEntities: [], thirdPartyDistributionChannels: [] },
          lifecycleState: 'PUBLISHED',
          isReshareDisabledByAuthor: false,
        };
        let answer: HttpResponse;
        try {
          answer = await client.request({
            method: 'POST',
            url: apiPath(apiUrl, '/rest/posts'),
            headers: {
              authorization: `Bearer ${token}`,
              'content-type': 'application/json',
              accept: 'application/json',
              'linkedin-version': version,
              'x-restli-protocol-version': '2.0.0',
            },
            body: JSON.stringify(body),
            signal: request.signal,
            allowPrivateNetwork: settings.allow_private_network === true,
          });
        } catch (e) {
          if (e instanceof HttpSendFailure) throw sendFailure('linkedin', e, where, options.timeoutMs);
          throw e;
        }

        const { status } = answer;
        const error = () => apiError(answer, token);
        if (status >= 200 && status < 300) {
          const id = answer.headers['x-restli-id'];
          const urn = typeof id === 'string' ? id.trim() : '';
          if (!POST_URN.test(urn)) {
            // LinkedIn took the request and did not name the post: it may have posted
            throw new RetryablePublishError(`linkedin ${where}: HTTP ${status} without a post URN in x-restli-id`, null, true);
          }
          return { externalId: urn, externalUrl: `https://www.linkedin.com/feed/update/${urn}/` };
        }
        if (status === 401) throw new CredentialsRejectedError(`linkedin ${where} refused the access token (HTTP 401${withExcerpt(error())})`);
        if (status === 403) {
          const scope = settings.author.startsWith('urn:li:organization:') ? 'w_organization_social' : 'w_member_social';
          throw new CredentialsRejectedError(`linkedin ${where}: the access token may not post as ${settings.author} (HTTP 403, needs ${scope}${withExcerpt(error())})`);
        }
        if (status === 426) {
          throw new PermanentPublishError(`linkedin ${where}: LinkedIn no longer supports linkedin_version ${version} (HTTP 426); set a current linkedin_version on the channel`);
        }
        if (status === 429) throw new RetryablePublishError(`linkedin ${where}: rate limited (HTTP 429)`, retryAfterMs(answer.headers), false, true);
        if (status >= 500) {
          // LinkedIn may have posted it before failing; nothing makes a resend safe
          throw new RetryablePublishError(`linkedin ${where}: HTTP ${status}`, retryAfterMs(answer.headers), true);
        }
        if (status >= 300 && status < 400) {
          throw new PermanentPublishError(`linkedin ${where}: HTTP ${status} redirect (redirects are not followed; check api_url)`);
        }
        throw new PermanentPublishError(`linkedin ${where}: HTTP ${status}${withExcerpt(error())}`);
      },
      async close() {
        await client.close();
      },
    };
  },
};
