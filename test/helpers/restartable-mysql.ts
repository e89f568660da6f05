/**
 * A MariaDB server of the test's own (Debian's mariadb-server binaries, not the machine's
 * running server) that a test or the chaos tool can stop and start again with the same
 * data, to simulate a database restart or outage: what restartable-postgres.ts is for
 * PostgreSQL.
 *
 * `mariadb-install-db` makes a data directory in a temp directory (root may log in from
 * 127.0.0.1 without a password; grants are kept); `mariadbd` runs on a free port of
 * 127.0.0.1 with small buffers, so a start takes well under a second. stop() sends
 * SIGTERM, MariaDB's normal shutdown: client connections are killed at once, never
 * waited for. Every wait is bounded, and destroy() kills the server and removes the
 * directory.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mysql from 'mysql2/promise';
import { freePort, sleep, withTimeout } from './restartable-postgres.ts';

export interface RestartableMysql {
  /** mysql://root[:password]@127.0.0.1:PORT/<database> (the database is created at start) */
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

export const MARIADBD = '/usr/sbin/mariadbd';
export const MARIADB_INSTALL_DB = '/usr/bin/mariadb-install-db';

/** Whether this machine has the MariaDB server binaries (the running server is not needed). */
export function mariadbBinariesAvailable(): boolean {
  return [MARIADBD, MARIADB_INSTALL_DB].every((file) => {
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * For a test's `skip`: why a MariaDB server of the test's own cannot run here, or false.
 * Under REQUIRE_MYSQL=1 (CI) it is never skipped: missing binaries fail the test instead.
 */
export function mariadbSkip(): string | false {
  if (mariadbBinariesAvailable() || process.env['REQUIRE_MYSQL'] === '1') return false;
  return `no MariaDB server binaries here (${MARIADBD}, ${MARIADB_INSTALL_DB}: Debian's mariadb-server)`;
}

const INSTALL_TIMEOUT_MS = 60_000;
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 30_000;
/** after a stop timed out: how long SIGKILL may take to be reaped */
const KILL_TIMEOUT_MS = 5_000;
const READY_MESSAGE = 'ready for connections';

/**
 * Server settings for a throwaway server: small buffers; no fsync at commit (the redo
 * log is written to the OS, so a stopped or killed server loses nothing; only a machine
 * crash would); no buffer pool dump or load; no name resolution.
 */
const SERVER_OPTIONS = [
  '--innodb-buffer-pool-size=16M',
  '--innodb-log-file-size=8M',
  '--innodb-log-buffer-size=1M',
  '--innodb-flush-log-at-trx-commit=2',
  '--innodb-buffer-pool-dump-at-shutdown=0',
  '--innodb-buffer-pool-load-at-startup=0',
  '--skip-name-resolve',
  '--lc-messages=en_US',
];

export async function startRestartableMysql(options: { database?: string; password?: string } = {}): Promise<RestartableMysql> {
  const database = options.database ?? 'chaos';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'post-scheduler-mariadb-'));
  const dataDir = path.join(dir, 'data');
  const asRoot = process.getuid?.() === 0 ? ['--user=root'] : [];
  try {
    await install(dataDir, asRoot);
    const port = await freePort();
    const args = [
      '--no-defaults',
      `--datadir=${dataDir}`,
      `--port=${port}`,
      '--bind-address=127.0.0.1',
      `--socket=${path.join(dir, 'sock')}`,
      `--pid-file=${path.join(dir, 'mariadbd.pid')}`,
      '--skip-log-error',
      ...asRoot,
      ...SERVER_OPTIONS,
    ];
    const server = new ServerProcess(args, port);
    await server.start();
    const userInfo = options.password === undefined ? 'root' : `root:${encodeURIComponent(options.password)}`;
    await setUp(`mysql://root@127.0.0.1:${port}/`, database, options.password);
    return handle(server, dir, `mysql://${userInfo}@127.0.0.1:${port}/${database}`);
  } catch (error) {
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    throw error;
  }
}

/** The public object: operations run one at a time, in call order. */
function handle(server: ServerProcess, dir: string, url: string): RestartableMysql {
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
        if (destroyed) throw new Error('RestartableMysql: start() after destroy()');
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

/** The `mariadbd` process of one data directory, started and stopped with timeouts. */
class ServerProcess {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();

  constructor(
    private readonly args: readonly string[],
    readonly port: number,
  ) {}

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start(): Promise<void> {
    if (this.running) return;
    // without --log-error the server logs to stderr, where the ready line is read
    const child = spawn(MARIADBD, this.args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    let log = '';
    const ready = new Promise<void>((resolve, reject) => {
      child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
        log = (log + chunk).slice(-4_000);
        if (log.includes(READY_MESSAGE)) resolve();
      });
      child.once('error', reject);
      child.once('exit', (code, signal) => reject(new Error(`MariaDB exited while starting (code ${code}, signal ${signal}):\n${log}`)));
    });
    try {
      await withTimeout(ready, START_TIMEOUT_MS, () => `MariaDB did not start within ${START_TIMEOUT_MS} ms on port ${this.port}:\n${log}`);
    } catch (error) {
      this.killNow();
      await withTimeout(this.exited, KILL_TIMEOUT_MS, () => 'MariaDB ignored SIGKILL').catch(() => undefined);
      throw error;
    }
    // after start, stderr is only drained (otherwise a full pipe would block the server)
    log = '';
  }

  /** Normal shutdown (SIGTERM); after STOP_TIMEOUT_MS a SIGKILL and an error. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.child?.kill('SIGTERM');
    try {
      await withTimeout(this.exited, STOP_TIMEOUT_MS, () => `MariaDB did not stop within ${STOP_TIMEOUT_MS} ms (SIGTERM)`);
    } catch (error) {
      this.child?.kill('SIGKILL');
      await withTimeout(this.exited, KILL_TIMEOUT_MS, () => 'MariaDB ignored SIGKILL too').catch(() => undefined);
      throw error;
    }
  }

  /** Synchronous, for process exit and failed starts: SIGKILL, not waited for. */
  killNow(): void {
    if (this.running) this.child?.kill('SIGKILL');
  }
}

/** mariadb-install-db: the system tables, root@127.0.0.1 without a password. */
function install(dataDir: string, asRoot: readonly string[]): Promise<void> {
  const args = ['--no-defaults', `--datadir=${dataDir}`, '--auth-root-authentication-method=normal', '--skip-test-db', ...asRoot, ...SERVER_OPTIONS];
  return new Promise((resolve, reject) => {
    execFile(MARIADB_INSTALL_DB, args, { timeout: INSTALL_TIMEOUT_MS, killSignal: 'SIGKILL' }, (error, stdout, stderr) => {
      if (error === null) resolve();
      else reject(new Error(`mariadb-install-db failed (${error.message}):\n${(stdout + stderr).slice(-4_000)}`));
    });
  });
}

/** Creates the database and, when asked, gives root@127.0.0.1 a password. */
async function setUp(adminUrl: string, database: string, password: string | undefined): Promise<void> {
  const conn = await mysql.createConnection({ uri: adminUrl, connectTimeout: 10_000 });
  try {
    const work = async () => {
      await conn.query(`CREATE DATABASE \`${database}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`);
      if (password !== undefined) await conn.query("ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY ?", [password]);
    };
    await withTimeout(work(), START_TIMEOUT_MS, () => `CREATE DATABASE ${database} timed out`);
  } finally {
    conn.destroy();
  }
}
