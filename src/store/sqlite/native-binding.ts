import fs from 'node:fs';
import path from 'node:path';

/**
 * Where better-sqlite3's addon is, for its `nativeBinding` option, in the worker's
 * CommonJS bundle: given the path, it skips the `bindings` package's search of a dozen
 * places (measured at 6-10 ms of CPU of each worker's start). Nothing where there is no
 * CommonJS `require` (the ES modules of the CLI) or the addon is not where a build puts
 * it: better-sqlite3 then searches as usual.
 */
export function nativeBindingOption(): { nativeBinding?: string } {
  // an ES module has no `require`; the worker's bundle (scripts/bundle-worker.mjs) has one
  if (typeof require !== 'function') return {};
  try {
    const file = path.join(path.dirname(require.resolve('better-sqlite3')), '..', 'build', 'Release', 'better_sqlite3.node');
    return fs.existsSync(file) ? { nativeBinding: file } : {};
  } catch {
    return {};
  }
}
