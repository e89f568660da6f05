import http from 'node:http';
import type https from 'node:https';
import type { Socket } from 'node:net';
import * as v from 'valibot';
import {
  parseWith,
  PermanentPublishError,
  RetryablePublishError,
  type Publisher,
  type PublisherModule,
  type PublisherOptions,
  type PublishRequest,
} from './publisher.ts';
import { answerExcerpt, redactedUrl } from './redact.ts';
import { addressRefused, parseRetryAfter } from './network.ts';

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
 * - Connections: on `retry` channels (a resend is safe) keep-alive sockets are pooled,
 *   and a request that meets a reset on a reused socket before any answer (the server
 *   had closed it while idle) is sent once more on a fresh connection (Node's
 *   `reusedSocket` pattern); idle sockets close after IDLE_SOCKET_MS. On every other
 *   channel each request goes on a new connection: a pooled socket's reset cannot be
 *   told apart from a receiver that acted and then reset, and there a resend could
 *   publish twice.
 * - other 4xx, redirects: permanent. An error keeps at most a short excerpt of the
 *   answer, with credential-looking values replaced (see redact.ts).
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

/**
 * How long a keep-alive socket may sit idle in the pool: below common server idle
 * timeouts (Node 5 s, many proxies 5-60 s), so few requests meet a socket the server
 * already closed. Node's agent also honours a server's `Keep-Alive: timeout=N` hint.
 */
const IDLE_SOCKET_MS = 1_000;

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

/** A reset on a reused socket later than this after the request was written may follow processing. */
const STALE_RESET_MS = 500;

export { parseRetryAfter } from './network.ts';

class WebhookTimeout extends Error {
  override name = 'WebhookTimeout';
}

/**
 * A request that got no answer; `sent`: its body had been handed to the network;
 * `staleSocket`: it went out on a reused keep-alive socket that was reset before any
 * byte of an answer came back (the server had closed the idle connection).
 */
class SendFailure extends Error {
  override name = 'SendFailure';
  constructor(
    readonly reason: Error,
    readonly sent: boolean,
    readonly staleSocket: boolean,
  ) {
    super(reason.message);
  }
}

/** Resets a request meets on a socket the server closed. */
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE']);

/** request-filtering-agent refuses with a plain Error: "DNS lookup <ip>(...) is not allowed. Because, ..." */
function isAddressRefusal(e: Error): boolean {
  return /^DNS lookup .* is not allowed\. Because/.test(e.message);
}

type FilterModule = typeof import('request-filtering-agent');
type Protocol = 'http:' | 'https:';

