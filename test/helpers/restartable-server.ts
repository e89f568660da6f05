/**
 * What restartable-postgres.ts and restartable-mysql.ts share: a database server process
 * of a test's own, started and stopped with timeouts (ServerProcess), and the public
 * handle around it (handle: operations one at a time, the temp directory removed on
 * destroy() or at process exit). Each helper says only how its server is spawned, which
 * log line means ready, and which signals stop and kill it.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';

/** The operations both helpers offer; each adds its `url` (with its own scheme). */
export interface Restartable {
  readonly port: number;
  /** stops the server (connections are dropped; clients see errors); data kept */
  stop(): Promise<void>;
  /** starts it again on the same port with the same data */
  start(): Promise<void>;
  /** stop, wait downMs (default 0), start */
  restart(downMs?: number): Promise<void>;
  /** stop if running and remove the temp directory; safe to call twice */
  destroy(): Promise<void>;
}

/** What handle() needs of a server. */
export interface ServerControl {
  readonly port: number;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** synchronous: for process exit */
  killNow(): void;
}

/**
 * The public object: operations run one at a time, in call order. `name` is the
 * helper's type, for error messages (RestartablePostgres, RestartableMysql).
 */
export function handle(server: ServerControl, dir: string, url: string, name: string): Restartable & { readonly url: string } {
  let queue: Promise<unknown> = Promise.resolve();
  let destroyed = false;
  const serial = (operation: () => Promise<void>): Promise<void> => {
    const next = queue.then(operation);
    queue = next.catch(() => undefined);
    return next;
  };
  const removeDir = () => {
    server.killNow();
    try {
      fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // best effort: a server that was just killed may still be writing
    }
  };
  process.on('exit', removeDir);
  return {
    url,
    port: server.port,
    stop: () => serial(() => server.stop()),
    start: () =>
      serial(async () => {
        if (destroyed) throw new Error(`${name}: start() after destroy()`);
        await server.start();
      }),
    restart: (downMs = 0) =>
      serial(async () => {
        await server.stop();
        await sleep(downMs);
        await server.start();
      }),
    destroy: () =>
      serial(async () => {
        if (destroyed) return;
        destroyed = true;
        process.off('exit', removeDir);
        try {
          await server.stop();
        } finally {
          removeDir();
        }
      }),
  };
}

export interface ServerProcessOptions {
  /** the server's name in error messages: PostgreSQL, MariaDB */
  readonly name: string;
  readonly port: number;
  /** starts the server process, stderr piped: the ready line is read there */
  readonly spawn: () => ChildProcess;
  /** the stderr text that says the server accepts connections */
  readonly readyMessage: string;
  readonly startTimeoutMs: number;
  /** stop(): this signal first, and how an error message names the shutdown */
  readonly stopSignal: NodeJS.Signals;
  readonly stopDescription: string;
  readonly stopTimeoutMs: number;
  /** killNow(), and stop() after stopTimeoutMs: this signal, how messages name it */
  readonly killSignal: NodeJS.Signals;
  readonly killDescription: string;
  /** how long the exit after killSignal is waited for (in stop(), and after a failed start if waitAfterFailedStart) */
  readonly killTimeoutMs: number;
  /** whether a failed start waits (up to killTimeoutMs) for the killed process to exit */
  readonly waitAfterFailedStart: boolean;
}

/** One server process of one data directory, started and stopped with timeouts. */
export class ServerProcess implements ServerControl {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  readonly port: number;

  constructor(private readonly options: ServerProcessOptions) {
    this.port = options.port;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start(): Promise<void> {
    if (this.running) return;
    const { name, readyMessage, startTimeoutMs } = this.options;
    const child = this.options.spawn();
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    let log = '';
    const ready = new Promise<void>((resolve, reject) => {
      child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
        log = (log + chunk).slice(-4_000);
        if (log.includes(readyMessage)) resolve();
      });
      child.once('error', reject);
      child.once('exit', (code, signal) => reject(new Error(`${name} exited while starting (code ${code}, signal ${signal}):\n${log}`)));
    });
    try {
      await withTimeout(ready, startTimeoutMs, () => `${name} did not start within ${startTimeoutMs} ms on port ${this.port}:\n${log}`);
    } catch (error) {
      this.killNow();
      if (this.options.waitAfterFailedStart) await this.waitAfterKill();
      throw error;
    }
    // after start, stderr is only drained (otherwise a full pipe would block the server)
    log = '';
  }

  /** stopSignal; after stopTimeoutMs killSignal and an error. */
  async stop(): Promise<void> {
    if (!this.running) return;
    const { name, stopSignal, stopDescription, stopTimeoutMs, killSignal } = this.options;
    this.child?.kill(stopSignal);
    try {
      await withTimeout(this.exited, stopTimeoutMs, () => `${name} did not stop within ${stopTimeoutMs} ms (${stopDescription})`);
    } catch (error) {
      this.child?.kill(killSignal);
      await this.waitAfterKill();
      throw error;
    }
  }

  /** Synchronous, for process exit and failed starts: killSignal, not waited for. */
  killNow(): void {
    if (this.running) this.child?.kill(this.options.killSignal);
  }

  /** Waits up to killTimeoutMs for the exit after killSignal; never throws. */
  private async waitAfterKill(): Promise<void> {
    const { name, killDescription, killTimeoutMs } = this.options;
    await withTimeout(this.exited, killTimeoutMs, () => `${name} ignored ${killDescription}`).catch(() => undefined);
  }
}

/** A TCP port of 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === 'object') resolve(address.port);
        else reject(new Error('no port'));
      });
    });
  });
}

export function withTimeout<T>(promise: Promise<T>, ms: number, message: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message())), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
