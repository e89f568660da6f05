// Bundles the two programs that start often: the worker process and the CLI.
// Loading one file skips Node's ES module loader for each of the ~80 files tsc emits
// and for the CommonJS packages among them; measured at 30-40 ms of each start.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { build } from 'esbuild';

/**
 * `import()` of a built-in or of a package left outside the bundle, as a lazy require: the
 * bundles are compiled from a code cache, where import() fails (below).
 */
const byRequire = (outside) => ({
  name: 'import-by-require',
  setup(b) {
    const isOutside = (p) => p.startsWith('node:') || outside.some((o) => (o.endsWith('/*') ? p.startsWith(o.slice(0, -1)) : p === o));
    b.onResolve({ filter: /.*/ }, (args) => (args.kind === 'dynamic-import' && isOutside(args.path) ? { path: args.path, namespace: 'by-require' } : undefined));
    b.onLoad({ filter: /.*/, namespace: 'by-require' }, (args) => ({ contents: `module.exports = require(${JSON.stringify(args.path)});`, loader: 'js' }));
  },
});

/** One CommonJS file of `entryPoint` and what it imports, but `outside`; the build fails on any import() left in it. */
async function bundle(entryPoint, outside, what) {
  const result = await build({
    entryPoints: [entryPoint],
    outfile: `dist/${what}.cjs`,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    external: outside,
    plugins: [byRequire(outside)],
    // src/paths.ts finds the package from its file's URL: the bundle's, in a bundle
    define: { 'import.meta.url': '__bundleFileUrl' },
    banner: { js: "const __bundleFileUrl = require('node:url').pathToFileURL(__filename).href;" },
    write: false,
    metafile: true,
    logLevel: 'warning',
  });
  const dynamicImports = Object.values(result.metafile.outputs).flatMap((o) => o.imports.filter((i) => i.kind === 'dynamic-import').map((i) => i.path));
  if (dynamicImports.length > 0) {
    throw new Error(`the ${what} bundle imports ${dynamicImports.join(', ')} with import(), which fails in code compiled from a code cache: use a static import or require`);
  }
  // a hashbang (src/cli.ts) belongs to the entry, not inside the function the entry wraps it in
  return result.outputFiles[0].text.replace(/^#!.*\n/, '');
}

// A bundle's entry (what runs: the CLI's command, the worker the dispatcher forks) is a
// small generated file that compiles the bundle from a V8 code cache made of it here,
// instead of from its source at each start (12 ms of a PostgreSQL worker's ~100 ms of
// CPU in a profile; 7-8 ms less per worker start, ~19 ms less per `cron` on PostgreSQL,
// measured, BENCHMARKS.md). The cache is made with no V8 flag set, as the programs run
// (a worker sets its flags later: src/workers/v8-settings.ts). V8 refuses a cache made by
// another version or under other flags (the bundle then compiles from source, as without
// a cache), but Node 20's V8 checks only the source's length, not its text: so a bundle's
// name carries a hash of its text, its cache is named after it, and the entry, written
// last, names them both (a process started during a build, or from an older entry, finds
// the pair it names; earlier pairs go once a day old). In Node 20, code compiled from a
// code cache has no dynamic import() (vm's importModuleDynamically is lost with the
// cache): the bundles load built-ins and the packages left outside with require
// (byRequire, above; the build fails on any other import() it finds), and the entry puts
// an import() of its own where a `module` channel's user module is imported
// (src/publishers/module.ts).
// "use strict" first in the function: the banner (import.meta.url, above) comes before
// esbuild's own directive, which then no longer counts; an ES module was strict.
const WRAPPER = ['(function (exports, require, module, __filename, __dirname) {"use strict";', '\n})'];
const DAY_MS = 24 * 60 * 60 * 1000;
/**
 * writes `file` whole or not at all, with its mode: a process starting meanwhile reads the
 * old one or the new one (an executable one, for the bin)
 */
const writeWhole = (file, contents, mode = 0o644) => {
  fs.writeFileSync(`${file}.tmp-${process.pid}`, contents, { mode });
  fs.chmodSync(`${file}.tmp-${process.pid}`, mode);
  fs.renameSync(`${file}.tmp-${process.pid}`, file);
};
/** the bundle an earlier build's entry names: kept a day from now, as it may be running */
const namedBy = (entryFile, prefix) => {
  try {
    return new RegExp(`"(${prefix}-[0-9a-f]+\\.cjs)"`).exec(fs.readFileSync(entryFile, 'utf8'))?.[1] ?? null;
  } catch {
    return null;
  }
};
function writeCachedEntry({ text, dir, prefix, entry, hashbang = '' }) {
  // The bundle as the function its entry calls: compiled as it is, never joined to a
  // wrapper at run time (a second copy of its source in memory). Its source stays in the
  // process as long as its functions (V8 compiles most of them from it when first called):
  // in ASCII it is a one-byte string; one other character anywhere made both bundles
  // two-byte strings, +3.5 MB of a dispatcher's RSS measured (src/publishers/bluesky-text.ts).
  const wrapped = WRAPPER[0] + text + WRAPPER[1];
  const nonAscii = /[^\t\n\r\x20-\x7e]/u.exec(wrapped);
  if (nonAscii !== null) {
    const around = JSON.stringify(wrapped.slice(Math.max(0, nonAscii.index - 40), nonAscii.index + 20));
    throw new Error(`${prefix}: a character outside printable ASCII (U+${nonAscii[0].codePointAt(0).toString(16).toUpperCase()}) in ${around}: escape it in the source (esbuild leaves those in regular expressions)`);
  }
  const bundleName = `${prefix}-${createHash('sha256').update(wrapped).digest('hex').slice(0, 16)}.cjs`;
  const bundleFile = path.resolve(dir, bundleName);
  writeWhole(bundleFile, wrapped);
  writeWhole(`${bundleFile}.cache`, new vm.Script(wrapped, { filename: bundleFile }).createCachedData());
  const earlier = namedBy(path.join(dir, entry), prefix);
  if (earlier !== null && earlier !== bundleName) {
    const now = new Date();
    for (const file of [earlier, `${earlier}.cache`]) if (fs.existsSync(path.join(dir, file))) fs.utimesSync(path.join(dir, file), now, now);
  }
  writeWhole(
    path.join(dir, entry),
    `${hashbang}'use strict';
// Generated by scripts/bundle.mjs: runs ${bundleName}, compiled from the V8 code cache the build made of it.
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const file = path.join(__dirname, ${JSON.stringify(bundleName)});
let cachedData;
try {
  cachedData = fs.readFileSync(file + '.cache');
} catch {
  // no cache: the bundle compiles from its source
}
globalThis[Symbol.for('post-scheduler.importUserModule')] = (url) => import(url);
// ASCII (the build checks): read as latin1, a one-byte string without UTF-8 decoding
const script = new vm.Script(fs.readFileSync(file, 'latin1'), { filename: file, cachedData });
const bundle = { exports: {}, filename: file };
script.runInThisContext().call(bundle.exports, bundle.exports, require('node:module').createRequire(file), bundle, file, __dirname);
`,
    hashbang === '' ? 0o644 : 0o755,
  );
  for (const name of fs.readdirSync(dir)) {
    const file = path.resolve(dir, name);
    const old = name.startsWith(`${prefix}-`) && !name.startsWith(bundleName);
    if (old && fs.statSync(file).mtimeMs < Date.now() - DAY_MS) fs.rmSync(file);
  }
}

// The worker (forked several times a minute, five at once). As CommonJS it also skips the
// CJS-in-ESM translation of its dependencies (~40-60 ms of CPU per start measured on these
// machines). better-sqlite3's JavaScript is in it, its addon loaded by path
// (src/store/sqlite/native-binding.ts): its ten files through Node's CJS loader cost a
// SQLite worker 6 ms of CPU per start, and their path handling ran hot enough for TurboFan
// to compile node:path's code before the worker's V8 flags turn it off (+3.5 MB of the
// node binary's code resident; see src/workers/v8-settings.ts). mysql2 stays outside: a
// worker on SQLite or PostgreSQL never parses it.
writeCachedEntry({
  text: await bundle('src/workers/post-scheduler.worker-runner.ts', ['mysql2', 'mysql2/promise'], 'workers/post-scheduler.worker-bundle'),
  dir: 'dist/workers',
  prefix: 'post-scheduler.worker-bundle',
  entry: 'post-scheduler.worker-runner.cjs',
});

// The CLI (`cron` every minute from system cron) the same way: dist/cli.cjs, the package's
// `bin`. An ES module cannot start from a code cache in Node 20; the CLI was one with its
// lazy parts in chunks, and an empty PostgreSQL `cron` took 175 ms (140 ms of CPU) against
// 156 (120) now. What a command loads lazily (a database's driver, a network's publisher)
// is in the bundle, run when first imported. The HTTP server's packages stay outside (loaded
// only by `serve`), like the MySQL driver.
writeCachedEntry({
  text: await bundle('src/cli.ts', ['mysql2', 'mysql2/promise', 'fastify', '@fastify/*', 'prom-client'], 'cli-bundle'),
  dir: 'dist',
  prefix: 'cli-bundle',
  entry: 'cli.cjs',
  hashbang: '#!/usr/bin/env node\n',
});
// `node dist/cli.js` (tsc's output of src/cli.ts, replaced) runs the same command
writeWhole(
  'dist/cli.js',
  `#!/usr/bin/env node
// Generated by scripts/bundle.mjs: the command is dist/cli.cjs (package.json's bin); this runs it for \`node dist/cli.js\`.
import { createRequire } from 'node:module';

createRequire(import.meta.url)('./cli.cjs');
`,
  0o755,
);

// The chunks of the ES module CLI that earlier builds wrote go a day after the first build
// that stopped writing them (a stamp marks it), not at once: a process started before it
// (a `serve`, a `daemon`) may still load one.
const chunks = 'dist/chunks';
if (fs.existsSync(chunks)) {
  const stamp = path.join(chunks, '.retired');
  if (!fs.existsSync(stamp)) fs.writeFileSync(stamp, 'written by scripts/bundle.mjs: this folder goes a day after this file was made\n');
  if (fs.statSync(stamp).mtimeMs < Date.now() - DAY_MS) fs.rmSync(chunks, { recursive: true, force: true });
}

// dist/cli.cjs is the package's `bin`, written executable (above): a checkout's build runs
// as `post-scheduler` through a symlink on PATH (deploy/crontab) as an npm install does.
