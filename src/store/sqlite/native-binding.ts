import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

/**
 * Where better-sqlite3's addon is, for its `nativeBinding` option, in the bundles of
 * the worker and of the CLI (scripts/bundle.mjs), which carry better-sqlite3's JavaScript:
 * given the path, it skips the `bindings` package's search of a dozen places (measured at
 * 6-10 ms of CPU of each worker's start). Where a build did not put the addon in
 * build/Release, that search is run here from better-sqlite3's own directory (from a
 * bundle, `bindings` would start it from post-scheduler's) and the path it finds is
 * given (or its error, naming the places searched, thrown). Nothing where there is no `require` (tsc's ES modules, the sources under tsx):
 * better-sqlite3 is then loaded from node_modules and searches as usual.
 */
export function nativeBindingOption(): { nativeBinding?: string } {
  // an ES module has no `require`; the bundles have one
  if (typeof require !== 'function') return {};
  let root: string;
  try {
    root = path.dirname(require.resolve('better-sqlite3/package.json'));
  } catch {
    return {};
  }
  const file = path.join(root, 'build', 'Release', 'better_sqlite3.node');
  if (fs.existsSync(file)) return { nativeBinding: file };
  // better-sqlite3's own dependency, from its own directory
  const bindings = createRequire(path.join(root, 'package.json'))('bindings') as (options: { bindings: string; module_root: string; path: true }) => string;
  return { nativeBinding: bindings({ bindings: 'better_sqlite3.node', module_root: root, path: true }) };
}
