import * as v from 'valibot';
import { createHttpClient, HttpSendFailure, type HttpResponse } from './http-client.ts';
import {
  parseWith,
  PermanentPublishError,
  RetryablePublishError,
  type Publisher,
  type PublisherModule,
  type PublisherOptions,
  type PublishRequest,
} from './publisher.ts';
import { answerExcerpt, redactedUrl, urlSecrets, withoutSecrets } from './redact.ts';
import { retryAfterMs, sendFailure } from './network.ts';

/**
 * `webhook`: POSTs the post as JSON {id, channel, text, run_at, attempt} to the
 * channel's URL.
 *
 * - `Idempotency-Key`: unique per post, the same on every retry of it.
 * - When the channel has a secret, two signatures:
 *   - Standard Webhooks (the scheme of Svix, Clerk and others, verified by that
 *     specification's libraries in any language): `webhook-id` (the idempotency key),
 *     `webhook-timestamp` (seconds), `webhook-signature: v1,<base64 HMAC-SHA256 of
 *     "id.timestamp.body">`. A secret `whsec_<base64>` is used as the spec says (its
 *     decoded bytes); any other secret by its UTF-8 bytes (verify with the library's
 *     `format: "raw"`). The timestamp lets a receiver refuse replays.
 *   - `X-Post-Scheduler-Signature: sha256=<hex>`: HMAC-SHA256 of the body alone, kept
 *     for receivers that already check it.
 * - 2xx: published; `id` and `url` of a JSON answer are stored.
 * - 408, 429, 5xx, timeouts, network errors: retryable (429/503 Retry-After honoured).
 *   408 and 429 say the request was not processed. A timeout or a broken connection
 *   after the request was sent, and any 5xx, are unknown outcomes (the receiver may
 *   have processed it: a 503 from a gateway or an overloaded app can come after the
 *   work was done): the channel's policy decides. Exceptions: a channel with
 *   `trust_503` (its receiver's 503 means "not processed") and a channel whose policy
 *   is `retry` (a resend is safe there) treat a 503 as not delivered.
 * - Connections (through the shared HTTP client, http-client.ts): on `retry` channels
 *   (a resend is safe) keep-alive sockets are pooled, and a request that meets a reset
 *   on a reused socket before any answer (the server had closed it while idle) is sent
 *   once more on a fresh connection (Node's `reusedSocket` pattern); idle sockets close
 *   after IDLE_SOCKET_MS. On every other channel each request goes on a new connection:
 *   a pooled socket's reset cannot be told apart from a receiver that acted and then
 *   reset, and there a resend could publish twice. An answer cut before its end is an
 *   unknown outcome, as a broken connection is.
 * - other 4xx, redirects: permanent. An error keeps at most a short excerpt of the
 *   answer, without the URL's parts and the secret (a receiver may echo them) and with
 *   credential-looking values replaced (see redact.ts).
 * - SSRF protection: the address a connection goes to is checked when it connects
 *   (after DNS, so a name that resolves to a private address is caught too). Loopback,
 *   private, link-local (169.254.169.254 included), unique-local and unspecified
 *   addresses are refused (a permanent failure), unless the channel has
 *   `allow_private_network` or the config ALLOW_PRIVATE_NETWORK is true.
 * - The URL is a secret (tokens live in paths and queries): errors name the channel
 *   and the host only, and redactSettings shows scheme://host/***.
 * - `max_length` (optional): a longer text fails at once, before anything is sent.
 *
 * A webhook receiver may or may not honour Idempotency-Key, and there is no standard
 * way to ask it what it has; so a new webhook channel holds posts with an unknown
 * outcome for an operator, unless it is added with `--on-unknown retry` (the receiver
 * drops a second request with the same key).
 */
