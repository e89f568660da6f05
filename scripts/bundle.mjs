// Bundles the two programs that start often: the worker process and the CLI.
// Loading one file skips Node's ES module loader for each of the ~80 files tsc emits
// and for the CommonJS packages among them; measured at 30-40 ms of each start.
import fs from 'node:fs';
import path from 'node:path';
import { build } from 'esbuild';

// The worker, as one CommonJS file: it starts several times a minute, five at once, and
// CommonJS also skips the CJS-in-ESM translation of its dependencies (~40-60 ms of CPU
// per start measured on these machines). better-sqlite3's JavaScript is in it, its addon
// loaded by path (src/store/sqlite/native-binding.ts): its ten files through Node's CJS
// loader cost a SQLite worker 6 ms of CPU per start, and their path handling ran hot
// enough for TurboFan to compile node:path's code before the worker's V8 flags turn it off
// (+3.5 MB of the node binary's code resident; see src/workers/v8-settings.ts). mysql2
// stays outside: a worker on SQLite or PostgreSQL never parses it.
await build({
  entryPoints: ['src/workers/post-scheduler.worker-runner.ts'],
  outfile: 'dist/workers/post-scheduler.worker-runner.cjs',
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['mysql2', 'mysql2/promise'],
  logLevel: 'warning',
});

// The CLI (`cron` every minute from system cron), as an ES module that replaces tsc's
// dist/cli.js: what a command imports lazily (a database's driver, a network's
// publisher, the HTTP server) becomes a chunk of its own in dist/chunks/, so `cron`
// loads three files of this package. The HTTP server's packages stay outside (loaded
// only by `serve`), like the MySQL driver; better-sqlite3's JavaScript is in (as in
// the worker: an empty SQLite `cron` 108 -> 97 ms of CPU). Bundled CommonJS packages
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
  external: ['mysql2', 'mysql2/promise', 'fastify', '@fastify/*', 'prom-client'],
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
