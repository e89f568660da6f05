import fs from 'node:fs';
import path from 'node:path';
import { StoreError } from '../store.ts';

/**
 * Makes sure a SQLite database file can be created: walks up from its folder to the
 * nearest ancestor that exists, checks that it is a directory this process may write
 * into, then creates the missing folders one level at a time. Node's recursive mkdir
 * loops forever on some paths (under /proc, for one), so it is never used here.
 * Throws StoreError with one line naming the file and the reason.
 *
 * `created`: the database file did not exist before (opening it will create it).
 */
export function prepareDatabaseFile(file: string): { created: boolean } {
  const target = path.resolve(file);
  const fail = (reason: string): never => {
    throw new StoreError(`cannot create the folder for SQLite database ${target}: ${reason}`);
  };

  const existing = statOrNull(target, fail);
  if (existing !== null) {
    if (existing.isDirectory()) throw new StoreError(`cannot open SQLite database ${target}: it is a directory`);
    return { created: false };
  }

  // The missing folders, from the innermost up to (not including) the nearest existing ancestor.
  const missing: string[] = [];
  let dir = path.dirname(target);
  let stat = statOrNull(dir, fail);
  while (stat === null) {
    missing.push(dir);
    const parent = path.dirname(dir);
    if (parent === dir) fail(`no part of ${dir} exists`);
    dir = parent;
    stat = statOrNull(dir, fail);
  }
  if (!stat.isDirectory()) fail(`${dir} is not a directory`);
  try {
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
  } catch {
    fail(`${dir} is not writable`);
  }

  for (const folder of missing.reverse()) {
    try {
      fs.mkdirSync(folder);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // another process made it in the meantime
      if (code === 'EEXIST' && statOrNull(folder, fail)?.isDirectory() === true) continue;
      // ENOENT: a parent that refuses new entries (such as /proc), even for root
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS' || code === 'ENOENT') fail(`${path.dirname(folder)} is not writable`);
      fail(`cannot create ${folder} (${code ?? (e as Error).message})`);
    }
  }
  return { created: true };
}

/** The stat of `p`, or null when nothing is there; any other failure is reported through `fail`. */
function statOrNull(p: string, fail: (reason: string) => never): fs.Stats | null {
  try {
    return fs.statSync(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ENOTDIR') return fail(`${nearestFile(p)} is not a directory`);
    if (code === 'EACCES') return fail(`permission denied on ${p}`);
    return fail(`cannot read ${p} (${code ?? (e as Error).message})`);
  }
}

/** The nearest ancestor of `p` that exists and is not a directory (the cause of ENOTDIR). */
function nearestFile(p: string): string {
  let dir = p;
  for (let parent = path.dirname(dir); parent !== dir; parent = path.dirname(dir)) {
    dir = parent;
    try {
      if (!fs.statSync(dir).isDirectory()) return dir;
    } catch {
      // not there either: keep walking up
    }
  }
  return p;
}