export const webhookPublisher: PublisherModule = {
  platform: 'webhook',
  parseSettings,
  parseCredentials: (credentials) => parseWith(credentialsSchema, credentials),
  redactSettings,
  checkText,
  canLookUp: false,
  defaultOnUnknown: 'hold',
  createPublisher(options: PublisherOptions): Publisher {
    const allowAll = options.allowPrivateNetwork === true;
    // The agents check the address every connection goes to (request-filtering-agent).
    // It is loaded on a worker's first webhook publish (it loads node:https with it),
    // so a worker that only writes files does not pay for it.
    let filter: Promise<FilterModule> | null = null;
    const loadFilter = () => (filter ??= import('request-filtering-agent'));
    const pooled = new Map<string, http.Agent>();
    /** `fresh`: a one-off connection that is closed after its request */
    const agentFor = async (protocol: Protocol, allowPrivate: boolean, fresh: boolean): Promise<http.Agent> => {
      const key = `${protocol}${allowPrivate ? 'open' : 'guarded'}`;
      const existing = fresh ? undefined : pooled.get(key);
      if (existing !== undefined) return existing;
      const f = await loadFilter();
      const agentOptions = {
        keepAlive: !fresh,
        maxSockets: options.concurrency,
        maxFreeSockets: options.concurrency,
        timeout: IDLE_SOCKET_MS,
        allowPrivateIPAddress: allowPrivate,
        allowMetaIPAddress: allowPrivate,
      };
      const agent = protocol === 'https:' ? new f.RequestFilteringHttpsAgent(agentOptions) : new f.RequestFilteringHttpAgent(agentOptions);
      if (!fresh) pooled.set(key, agent);
      return agent;
    };
    let httpsModule: Promise<typeof https> | null = null;
    const loadHttps = () => (httpsModule ??= import('node:https').then((m) => m.default));
    let hmac: Promise<typeof import('node:crypto').createHmac> | null = null;
    const loadHmac = () => (hmac ??= import('node:crypto').then((c) => c.createHmac));

    const send = async (
      request: PublishRequest,
      settings: WebhookSettings,
      url: URL,
      allowPrivate: boolean,
      fresh: boolean,
    ): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> => {
      const body = JSON.stringify({
        id: request.postId,
        channel: request.channel.name,
        text: request.text,
        run_at: request.runAt.toISOString(),
        attempt: request.attempt,
      });
      const headers: Record<string, string> = {
        'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(body)),
        'idempotency-key': request.idempotencyKey,
        'user-agent': 'post-scheduler',
      };
      if (settings.secret !== undefined) {
        const createHmac = await loadHmac();
        headers['x-post-scheduler-signature'] = 'sha256=' + createHmac('sha256', settings.secret).update(body).digest('hex');
        Object.assign(headers, standardWebhookHeaders(createHmac, settings.secret, request.idempotencyKey, body));
      }
      const protocol: Protocol = url.protocol === 'https:' ? 'https:' : 'http:';
      const agent = await agentFor(protocol, allowPrivate, fresh);
      const transport = protocol === 'https:' ? await loadHttps() : http;
      if (request.signal.aborted) throw new RetryablePublishError(`interrupted (${String(request.signal.reason)})`);
      // A timer and one listener per request, both removed when it settles: composite
      // AbortSignals (AbortSignal.any/timeout) pile up on the worker's long-lived signal.
      return new Promise((resolve, reject) => {
        let answered = false;
        const req = transport.request(url, { method: 'POST', headers, agent }, (res) => {
          answered = true;
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            if (size >= MAX_BODY_BYTES) return;
            size += chunk.length;
            chunks.push(chunk);
            if (size >= MAX_BODY_BYTES) res.destroy();
          });
          const done = () => {
            settle();
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(chunks).subarray(0, MAX_BODY_BYTES).toString('utf8'),
            });
          };
          res.on('end', done);
          res.on('close', done);
          res.on('error', (e) => (size >= MAX_BODY_BYTES ? done() : fail(e)));
        });
        const timer = setTimeout(() => req.destroy(new WebhookTimeout()), options.timeoutMs);
        const onAbort = () => req.destroy(new RetryablePublishError(`interrupted (${String(request.signal.reason)})`));
        request.signal.addEventListener('abort', onAbort, { once: true });
        const settle = () => {
          clearTimeout(timer);
          request.signal.removeEventListener('abort', onAbort);
          if (fresh) agent.destroy();
        };
        let sent = false;
        let sentAt = 0;
        req.on('finish', () => {
          sent = true;
          sentAt = Date.now();
        });
        // bytes of an answer: anything read on the socket since this request got it
        const onSocket: { socket: Socket | null; readBefore: number } = { socket: null, readBefore: 0 };
        req.on('socket', (s) => {
          onSocket.socket = s;
          onSocket.readBefore = s.bytesRead;
        });
        const fail = (e: unknown) => {
          settle();
          const error = e instanceof Error ? e : new Error(String(e));
          const code = (error as { code?: unknown }).code;
          const nothingBack = !answered && (onSocket.socket === null || onSocket.socket.bytesRead === onSocket.readBefore);
          // A socket the server had closed while idle is reset within a round trip of the
          // write; a reset that comes later may follow a receiver that acted, then crashed.
          const soon = !sent || Date.now() - sentAt < STALE_RESET_MS;
          const staleSocket = req.reusedSocket && nothingBack && soon && typeof code === 'string' && RESET_CODES.has(code);
          reject(new SendFailure(error, sent, staleSocket));
        };
        req.on('error', fail);
        req.end(body);
      });
    };

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
        // the URL is a secret: errors and logs name the channel and the host only
        const where = `channel ${request.channel.name} (${url.host})`;
        const allowPrivate = allowAll || settings.allow_private_network === true;
        // A reset on a reused keep-alive socket is most often a stale socket (the server
        // closed it while idle, and nothing reached it), but it can also follow a request
        // the receiver processed. Only where a resend is safe (`retry`: the receiver
        // honours the key) are sockets pooled and a stale one resent at once; every other
        // channel sends each request on a new connection, so a reset there is never a
        // stale socket and stays what it is, maybe delivered.
        const pooled = request.channel.onUnknown === 'retry';
        let answer: Awaited<ReturnType<typeof send>>;
        try {
          try {
            answer = await send(request, settings, url, allowPrivate, !pooled);
          } catch (e) {
            if (!(pooled && e instanceof SendFailure && e.staleSocket)) throw e;
            answer = await send(request, settings, url, allowPrivate, true);
          }
        } catch (e) {
          if (!(e instanceof SendFailure)) throw e;
          const err = e.reason as Error & { code?: string };
          if (isAddressRefusal(err)) throw addressRefused('webhook', where);
          const sent = e.sent ? ' after the request was sent' : '';
          let message: string;
          if (err instanceof WebhookTimeout) message = `no answer within ${options.timeoutMs} ms${sent}`;
          else if (err instanceof RetryablePublishError) message = `${err.message}${sent}`;
          else message = `${err.code ?? err.name}: ${err.message}${sent}`;
          throw new RetryablePublishError(`webhook ${where}: ${message}`, null, e.sent);
        }
        const { status } = answer;
        if (status >= 200 && status < 300) {
          let externalId: string | null = null;
          let externalUrl: string | null = null;
          try {
            const json: unknown = JSON.parse(answer.body);
            if (typeof json === 'object' && json !== null) {
              const o = json as Record<string, unknown>;
              if (typeof o['id'] === 'string' || typeof o['id'] === 'number') externalId = String(o['id']).slice(0, 500);
              if (typeof o['url'] === 'string') externalUrl = o['url'].slice(0, 2000);
            }
          } catch {
            // a 2xx without a JSON body is still published
          }
          return { externalId, externalUrl };
        }
        if (status === 408 || status === 429 || status >= 500) {
          const retryAfter = parseRetryAfter(answer.headers['retry-after']);
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
        const excerpt = answerExcerpt(answer.body);
        throw new PermanentPublishError(`webhook ${where}: HTTP ${status}${excerpt === '' ? '' : `: ${excerpt}`}`);
      },
      async close() {
        for (const agent of pooled.values()) agent.destroy();
        pooled.clear();
      },
    };
  },
};
