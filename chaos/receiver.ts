/**
 * A local HTTP server standing in for webhook endpoints in the chaos test: it injects
 * faults (500, 429, hung and reset connections) from a seeded generator and counts what
 * a real platform would have seen, so a run can prove that no post was accepted twice.
 *
 * - `/keyed/<anything>` honours `Idempotency-Key`: the first accepted request with a key
 *   stores its answer; a later request with that key gets the stored answer again (200)
 *   and counts as a replay, never as a second acceptance.
 * - `/plain/<anything>` has no idempotency: every accepted request is an acceptance, so
 *   two acceptances of one post id are an accepted duplicate.
 *
 * Accepting means "the platform processed it", recorded before any answer is written: a
 * hang or reset after acceptance is the case where the sender cannot know it succeeded.
 * Half of the injected 500s come after acceptance, like a platform that fails after
 * acting. Faults are drawn per request in arrival order, so with concurrent senders a seed fixes
 * the fault sequence, not which post gets which fault.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { createRandom } from './random.ts';

export type FaultName = 'status500' | 'status429' | 'hang' | 'reset';

export const FAULT_NAMES: readonly FaultName[] = ['status500', 'status429', 'hang', 'reset'];

export const DEFAULT_RATES: Readonly<Record<FaultName, number>> = { status500: 0.05, status429: 0.05, hang: 0.03, reset: 0.03 };

export interface ChaosReceiver {
  /** http://127.0.0.1:PORT (callers append /keyed/x or /plain/x) */
  readonly url: string;
  /** post id -> number of acceptances (keyed endpoint: at most one per key; plain: every accepted request) */
  readonly accepted: Map<number, number>;
  /** post id -> requests received in total (raw sends, including faulted and replayed ones) */
  readonly sends: Map<number, number>;
  /** post id -> requests answered from the idempotency store (same key, already accepted) */
  readonly replays: Map<number, number>;
  /** post id -> every Idempotency-Key it arrived with ('' when the header was missing); more than one is a bug */
  readonly keysPerPost: Map<number, Set<string>>;
  /** fault name -> how many were injected */
  readonly faults: Record<FaultName, number>;
  setFaults(on: boolean): void;
  /** destroys every open socket (hanging ones too), resolves when closed; safe to call twice */
  close(): Promise<void>;
}

export interface ChaosReceiverOptions {
  seed: number;
  /** fractions 0..1 of requests per fault (their sum at most 1); unset ones take DEFAULT_RATES */
  rates?: Partial<Record<FaultName, number>>;
  /**
   * the most a platform takes to answer a request it accepted (drawn 0..latencyMs per
   * request; default 0): a post is accepted on arrival and answered later, so a worker
   * killed meanwhile leaves a post that was delivered but never recorded
   */
  latencyMs?: number;
}

/** One parsed, countable request. */
interface Delivery {
  readonly postId: number;
  readonly key: string | undefined;
  readonly keyed: boolean;
}

const MAX_BODY_BYTES = 1 << 20;

