import fs from 'node:fs';
import path from 'node:path';

/**
 * Where better-sqlite3's addon is, for its `nativeBinding` option, in the bundles of
 * the worker and of the CLI: given the path, it skips the `bindings` package's search of
 * a dozen places (measured at 6-10 ms of CPU of each worker's start). Nothing where there
 * is no `require` (tsc's ES modules, the sources under tsx) or the addon is not where a
 * build puts it: better-sqlite3 then searches as usual.
 */
export function nativeBindingOption(): { nativeBinding?: string } {
  // an ES module has no `require`; the worker's bundle (scripts/bundle.mjs) has one
  if (typeof require !== 'function') return {};
  try {
    const file = path.join(path.dirname(require.resolve('better-sqlite3')), '..', 'build', 'Release', 'better_sqlite3.node');
    return fs.existsSync(file) ? { nativeBinding: file } : {};
  } catch {
    return {};
  }
}