const settingsSchema = v.object({
  url: v.pipe(
    v.string('webhook channel needs a url'),
    v.check((u) => URL.canParse(u) && /^https?:$/.test(new URL(u).protocol), 'webhook url must be an http:// or https:// URL'),
  ),
  secret: v.optional(v.pipe(v.string('webhook secret must be a string'), v.minLength(1, 'webhook secret must not be empty'))),
  /** the longest text the receiving platform takes (in characters); longer posts fail at once */
  max_length: v.optional(
    v.pipe(v.number('webhook max_length must be a number'), v.integer('webhook max_length must be a whole number'), v.minValue(1, 'webhook max_length must be at least 1')),
  ),
  /** may connect to loopback, private and link-local addresses (off: SSRF protection) */
  allow_private_network: v.optional(v.boolean('webhook allow_private_network must be true or false')),
  /** this receiver's 503 means the request was not processed (off: a 503 may come after it was) */
  trust_503: v.optional(v.boolean('webhook trust_503 must be true or false')),
}, 'webhook channel needs a url');

type WebhookSettings = v.InferOutput<typeof settingsSchema>;

/** A webhook's credentials: its URL (tokens live in paths and queries) and signing secret, nothing else. */
const credentialsSchema = v.strictObject(
  { url: settingsSchema.entries.url, secret: settingsSchema.entries.secret },
  'webhook credentials are a url and an optional secret, nothing else',
);

/** The most of an answer's body that is read; the rest is discarded. */
const MAX_BODY_BYTES = 64 * 1024;

function parseSettings(settings: Record<string, unknown>): WebhookSettings {
  return parseWith(settingsSchema, settings);
}

/** Why this text cannot go to a channel with these settings, or null when it can. */
function checkText(text: string, settings: Record<string, unknown>): string | null {
  const max = settings['max_length'];
  const length = Array.from(text).length; // code points, not UTF-16 units
  return typeof max === 'number' && length > max ? `text is ${length} characters; the channel takes at most ${max}` : null;
}

function redactSettings(settings: Record<string, unknown>): Record<string, unknown> {
  const shown: Record<string, unknown> = { ...settings };
  // the whole URL is a credential (tokens in path or query): scheme and host only
  if ('url' in shown) shown['url'] = typeof shown['url'] === 'string' ? redactedUrl(shown['url']) : '***';
  if ('secret' in shown) shown['secret'] = '***';
  return shown;
}

/**
 * The Standard Webhooks headers (https://www.standardwebhooks.com): the message id is the
 * post's idempotency key (the same on every retry, as the spec asks), signed with the
 * timestamp of this delivery.
 */
export function standardWebhookHeaders(
  createHmac: typeof import('node:crypto').createHmac,
  secret: string,
  id: string,
  body: string,
  now = Date.now(),
): Record<string, string> {
  const key = secret.startsWith('whsec_') ? Buffer.from(secret.slice('whsec_'.length), 'base64') : Buffer.from(secret, 'utf8');
  const timestamp = String(Math.floor(now / 1000));
  const signature = createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64');
  return { 'webhook-id': id, 'webhook-timestamp': timestamp, 'webhook-signature': `v1,${signature}` };
}

export { parseRetryAfter } from './network.ts';

