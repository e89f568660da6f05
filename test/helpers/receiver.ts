import http from 'node:http';
import net, { type AddressInfo } from 'node:net';

/**
 * A local HTTP server standing in for a webhook endpoint (the network edge). It
 * records every delivery and answers as `respond` says: a status, after a delay, or
 * never (`hang`).
 */
export interface Delivery {
  readonly postId: number;
  readonly attempt: number;
  readonly text: string;
  readonly idempotencyKey: string;
  readonly signature: string | undefined;
  readonly body: string;
  /** every request header, as Node gives them */
  readonly headers: http.IncomingHttpHeaders;
  /** the local address the request came in on (which host's path, when it listens on several) */
  readonly via: string;
  /** when it arrived, epoch ms */
  readonly at: number;
}

export interface Answer {
  readonly status?: number;
  readonly delayMs?: number;
  readonly hang?: boolean;
  readonly body?: string;
  readonly headers?: Record<string, string>;
}

export interface Receiver {
  readonly url: string;
  /** every request received, in arrival order */
  readonly deliveries: Delivery[];
  /** post id -> how many 2xx answers were written for it (`idempotent`: for its first key only) */
  readonly accepted: Map<number, number>;
  /** `idempotent`: post id -> 2xx answers to an Idempotency-Key already accepted (not counted in `accepted`) */
  readonly replays: Map<number, number>;
  /** TCP connections accepted so far (keep-alive: one serves many requests) */
  readonly connections: number;
  close(): Promise<void>;
}

export interface ReceiverOptions {
  /**
   * honour Idempotency-Key, as a `retry` channel's receiver must: a 2xx answer to a key
   * already accepted is a replay (the platform acts once), counted in `replays`
   */
  readonly idempotent?: boolean;
  /**
   * listen on these addresses (one port, the first's) instead of 127.0.0.1: each host
   * of test/hosts.slow.test.ts reaches the receiver on its own link's address
   */
  readonly addresses?: readonly string[];
  readonly port?: number;
}

export async function startReceiver(respond: (d: Delivery) => Answer = () => ({ status: 200 }), options: ReceiverOptions = {}): Promise<Receiver> {
  const deliveries: Delivery[] = [];
  const accepted = new Map<number, number>();
  const replays = new Map<number, number>();
  const acceptedKeys = new Set<string>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      let parsed: { id?: number; attempt?: number; text?: string } = {};
      try {
        parsed = JSON.parse(body) as typeof parsed;
      } catch {
        // recorded as it came
      }
      const delivery: Delivery = {
        postId: Number(parsed.id),
        attempt: Number(parsed.attempt),
        text: String(parsed.text),
        idempotencyKey: String(req.headers['idempotency-key']),
        signature: req.headers['x-post-scheduler-signature'] as string | undefined,
        body,
        headers: req.headers,
        via: req.socket.localAddress ?? '',
        at: Date.now(),
      };
      deliveries.push(delivery);
      const answer = respond(delivery);
      if (answer.hang === true) return;
      const send = () => {
        if (res.destroyed) return;
        const status = answer.status ?? 200;
        res.writeHead(status, { 'content-type': 'application/json', ...answer.headers });
        res.end(answer.body ?? '{}', () => {
          if (status < 200 || status >= 300) return;
          const replay = options.idempotent === true && acceptedKeys.has(delivery.idempotencyKey);
          acceptedKeys.add(delivery.idempotencyKey);
          const counts = replay ? replays : accepted;
          counts.set(delivery.postId, (counts.get(delivery.postId) ?? 0) + 1);
        });
      };
      if ((answer.delayMs ?? 0) > 0) setTimeout(send, answer.delayMs).unref();
      else send();
    });
  });
  server.keepAliveTimeout = 5_000;
  let connections = 0;
  server.on('connection', () => connections++);
  const [first = '127.0.0.1', ...others] = options.addresses ?? [];
  const listen = (s: net.Server, address: string, at: number) =>
    new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(at, address, resolve);
    });
  await listen(server, first, options.port ?? 0);
  const { port } = server.address() as AddressInfo;
  // the other addresses: listeners whose connections the same server answers
  const more = others.map(() => net.createServer((socket) => server.emit('connection', socket)));
  await Promise.all(more.map((s, i) => listen(s, others[i] ?? '', port)));
  return {
    url: `http://${first}:${port}/hook`,
    deliveries,
    accepted,
    replays,
    get connections() {
      return connections;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        for (const s of more) s.close();
        server.close(() => resolve());
      }),
  };
}
