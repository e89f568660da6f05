// `npm test`: makes sure a PostgreSQL server is there (see test-postgres.mjs), looks for a
// MySQL/MariaDB one (see test-mysql.mjs), runs every test file with node's test runner, and
// stops whatever it started.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensurePostgres } from './test-postgres.mjs';
import { findMysql } from './test-mysql.mjs';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const only = process.argv.slice(2);
const files =
  only.length > 0
    ? only
    : fs
        .readdirSync(path.join(root, 'test'))
        .filter((f) => f.endsWith('.test.ts'))
        .sort()
        .map((f) => path.join('test', f));

let pg;
let my;
try {
  my = await findMysql();
  if (my.url !== null) process.stdout.write(`[test] MySQL/MariaDB: ${my.version}\n`);
  pg = await ensurePostgres();
} catch (e) {
  process.stderr.write(`[test] ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
}
let code = 1;
try {
  const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', ...files], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, TEST_DATABASE_URL: pg.url, TEST_MYSQL_URL: my.url ?? 'none', TZ: 'UTC' },
  });
  const stop = (signal) => child.kill(signal);
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  code = await new Promise((resolve) => child.on('exit', (c, s) => resolve(c ?? (s === null ? 1 : 1))));
} finally {
  await pg.stop();
}
// the one visible line when the store's suites did not run on MySQL/MariaDB
if (my.url === null) process.stdout.write(`\n[test] ${my.line}\n`);
process.exit(code);
