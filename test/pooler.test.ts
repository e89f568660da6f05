import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import postgres from 'postgres';
import { postgresUrl } from './helpers/databases.ts';
import { run, testEnv, waitFor } from './helpers/processes.ts';

/**
 * Behind a transaction-mode pooler (PgBouncer) two statements of one client may run in
 * two server sessions, which post-scheduler's prepared statements and search_path do
 * not survive: it detects such a pooler and refuses in one line, before touching
 * anything. Runs Debian's pgbouncer (`.ci/run` installs it); where it is missing the
 * test fails when REQUIRE_PGBOUNCER=1 (CI) and otherwise says in one line that it did not run.
 */
const PGBOUNCER = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => fs.existsSync(p)) ?? null;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

describe('a transaction-mode connection pooler', () => {
  const running: ChildProcess[] = [];
  const dirs: string[] = [];
  afterEach(() => {
    for (const p of running.splice(0)) p.kill('SIGKILL');
  });
  after(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  /** Starts pgbouncer in front of the test PostgreSQL; returns the URL of the pooled database. */
  async function startPgbouncer(extra: string): Promise<string> {
    assert.ok(PGBOUNCER !== null);
    const target = new URL(postgresUrl());
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'post-scheduler-pgbouncer-'));
    dirs.push(dir);
    fs.chmodSync(dir, 0o777);
    const port = await freePort();
    const db = target.pathname.slice(1) || 'test';
    fs.writeFileSync(path.join(dir, 'users.txt'), `"${target.username || 'postgres'}" ""\n`);
    fs.writeFileSync(
      path.join(dir, 'pgbouncer.ini'),
      [
        '[databases]',
        `${db} = host=${target.hostname} port=${target.port || '5432'} dbname=${db}`,
        '[pgbouncer]',
        'listen_addr = 127.0.0.1',
        `listen_port = ${port}`,
        'unix_socket_dir =',
        'auth_type = trust',
        `auth_file = ${path.join(dir, 'users.txt')}`,
        'pool_mode = transaction',
        `logfile = ${path.join(dir, 'pgbouncer.log')}`,
        extra,
        '',
      ].join('\n'),
    );
    for (const f of fs.readdirSync(dir)) fs.chmodSync(path.join(dir, f), 0o666);
    // pgbouncer refuses to run as root: -u drops to the postgres user
    const asRoot = process.getuid?.() === 0;
    const child = spawn(PGBOUNCER, [...(asRoot ? ['-u', 'postgres'] : []), path.join(dir, 'pgbouncer.ini')], { stdio: 'ignore' });
    running.push(child);
    await waitFor('pgbouncer to listen', () => {
      try {
        execFileSync('pg_isready', ['-h', '127.0.0.1', '-p', String(port), '-q'], { stdio: 'ignore' });
        return true;
      } catch {
        return child.exitCode !== null ? Promise.reject(new Error(`pgbouncer exited ${String(child.exitCode)}: ${readLog(dir)}`)) : false;
      }
    });
    const pooled = new URL(postgresUrl());
    pooled.port = String(port);
    pooled.searchParams.set('schema', `pooled_${Date.now().toString(36)}`);
    return pooled.toString();
  }

  const readLog = (dir: string) => {
    try {
      return fs.readFileSync(path.join(dir, 'pgbouncer.log'), 'utf8').slice(-500);
    } catch {
      return '(no log)';
    }
  };

  function available(): boolean {
    if (PGBOUNCER !== null) return true;
    assert.notEqual(process.env['REQUIRE_PGBOUNCER'], '1', 'REQUIRE_PGBOUNCER=1 but pgbouncer is not installed (apt-get install pgbouncer)');
    process.stderr.write('[test] pooler tests did not run: pgbouncer is not installed (apt-get install pgbouncer, then npm test)\n');
    return false;
  }

  it('is refused in one line when it rejects our startup parameters', async () => {
    if (!available()) return;
    const url = await startPgbouncer('');
    const r = await run(['migrate'], testEnv(url), 30_000);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /connection pooler\? post-scheduler needs a session of its own/);
  });

  it('is detected and refused in one line when it passes them through, before anything is created', async () => {
    if (!available()) return;
    const url = await startPgbouncer('ignore_startup_parameters = plan_cache_mode,search_path,statement_timeout,lock_timeout');
    for (const command of [['migrate'], ['cron']]) {
      const r = await run(command, testEnv(url), 30_000);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stdout + r.stderr, /(transaction-mode connection pooler|did not take search_path).*post-scheduler needs a session of its own/);
      assert.doesNotMatch(r.stdout, /Spawning worker/);
    }
    // nothing was created behind the pooler's back
    const schema = new URL(url).searchParams.get('schema') ?? '';
    const sql = postgres(postgresUrl(), { max: 1, onnotice: () => undefined });
    try {
      const [row] = await sql<{ found: boolean }[]>`SELECT to_regnamespace(${schema}) IS NOT NULL AS found`;
      assert.equal(row?.found, false, 'no schema was made');
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
});
