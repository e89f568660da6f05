import http from 'node:http';
import type https from 'node:https';
import type { Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { HttpSendFailure } from './http-failure.ts';

/** Defined apart so that code that only tells failures apart does not load node:http. */
export { HttpSendFailure };

/**
 * A small HTTP client for the publishers that speak HTTP (the webhook, Mastodon,
 * Bluesky, ...):
 *
 * - SSRF protection: every connection goes through request-filtering-agent, which checks
 *   the address it connects to after DNS (a name that resolves to a private address is
 *   caught too). Loopback, private, link-local (169.254.169.254 included), unique-local
 *   and unspecified addresses are refused unless the client (config
 *   ALLOW_PRIVATE_NETWORK) or the request (the channel's `allow_private_network`) opts
 *   in. A refusal is an HttpSendFailure with `addressRefused` (nothing was sent).
 * - Keep-alive agents (one per protocol and guard), at most `concurrency` sockets per
 *   host; an idle socket closes after IDLE_SOCKET_MS. A request may instead ask for a
 *   fresh connection of its own (`connection: 'fresh'`), closed after it: a reset there
 *   is never a stale pooled socket.
 * - A request that fails is not sent again here, not even after a reset on a reused
 *   socket (the callers' outcome rules decide about a resend), unless it asks for it
 *   (`resendStaleSocket`, for requests whose resend is safe): then one that met a reset
 *   on a reused keep-alive socket before any byte of an answer, within STALE_RESET_MS of
 *   being written (the server had closed the idle connection; Node's `reusedSocket`
 *   pattern), is sent once more on a fresh connection.
 * - Every request has a timer (`timeoutMs`, covering the whole exchange up to the last
 *   byte of the answer) and one abort listener on the caller's signal; both are removed
 *   when the request settles (composite signals would pile up on a worker's long-lived one).
 * - At most MAX_BODY_BYTES (or the request's maxBodyBytes) of an answer are read; the
 *   rest is discarded (`truncated`).
 * - Redirects are not followed.
 * - `HttpSendFailure.sent` tells an unknown outcome: the request had been handed to the
 *   network when it failed (timed out, was cut, was aborted), so it may have arrived.
 *
 * Nothing here logs: headers (tokens) and bodies never leave this module except in the
 * caller's hands.
 */
export interface HttpClientOptions {
  /** one request's timeout, from the start to the answer's last byte */
  readonly timeoutMs: number;
  /** sockets per host (how many requests may be in flight to one host at once) */
  readonly concurrency: number;
  /** every request may connect to loopback, private and link-local addresses */
  readonly allowPrivateNetwork?: boolean;
}

export interface HttpRequest {
  readonly method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  readonly url: URL;
  readonly headers?: Record<string, string>;
  readonly body?: Buffer | string;
  readonly signal: AbortSignal;
  /** this channel opted in to private/loopback targets (settings.allow_private_network) */
  readonly allowPrivateNetwork?: boolean;
  /** 'pooled' (default): a keep-alive socket of the client's pool; 'fresh': a new connection, closed after this request */
  readonly connection?: 'pooled' | 'fresh';
  /**
   * a pooled request that met a reset on a reused socket before any answer (a stale
   * socket: nothing reached the server) is sent once more on a fresh connection. Only
   * where a resend is safe: a late reset can also follow a request the server processed.
   */
  readonly resendStaleSocket?: boolean;
  /** the most of the answer's body that is read (default MAX_BODY_BYTES) */
  readonly maxBodyBytes?: number;
}

export interface HttpResponse {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  /** at most MAX_BODY_BYTES of the answer's body */
  readonly body: Buffer;
  /** the answer was longer than MAX_BODY_BYTES and `body` holds its beginning only */
  readonly truncated: boolean;
  /** the body as UTF-8 */
  text(): string;
  /** the body parsed as JSON; null when it is not JSON */
  json(): unknown;
}

export interface HttpClient {
  request(req: HttpRequest): Promise<HttpResponse>;
  /** destroys every socket of the client: the pooled ones, and those of requests still in flight (they fail) */
  close(): Promise<void>;
}

/** The most of an answer's body that is read; the rest is discarded. */
export const MAX_BODY_BYTES = 1024 * 1024;

/**
 * How long a keep-alive socket may sit idle in the pool: below common server idle
 * timeouts (Node 5 s, many proxies 5-60 s), so few requests meet a socket the server
 * already closed. Node's agent also honours a server's `Keep-Alive: timeout=N` hint.
 */
export const IDLE_SOCKET_MS = 1_000;

/**
 * A reset on a reused socket within this of the request being written is a socket the
 * server had closed while idle (reset within a round trip); a later one may follow a
 * server that acted, then crashed.
 */
export const STALE_RESET_MS = 500;

/** Resets a request meets on a socket the server closed. */
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE']);

/** request-filtering-agent refuses with a plain Error: "DNS lookup <ip>(...) is not allowed. Because, ..." */
function isAddressRefusal(e: Error): boolean {
  return /^DNS lookup .* is not allowed\. Because/.test(e.message);
}

/** the connection closed before the answer's last byte */
class CutAnswer extends Error {
  override name = 'CutAnswer';
  readonly code = 'ECONNRESET';
}

type FilterModule = typeof import('request-filtering-agent');

/**
 * Loads what a client's first request loads (the address filter, node:https), for a
 * worker that waits for a due time (daemon --precise): its first posts then do not wait
 * for it.
 */
export async function preloadHttp(): Promise<void> {
  await Promise.all([import('request-filtering-agent'), import('node:https')]);
}
type Protocol = 'http:' | 'https:';

export function createHttpClient(options: HttpClientOptions): HttpClient {
  // request-filtering-agent and node:https are loaded on the first request, so a worker
  // that never meets a network channel does not pay for them
  let filter: Promise<FilterModule> | null = null;
  const loadFilter = () => (filter ??= import('request-filtering-agent'));
  let httpsModule: Promise<typeof https> | null = null;
  const loadHttps = () => (httpsModule ??= import('node:https').then((m) => m.default));
  /** the agents, by protocol, guard and kind (agentFor) */
  const agents = new Map<string, Promise<http.Agent>>();
  let closed = false;

  /**
   * The agents, by protocol, guard and kind. A pooled agent keeps sockets alive, at most
   * `concurrency` per host. A fresh agent opens a new socket for each request and closes
   * it after the answer (no keep-alive, no cap: no request ever waits for, or is handed,
   * a socket another request used). One fresh agent serves every fresh request: an agent
   * made per request cost a webhook post about 3 KB of allocations, and their CPU.
   */
  const newAgent = async (protocol: Protocol, allowPrivate: boolean, fresh: boolean): Promise<http.Agent> => {
    const f = await loadFilter();
    const agentOptions = {
      keepAlive: !fresh,
      maxSockets: fresh ? Infinity : options.concurrency,
      maxFreeSockets: options.concurrency,
      timeout: IDLE_SOCKET_MS,
      allowPrivateIPAddress: allowPrivate,
      allowMetaIPAddress: allowPrivate,
    };
    return protocol === 'https:' ? new f.RequestFilteringHttpsAgent(agentOptions) : new f.RequestFilteringHttpAgent(agentOptions);
  };
  const agentFor = (protocol: Protocol, allowPrivate: boolean, fresh: boolean): Promise<http.Agent> => {
    const key = `${protocol}${allowPrivate ? 'open' : 'guarded'}${fresh ? 'fresh' : 'pooled'}`;
    let agent = agents.get(key);
    if (agent === undefined) {
      agent = newAgent(protocol, allowPrivate, fresh);
      agents.set(key, agent);
    }
    return agent;
  };

  const interrupted = (signal: AbortSignal) => `interrupted (${String(signal.reason)})`;

  /** one exchange on one agent */
  const exchange = async (req: HttpRequest, protocol: Protocol, agent: http.Agent): Promise<HttpResponse> => {
    const transport = protocol === 'https:' ? await loadHttps() : http;
    if (req.signal.aborted) {
      throw new HttpSendFailure(interrupted(req.signal), { sent: false, aborted: true });
    }
    const headers: Record<string, string> = { 'user-agent': 'post-scheduler', ...req.headers };
    if (req.body !== undefined) headers['content-length'] = String(Buffer.byteLength(req.body));
    const maxBody = req.maxBodyBytes ?? MAX_BODY_BYTES;

    return new Promise<HttpResponse>((resolve, reject) => {
      let settled = false;
      let sent = false;
      let sentAt = 0;
      let answered = false;
      const request = transport.request(req.url, { method: req.method, headers, agent }, (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        let size = 0;
        let truncated = false;
        res.on('data', (chunk: Buffer) => {
          if (truncated) return;
          if (size + chunk.length > maxBody) {
            chunks.push(chunk.subarray(0, maxBody - size));
            size = maxBody;
            truncated = true;
            // the rest is not read: this socket is not reused
            res.destroy();
            done();
            return;
          }
          size += chunk.length;
          chunks.push(chunk);
        });
        const done = () => {
          if (settled) return;
          settle();
          const body = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            truncated,
            text: () => body.toString('utf8'),
            json: () => {
              try {
                return JSON.parse(body.toString('utf8')) as unknown;
              } catch {
                return null;
              }
            },
          });
        };
        res.on('end', done);
        // a close before 'end' is an answer cut short (unless it was cut here, on purpose)
        res.on('close', () => (res.complete || truncated ? done() : fail(new CutAnswer('the connection closed before the whole answer came'))));
        res.on('error', (e) => (truncated ? done() : fail(e)));
      });
      // why this side ended the request: whichever event reports it first (the request's
      // error, or the answer's close), the failure says so
      let endedBy: { readonly timedOut: boolean; readonly message: string } | null = null;
      const end = (timedOut: boolean, message: string) => {
        endedBy = { timedOut, message };
        request.destroy(new Error(message));
      };
      const timer = setTimeout(() => end(true, `no answer within ${options.timeoutMs} ms`), options.timeoutMs);
      const onAbort = () => end(false, interrupted(req.signal));
      req.signal.addEventListener('abort', onAbort, { once: true });
      const settle = () => {
        settled = true;
        clearTimeout(timer);
        req.signal.removeEventListener('abort', onAbort);
      };
      // 'finish': the whole request was handed to the socket; before that (connecting,
      // refused, DNS) nothing can have reached the server
      request.on('finish', () => {
        sent = true;
        sentAt = Date.now();
      });
      // bytes of an answer: anything read on the socket since this request got it
      const onSocket: { socket: Socket | null; readBefore: number } = { socket: null, readBefore: 0 };
      request.on('socket', (socket) => {
        onSocket.socket = socket;
        onSocket.readBefore = socket.bytesRead;
      });
      const fail = (e: unknown) => {
        if (settled) return;
        settle();
        const error = e instanceof Error ? e : new Error(String(e));
        const code = (error as { code?: unknown }).code;
        const nothingBack = !answered && (onSocket.socket === null || onSocket.socket.bytesRead === onSocket.readBefore);
        const soon = !sent || Date.now() - sentAt < STALE_RESET_MS;
        const staleSocket = request.reusedSocket && nothingBack && soon && typeof code === 'string' && RESET_CODES.has(code);
        const details = { sent, code: typeof code === 'string' ? code : undefined, staleSocket };
        const ended = endedBy;
        if (ended !== null) {
          reject(new HttpSendFailure(ended.message, { sent, timedOut: ended.timedOut, aborted: !ended.timedOut }, { cause: error }));
        } else if (isAddressRefusal(error)) {
          reject(new HttpSendFailure('refused to connect to a loopback, private or link-local address (SSRF protection)', { ...details, sent: false, addressRefused: true }, { cause: error }));
        } else {
          reject(new HttpSendFailure(`${details.code ?? error.name}: ${error.message}`, details, { cause: error }));
        }
      };
      request.on('error', fail);
      if (req.body === undefined) request.end();
      else request.end(req.body);
    });
  };

  return {
    async request(req: HttpRequest): Promise<HttpResponse> {
      if (closed) throw new Error('HTTP client is closed');
      const protocol = req.url.protocol;
      if (protocol !== 'http:' && protocol !== 'https:') throw new TypeError(`not an http(s) URL (${protocol})`);
      const allowPrivate = options.allowPrivateNetwork === true || req.allowPrivateNetwork === true;
      if (req.connection === 'fresh') return exchange(req, protocol, await agentFor(protocol, allowPrivate, true));
      try {
        return await exchange(req, protocol, await agentFor(protocol, allowPrivate, false));
      } catch (e) {
        if (!(req.resendStaleSocket === true && e instanceof HttpSendFailure && e.staleSocket)) throw e;
        return exchange(req, protocol, await agentFor(protocol, allowPrivate, true));
      }
    },
    async close() {
      closed = true;
      const all = [...agents.values()];
      agents.clear();
      for (const agent of await Promise.all(all)) agent.destroy();
    },
  };
}

