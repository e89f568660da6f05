import fs from 'node:fs';
import path from 'node:path';

/** A vm.Script a process made: its file, whether it was given a code cache, and whether V8 refused that cache. */
export interface ScriptMade {
  readonly filename: string;
  readonly cached: boolean;
  readonly rejected: boolean | undefined;
}

/**
 * A `--require` hook (for NODE_OPTIONS) that records each vm.Script the process makes, as a
 * bundle's generated entry compiles its bundle (scripts/bundle.mjs); `made()` reads them
 * once the process has exited.
 */
export function scriptHook(dir: string, name: string): { readonly nodeOptions: string; made(): ScriptMade[] } {
  const report = path.join(dir, `${name}.json`);
  const hook = path.join(dir, `${name}.cjs`);
  fs.writeFileSync(
    hook,
    "const vm = require('node:vm'); const fs = require('node:fs'); const Script = vm.Script; const made = [];\n" +
      'vm.Script = function (code, options) { const s = new Script(code, options); made.push({ filename: options?.filename, cached: options?.cachedData !== undefined, rejected: s.cachedDataRejected }); return s; };\n' +
      `process.on('exit', () => fs.writeFileSync(${JSON.stringify(report)}, JSON.stringify(made)));\n`,
  );
  return { nodeOptions: `--require ${hook}`, made: () => JSON.parse(fs.readFileSync(report, 'utf8')) as ScriptMade[] };
}
