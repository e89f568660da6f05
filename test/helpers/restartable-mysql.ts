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
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import mysql from 'mysql2/promise';
import { freePort, handle, ServerProcess, withTimeout, type Restartable } from './restartable-server.ts';

export interface RestartableMysql extends Restartable {
  /** mysql://root[:password]@127.0.0.1:PORT/<database> (the database is created at start) */
  readonly url: string;
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
    const server = serverProcess(args, port);
    await server.start();
    const userInfo = options.password === undefined ? 'root' : `root:${encodeURIComponent(options.password)}`;
    await setUp(`mysql://root@127.0.0.1:${port}/`, database, options.password);
    return handle(server, dir, `mysql://${userInfo}@127.0.0.1:${port}/${database}`, 'RestartableMysql');
  } catch (error) {
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    throw error;
  }
}

/**
 * The `mariadbd` process of one data directory. stop(): normal shutdown (SIGTERM); after
 * STOP_TIMEOUT_MS a SIGKILL and an error. killNow() (process exit, failed starts): SIGKILL,
 * not waited for (a failed start then waits up to KILL_TIMEOUT_MS for the exit).
 */
function serverProcess(args: readonly string[], port: number): ServerProcess {
  return new ServerProcess({
    name: 'MariaDB',
    port,
    // without --log-error the server logs to stderr, where the ready line is read
    spawn: () => spawn(MARIADBD, args, { stdio: ['ignore', 'ignore', 'pipe'] }),
    readyMessage: READY_MESSAGE,
    startTimeoutMs: START_TIMEOUT_MS,
    stopSignal: 'SIGTERM',
    stopDescription: 'SIGTERM',
    stopTimeoutMs: STOP_TIMEOUT_MS,
    killSignal: 'SIGKILL',
    killDescription: 'SIGKILL',
    killTimeoutMs: KILL_TIMEOUT_MS,
    waitAfterFailedStart: true,
  });
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
