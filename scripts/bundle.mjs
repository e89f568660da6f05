// Bundles the two programs that start often: the worker process and the CLI.
// Loading one file skips Node's ES module loader for each of the ~80 files tsc emits
// and for the CommonJS packages among them; measured at 30-40 ms of each start.
import fs from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';

// The worker, as one CommonJS file: it starts several times a minute, five at once, and
// CommonJS also skips the CJS-in-ESM translation of its dependencies (~40-60 ms of CPU
// per start measured on these machines). better-sqlite3 stays outside (a native addon),
// and so does mysql2: a worker on SQLite or PostgreSQL never parses it.
await build({
  entryPoints: ['src/workers/post-scheduler.worker-runner.ts'],
  outfile: 'dist/workers/post-scheduler.worker-runner.cjs',
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['better-sqlite3', 'mysql2', 'mysql2/promise'],
  logLevel: 'warning',
});

// The CLI (`cron` every minute from system cron), as an ES module that replaces tsc's
// dist/cli.js: what a command imports lazily (a database's driver, a network's
// publisher, the HTTP server) becomes a chunk of its own in dist/chunks/, so `cron`
// loads three files of this package. The HTTP server's packages stay outside (loaded
// only by `serve`), like the native and MySQL drivers. Bundled CommonJS packages
// (commander) call `require`, which an ES module lacks: the banner makes one.
const cli = await build({
  entryPoints: { cli: 'src/cli.ts' },
  outdir: 'dist',
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['better-sqlite3', 'mysql2', 'mysql2/promise', 'fastify', '@fastify/*', 'prom-client'],
  banner: { js: "import { createRequire as createRequireOfBundle } from 'node:module';\nconst require = createRequireOfBundle(import.meta.url);" },
  allowOverwrite: true,
  metafile: true,
  logLevel: 'warning',
});

// Chunks of earlier builds go once they are a day old, not at once: a process started
// before this build (a `serve`, a `cron` in its cycle) still loads the chunks it knows.
const current = new Set(Object.keys(cli.metafile.outputs).map((file) => path.resolve(file)));
const dayAgo = Date.now() - 24 * 60 * 60 * 1000;
for (const name of fs.readdirSync('dist/chunks')) {
  const file = path.resolve('dist/chunks', name);
  if (!current.has(file) && fs.statSync(file).mtimeMs < dayAgo) fs.rmSync(file);
}

// dist/cli.js is the package's `bin`: executable, so a checkout's build runs as
// `post-scheduler` through a symlink on PATH (deploy/crontab) as an npm install does.
fs.chmodSync('dist/cli.js', 0o755);