export async function startChaosReceiver(options: ChaosReceiverOptions): Promise<ChaosReceiver> {
  const rates = resolveRates(options.rates);
  const random = createRandom(options.seed);
  const accepted = new Map<number, number>();
  const sends = new Map<number, number>();
  const replays = new Map<number, number>();
  const keysPerPost = new Map<number, Set<string>>();
  const faults: Record<FaultName, number> = { status500: 0, status429: 0, hang: 0, reset: 0 };
  /** idempotency key -> the body of its accepted answer */
  const stored = new Map<string, string>();
  let faultsOn = true;

  const accept = (delivery: Delivery): string => {
    increment(accepted, delivery.postId);
    const body = JSON.stringify({ id: `ext-${delivery.postId}`, url: `http://127.0.0.1/p/${delivery.postId}` });
    if (delivery.keyed && delivery.key !== undefined) stored.set(delivery.key, body);
    return body;
  };

  const respond = (req: http.IncomingMessage, res: http.ServerResponse, delivery: Delivery): void => {
    increment(sends, delivery.postId);
    const keys = keysPerPost.get(delivery.postId) ?? new Set<string>();
    keys.add(delivery.key ?? '');
    keysPerPost.set(delivery.postId, keys);

    const replay = delivery.keyed && delivery.key !== undefined ? stored.get(delivery.key) : undefined;
    if (replay !== undefined) {
      increment(replays, delivery.postId);
      answer(res, 200, replay);
      return;
    }
    const fault = faultsOn ? drawFault(random, rates) : undefined;
    if (fault !== undefined) faults[fault] += 1;
    switch (fault) {
      case 'status500':
        // half of them after the platform acted: a 500 promises nothing about that
        if (random() < 0.5) accept(delivery);
        answer(res, 500, JSON.stringify({ error: 'injected 500' }));
        return;
      case 'status429':
        answer(res, 429, JSON.stringify({ error: 'injected 429' }), { 'retry-after': '1' });
        return;
      case 'hang':
        // never answered; the socket stays open until the client gives up or close()
        if (random() < 0.5) accept(delivery);
        return;
      case 'reset':
        if (random() < 0.5) accept(delivery);
        req.socket.destroy();
        return;
      case undefined: {
        const body = accept(delivery);
        const delay = Math.floor(random() * (options.latencyMs ?? 0));
        if (delay === 0) answer(res, 200, body);
        else setTimeout(() => answer(res, 200, body), delay).unref();
        return;
      }
    }
  };

  const server = http.createServer((req, res) => {
    const keyed = req.url?.startsWith('/keyed/') ?? false;
    if (!keyed && !(req.url?.startsWith('/plain/') ?? false)) {
      answer(res, 404, JSON.stringify({ error: 'use /keyed/... or /plain/...' }));
      return;
    }
    if (req.method !== 'POST') {
      answer(res, 405, JSON.stringify({ error: 'POST only' }));
      return;
    }
    readBody(req).then(
      (body) => {
        const postId = body === undefined ? undefined : parsePostId(body);
        if (body === undefined) answer(res, 413, JSON.stringify({ error: 'body too large' }));
        else if (postId === undefined) answer(res, 400, JSON.stringify({ error: 'a JSON body with an integer id is required' }));
        else respond(req, res, { postId, key: idempotencyKey(req), keyed });
      },
      () => req.socket.destroy(),
    );
  });

  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    accepted,
    sends,
    replays,
    keysPerPost,
    faults,
    setFaults: (on) => {
      faultsOn = on;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Defaults filled in; every rate within 0..1 and their sum at most 1. */
export function resolveRates(rates: Partial<Record<FaultName, number>> = {}): Readonly<Record<FaultName, number>> {
  const resolved = { ...DEFAULT_RATES, ...rates };
  for (const name of FAULT_NAMES) {
    const rate = resolved[name];
    if (!(rate >= 0 && rate <= 1)) throw new RangeError(`chaos receiver: rate ${name} must be within 0..1, got ${rate}`);
  }
  const total = FAULT_NAMES.reduce((sum, name) => sum + resolved[name], 0);
  if (total > 1 + 1e-9) throw new RangeError(`chaos receiver: the fault rates add up to ${total}, more than 1`);
  return resolved;
}

/** One draw: a fault with the probability of its rate, or undefined (accept). */
function drawFault(random: () => number, rates: Readonly<Record<FaultName, number>>): FaultName | undefined {
  let r = random();
  for (const name of FAULT_NAMES) {
    if (r < rates[name]) return name;
    r -= rates[name];
  }
  return undefined;
}

/** The body as text, or undefined when it is larger than MAX_BODY_BYTES. */
function readBody(req: http.IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    req.on('end', () => resolve(size <= MAX_BODY_BYTES ? Buffer.concat(chunks).toString('utf8') : undefined));
    req.on('error', reject);
  });
}

/** The post id of a JSON body `{id, ...}`, or undefined when it is not JSON or has no integer id. */
function parsePostId(body: string): number | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null || !('id' in parsed)) return undefined;
  const { id } = parsed;
  return typeof id === 'number' && Number.isSafeInteger(id) ? id : undefined;
}

function idempotencyKey(req: http.IncomingMessage): string | undefined {
  const value = req.headers['idempotency-key'];
  return Array.isArray(value) ? value.join(',') : value;
}

function answer(res: http.ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  if (res.destroyed) return;
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(body);
}

function increment(counts: Map<number, number>, postId: number): void {
  counts.set(postId, (counts.get(postId) ?? 0) + 1);
}
