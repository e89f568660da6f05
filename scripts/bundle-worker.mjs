// Builds the worker process's entry point as one CommonJS file. A worker starts
// several times a minute, five at once: loading one CJS file skips Node's ESM loader
// and the CJS-in-ESM translation of its dependencies, measured at ~40-60 ms of CPU
// per start on these machines. better-sqlite3 stays outside (a native addon), and so does mysql2.
import fs from 'node:fs';
import { build } from 'esbuild';

await build({
  entryPoints: ['src/workers/post-scheduler.worker-runner.ts'],
  outfile: 'dist/workers/post-scheduler.worker-runner.cjs',
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // mysql2 too: a worker on SQLite or PostgreSQL never parses it (required only on MySQL)
  external: ['better-sqlite3', 'mysql2', 'mysql2/promise'],
  logLevel: 'warning',
});

// dist/cli.js is the package's `bin`: executable, so a checkout's build runs as
// `post-scheduler` through a symlink on PATH (deploy/crontab) as an npm install does.
fs.chmodSync('dist/cli.js', 0o755);
