import net from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * A TCP proxy in front of a local server (the database), that can go silent:
 * `freeze()` stops passing bytes both ways without closing anything, as a partitioned
 * network or a frozen server does; `thaw()` passes them again. `impair()` gives the
 * path latency and loss as TCP shows them (the kernel here has no netem): every chunk
 * waits `latencyMs` each way, and a share `loss` of chunks waits as long again plus a
 * retransmission timeout, as a lost segment that TCP sends again does. Bytes are never
 * dropped or reordered (TCP would not let an application see that either).
 */
export interface TcpProxy {
  readonly port: number;
  freeze(): void;
  thaw(): void;
  impair(impairment: Impairment | null): void;
  close(): Promise<void>;
}

export interface Impairment {
  /** one way, for every chunk */
  readonly latencyMs: number;
  /** 0..1: the share of chunks "lost" once and sent again after a retransmission timeout */
  readonly loss: number;
}

export interface ProxyOptions {
  /** the address to listen on; 127.0.0.1 by default */
  readonly listenHost?: string;
  /** 0 (any free port) by default */
  readonly listenPort?: number;
}

/** Linux's smallest retransmission timeout, added to a "lost" chunk's wait. */
const MIN_RTO_MS = 200;

export async function startTcpProxy(targetPort: number, targetHost = '127.0.0.1', options: ProxyOptions = {}): Promise<TcpProxy> {
  let frozen = false;
  let impairment: Impairment | null = null;
  const pairs = new Set<{ client: net.Socket; server: net.Socket }>();
  const timers = new Set<NodeJS.Timeout>();
  const proxy = net.createServer((client) => {
    const server = net.connect(targetPort, targetHost);
    const pair = { client, server };
    pairs.add(pair);
    const pipe = (from: net.Socket, to: net.Socket) => {
      // when the last chunk of this direction goes out: later chunks never overtake it
      let lastAt = 0;
      from.on('data', (chunk: Buffer) => {
        if (frozen) return; // dropped, as a black hole would
        if (impairment === null && lastAt <= Date.now()) {
          to.write(chunk);
          return;
        }
        const { latencyMs, loss } = impairment ?? { latencyMs: 0, loss: 0 };
        const lost = Math.random() < loss ? latencyMs * 2 + MIN_RTO_MS : 0;
        lastAt = Math.max(lastAt, Date.now() + latencyMs + lost);
        const timer = setTimeout(() => {
          timers.delete(timer);
          if (!to.destroyed) to.write(chunk);
        }, lastAt - Date.now());
        timers.add(timer);
      });
    };
    pipe(client, server);
    pipe(server, client);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      server.destroy();
    };
    client.on('error', end).on('close', end);
    server.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve, reject) => {
    proxy.once('error', reject);
    proxy.listen(options.listenPort ?? 0, options.listenHost ?? '127.0.0.1', resolve);
  });
  return {
    port: (proxy.address() as AddressInfo).port,
    freeze: () => (frozen = true),
    thaw: () => (frozen = false),
    impair: (next) => (impairment = next),
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        for (const p of pairs) {
          p.client.destroy();
          p.server.destroy();
        }
        proxy.close(() => resolve());
      }),
  };
}
