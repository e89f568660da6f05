import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A local webhook endpoint on 127.0.0.1 (port 0) that answers 200 after a fixed
 * delay. It counts requests, distinct post ids, and the most requests it held at once.
 */
export interface Receiver {
  readonly url: string;
  readonly stats: ReceiverStats;
  /** zeroes the counters (between repetitions) */
  reset(): void;
  close(): Promise<void>;
}

export interface ReceiverStats {
  requests: number;
  ids: Set<number>;
  inFlight: number;
  maxInFlight: number;
  /** when each request arrived (epoch ms), in order */
  arrivals: number[];
}

export async function startReceiver(delayMs: number): Promise<Receiver> {
  const stats: ReceiverStats = { requests: 0, ids: new Set(), inFlight: 0, maxInFlight: 0, arrivals: [] };
  const timers = new Set<NodeJS.Timeout>();
  const server = http.createServer((req, res) => {
    stats.requests++;
    stats.arrivals.push(Date.now());
    stats.inFlight++;
    stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { id?: unknown };
        if (typeof body.id === 'number') stats.ids.add(body.id);
      } catch {
        // counted as a request, without an id
      }
      const answer = () => {
        stats.inFlight--;
        if (res.destroyed) return;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      };
      if (delayMs <= 0) {
        answer();
        return;
      }
      const t = setTimeout(() => {
        timers.delete(t);
        answer();
      }, delayMs);
      timers.add(t);
    });
  });
  server.keepAliveTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    stats,
    reset() {
      stats.requests = 0;
      stats.ids = new Set();
      stats.arrivals = [];
      stats.maxInFlight = stats.inFlight;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        timers.clear();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