export interface MultipartFile {
  readonly name: string;
  readonly filename: string;
  readonly contentType: string;
  readonly data: Buffer;
}

/** a field or file name inside a quoted Content-Disposition parameter (as browsers encode it) */
function quoted(value: string): string {
  return value.replace(/\r/g, '%0D').replace(/\n/g, '%0A').replace(/"/g, '%22');
}

/** A multipart/form-data body (RFC 7578) of text fields and files. */
export function multipartBody(fields: Record<string, string>, files: readonly MultipartFile[]): { body: Buffer; contentType: string } {
  const boundary = `----post-scheduler-${randomBytes(16).toString('hex')}`;
  const parts: Buffer[] = [];
  for (const [name, value] of Object.entries(fields)) {
    parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${quoted(name)}"\r\n\r\n${value}\r\n`, 'utf8'));
  }
  for (const file of files) {
    const contentType = file.contentType.replace(/[\r\n]/g, '');
    parts.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="${quoted(file.name)}"; filename="${quoted(file.filename)}"\r\nContent-Type: ${contentType}\r\n\r\n`,
        'utf8',
      ),
      file.data,
      Buffer.from('\r\n', 'utf8'),
    );
  }
  parts.push(Buffer.from(`--${boundary}--\r\n`, 'utf8'));
  return { body: Buffer.concat(parts), contentType: `multipart/form-data; boundary=${boundary}` };
}
