import http from 'node:http';
import type https from 'node:https';
import * as v from 'valibot';
import {
  PermanentPublishError,
  RetryablePublishError,
  SettingsError,
  type Publisher,
  type PublisherModule,
  type PublisherOptions,
  type PublishRequest,
} from './publisher.ts';

/**
 * `webhook`: POSTs the post as JSON {id, channel, text, run_at, attempt} to the
 * channel's URL.
 *
 * - `Idempotency-Key`: unique per post, the same on every retry of it.
 * - `X-Post-Scheduler-Signature: sha256=<hex>`: HMAC-SHA256 of the body with the
 *   channel's secret, when it has one.
 * - 2xx: published; `id` and `url` of a JSON answer are stored.
 * - 408, 429, 5xx, timeouts, network errors: retryable (429/503 Retry-After honoured).
 *   A timeout or a broken connection after the request was sent, and a 5xx other than
 *   503, are unknown outcomes (the receiver may have processed it): the channel's
 *   policy decides.
 * - other 4xx, redirects: permanent.
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
}, 'webhook channel needs a url');

type WebhookSettings = v.InferOutput<typeof settingsSchema>;

/** The most of an answer's body that is read; the rest is discarded. */
const MAX_BODY_BYTES = 64 * 1024;

function parseSettings(settings: Record<string, unknown>): WebhookSettings {
  const parsed = v.safeParse(settingsSchema, settings);
  if (!parsed.success) throw new SettingsError(parsed.issues[0].message);
  return parsed.output;
}

/** Why this text cannot go to a channel with these settings, or null when it can. */
function checkText(text: string, settings: Record<string, unknown>): string | null {
  const max = settings['max_length'];
  const length = Array.from(text).length; // code points, not UTF-16 units
  return typeof max === 'number' && length > max ? `text is ${length} characters; the channel takes at most ${max}` : null;
}

function redactSettings(settings: Record<string, unknown>): Record<string, unknown> {
  const shown: Record<string, unknown> = { ...settings };
  if (typeof shown['url'] === 'string') {
    try {
      const u = new URL(shown['url']);
      if (u.password !== '') u.password = '***';
      shown['url'] = u.toString();
    } catch {
      // not a URL: shown as it is
    }
  }
  if ('secret' in shown) shown['secret'] = '***';
  return shown;
}

/** Retry-After as milliseconds: seconds or an HTTP date; null when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | null {
  if (value === undefined || value.trim() === '') return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

class WebhookTimeout extends Error {
  override name = 'WebhookTimeout';
}

/** A request that got no answer; `sent`: its body had been handed to the network. */
class SendFailure extends Error {
  override name = 'SendFailure';
  constructor(
    readonly reason: Error,
    readonly sent: boolean,
  ) {
    super(reason.message);
  }
}

function describeUrl(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

export const webhookPublisher: PublisherModule = {
  platform: 'webhook',
  parseSettings,
  redactSettings,
  checkText,
  canLookUp: false,
  defaultOnUnknown: 'hold',
  createPublisher(options: PublisherOptions): Publisher {
    const agentOptions = { keepAlive: true, maxSockets: options.concurrency, maxFreeSockets: options.concurrency };
    const httpAgent = new http.Agent(agentOptions);
    // TLS and crypto are loaded on first use: a worker that only talks plain HTTP
    // (or only writes files) does not pay for them.
    let tls: Promise<{ module: typeof https; agent: https.Agent }> | null = null;
    const loadTls = () =>
      (tls ??= import('node:https').then((module) => ({ module: module.default, agent: new module.default.Agent(agentOptions) })));
    let hmac: Promise<typeof import('node:crypto').createHmac> | null = null;
    const loadHmac = () => (hmac ??= import('node:crypto').then((c) => c.createHmac));

    const send = async (
      request: PublishRequest,
      settings: WebhookSettings,
    ): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> => {
      const url = new URL(settings.url);
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
      }
      const transport = url.protocol === 'https:' ? await loadTls() : { module: http, agent: httpAgent };
      if (request.signal.aborted) throw new RetryablePublishError(`interrupted (${String(request.signal.reason)})`);
      // A timer and one listener per request, both removed when it settles: composite
      // AbortSignals (AbortSignal.any/timeout) pile up on the worker's long-lived signal.
      return new Promise((resolve, reject) => {
        const req = transport.module.request(url, { method: 'POST', headers, agent: transport.agent }, (res) => {
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
        };
        let sent = false;
        req.on('finish', () => (sent = true));
        const fail = (e: unknown) => {
          settle();
          reject(new SendFailure(e instanceof Error ? e : new Error(String(e)), sent));
        };
        req.on('error', fail);
        req.end(body);
      });
    };

    return {
      async publish(request: PublishRequest) {
        let settings: WebhookSettings;
        try {
          settings = parseSettings(request.channel.settings);
        } catch (e) {
          throw new PermanentPublishError(`channel ${request.channel.name}: ${(e as Error).message}`);
        }
        const tooLong = checkText(request.text, request.channel.settings);
        if (tooLong !== null) throw new PermanentPublishError(`channel ${request.channel.name}: ${tooLong}`);
        const where = describeUrl(new URL(settings.url));
        let answer: Awaited<ReturnType<typeof send>>;
        try {
          answer = await send(request, settings);
        } catch (e) {
          if (!(e instanceof SendFailure)) throw e;
          const err = e.reason as Error & { code?: string };
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
          // 408, 429 and 503 say the request was not processed; any other 5xx (a 502 or
          // 504 from a gateway, a 500 after the receiver acted) may come after it was
          const maybeDelivered = status >= 500 && status !== 503;
          throw new RetryablePublishError(`webhook ${where}: HTTP ${status}`, retryAfter, maybeDelivered);
        }
        if (status >= 300 && status < 400) {
          throw new PermanentPublishError(`webhook ${where}: HTTP ${status} redirect (redirects are not followed; fix the channel url)`);
        }
        throw new PermanentPublishError(`webhook ${where}: HTTP ${status}${answer.body === '' ? '' : `: ${answer.body.slice(0, 200)}`}`);
      },
      async close() {
        httpAgent.destroy();
        if (tls !== null) (await tls).agent.destroy();
      },
    };
  },
};
