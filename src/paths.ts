import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Where this program's own files are, whichever way it runs: from its TypeScript
 * sources under tsx (src/...), as tsc's output (dist/...), or as the CLI's bundle
 * (dist/cli-bundle-<hash>.cjs, scripts/bundle.mjs), where a module's `import.meta.url`
 * is the file it was bundled into, not its own. So no module finds its neighbours by a
 * relative path: they ask here, from the package's root.
 */
const here = fileURLToPath(import.meta.url);

/** true under tsx (the .ts sources), false when compiled (dist/) */
export const FROM_SOURCES = path.extname(here) === '.ts';

/** the folder with this package's package.json: the first one up from this file (none: this file's own) */
export const PACKAGE_ROOT = findRoot(path.dirname(here));

function findRoot(start: string): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) return start;
  }
}

/**
 * A file of the running build, by its path under src/ (`workers/x.ts`): the .ts source
 * itself under tsx, the compiled .js beside tsc's other output otherwise; other files
 * (`server/dashboard/static/`) keep their names.
 */
export function buildFile(underSrc: string): string {
  if (FROM_SOURCES) return path.join(PACKAGE_ROOT, 'src', underSrc);
  return path.join(PACKAGE_ROOT, 'dist', underSrc.replace(/\.ts$/, '.js'));
}
