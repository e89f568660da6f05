import { loadConfig, type Config, type ConfigInput } from '../config.ts';
import { printNotice } from '../log.ts';
import { openStore } from '../store/open.ts';
import type { Store } from '../store/store.ts';
import { OperationError } from '../operations/errors.ts';

/** An error the user can fix from what it says; printed as one line, exit 1. */
export class CliError extends Error {
  override name = 'CliError';
}

export interface GlobalFlags {
  databaseUrl?: string;
  logFormat?: string;
}

/** Config from the environment, with the global flags (and any command flags) on top. */
export function configFrom(globals: GlobalFlags, overrides: ConfigInput = {}): Config {
  return loadConfig(process.env, { DATABASE_URL: globals.databaseUrl, LOG_FORMAT: globals.logFormat, ...overrides });
}

/** Opens the store (migrating it), runs `fn`, closes it. */
export async function withStore<T>(config: Config, fn: (store: Store) => Promise<T>): Promise<T> {
  const store = await openStore(config.database, { dbTimeoutMs: config.dbTimeoutMs });
  // a command run from another folder would otherwise silently start an empty database
  if (store.created) printNotice(`created a new database ${config.databaseLabel}`, config.logFormat);
  try {
    await store.migrate();
    return await fn(store);
  } finally {
    await store.close();
  }
}

export function parsePositiveInt(value: string, what: string, max = 1_000_000): number {
  if (!/^\d+$/.test(value.trim()) || Number(value) < 1 || Number(value) > max) {
    throw new CliError(`${what} must be a whole number from 1 to ${max} (got "${value}")`);
  }
  return Number(value);
}

export function print(line = ''): void {
  process.stdout.write(line + '\n');
}

/** Runs an operation; its refusal (not found, conflict, invalid) becomes the command's one-line error. */
export async function operation<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof OperationError) throw new CliError(e.message);
    throw e;
  }
}