export const webhookPublisher: PublisherModule = {
  platform: 'webhook',
  parseSettings,
  parseCredentials: (credentials) => parseWith(credentialsSchema, credentials),
  redactSettings,
  checkText,
  canLookUp: false,
  defaultOnUnknown: 'hold',
  createPublisher(options: PublisherOptions): Publisher {
    // request-filtering-agent is loaded on the client's first request, so a worker that
    // only writes files does not pay for it
    const client = createHttpClient({ timeoutMs: options.timeoutMs, concurrency: options.concurrency, allowPrivateNetwork: options.allowPrivateNetwork === true });
    let hmac: Promise<typeof import('node:crypto').createHmac> | null = null;
    const loadHmac = () => (hmac ??= import('node:crypto').then((c) => c.createHmac));

    return {
      async publish(request: PublishRequest) {
        let settings: WebhookSettings;
        try {
          // the URL and the signing secret are credentials (sealed); a channel added before
          // they were may still have them in its settings
          const { url: sealedUrl, secret: sealedSecret } = request.credentials ?? {};
          settings = parseSettings({
            ...request.channel.settings,
            ...(sealedUrl === undefined ? {} : { url: sealedUrl }),
            ...(sealedSecret === undefined ? {} : { secret: sealedSecret }),
          });
        } catch (e) {
          throw new PermanentPublishError(`channel ${request.channel.name}: ${(e as Error).message}`);
        }
        const tooLong = checkText(request.text, request.channel.settings);
        if (tooLong !== null) throw new PermanentPublishError(`channel ${request.channel.name}: ${tooLong}`);
        const url = new URL(settings.url);
        // the URL is a secret: errors and logs name the channel and the host only, and
        // what a receiver echoes back loses the URL's parts and the signing secret
        const where = `channel ${request.channel.name} (${url.host})`;
        const secrets = [...urlSecrets(settings.url), ...(settings.secret === undefined ? [] : [settings.secret])];
        const body = JSON.stringify({
          id: request.postId,
          channel: request.channel.name,
          text: request.text,
          run_at: request.runAt.toISOString(),
          attempt: request.attempt,
        });
        const headers: Record<string, string> = { 'content-type': 'application/json', 'idempotency-key': request.idempotencyKey };
        if (settings.secret !== undefined) {
          const createHmac = await loadHmac();
          headers['x-post-scheduler-signature'] = 'sha256=' + createHmac('sha256', settings.secret).update(body).digest('hex');
          Object.assign(headers, standardWebhookHeaders(createHmac, settings.secret, request.idempotencyKey, body));
        }
        // A reset on a reused keep-alive socket is most often a stale socket (the server
        // closed it while idle, and nothing reached it), but it can also follow a request
        // the receiver processed. Only where a resend is safe (`retry`: the receiver
        // honours the key) are sockets pooled and a stale one resent at once; every other
        // channel sends each request on a new connection, so a reset there is never a
        // stale socket and stays what it is, maybe delivered.
        const pooled = request.channel.onUnknown === 'retry';
        let answer: HttpResponse;
        try {
          answer = await client.request({
            method: 'POST',
            url,
            headers,
            body,
            signal: request.signal,
            allowPrivateNetwork: settings.allow_private_network === true,
            connection: pooled ? 'pooled' : 'fresh',
            resendStaleSocket: pooled,
            maxBodyBytes: MAX_BODY_BYTES,
          });
        } catch (e) {
          if (e instanceof HttpSendFailure) throw sendFailure('webhook', e, where, options.timeoutMs, (text) => withoutSecrets(text, secrets));
          throw e;
        }
        const { status } = answer;
        if (status >= 200 && status < 300) {
          let externalId: string | null = null;
          let externalUrl: string | null = null;
          // a 2xx without a JSON body is still published
          const json = answer.json();
          if (typeof json === 'object' && json !== null) {
            const o = json as Record<string, unknown>;
            if (typeof o['id'] === 'string' || typeof o['id'] === 'number') externalId = String(o['id']).slice(0, 500);
            if (typeof o['url'] === 'string') externalUrl = o['url'].slice(0, 2000);
          }
          return { externalId, externalUrl };
        }
        if (status === 408 || status === 429 || status >= 500) {
          const retryAfter = retryAfterMs(answer.headers);
          // 408 and 429 say the request was not processed; any 5xx (a 502 or 504 from a
          // gateway, a 500 after the receiver acted, a 503 from an overloaded app that
          // did the work) may come after it was, unless the channel trusts its 503s or
          // a resend is safe there anyway
          const trusted503 = status === 503 && (settings.trust_503 === true || request.channel.onUnknown === 'retry');
          const maybeDelivered = status >= 500 && !trusted503;
          throw new RetryablePublishError(`webhook ${where}: HTTP ${status}`, retryAfter, maybeDelivered, status === 429);
        }
        if (status >= 300 && status < 400) {
          throw new PermanentPublishError(`webhook ${where}: HTTP ${status} redirect (redirects are not followed; fix the channel url)`);
        }
        const excerpt = answerExcerpt(withoutSecrets(answer.text(), secrets));
        throw new PermanentPublishError(`webhook ${where}: HTTP ${status}${excerpt === '' ? '' : `: ${excerpt}`}`);
      },
      close: () => client.close(),
    };
  },
};
