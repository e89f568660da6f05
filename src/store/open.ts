import type { DatabaseTarget } from '../config.ts';
import type { Store } from './store.ts';

/**
 * Opens the store for a database target. Each dialect's driver is imported only
 * when chosen, so a process never loads the driver it does not use.
 */
export async function openStore(target: DatabaseTarget, options: { readonly dbTimeoutMs?: number } = {}): Promise<Store> {
  if (target.dialect === 'sqlite') {
    const { openSqliteStore } = await import('./sqlite/index.ts');
    return openSqliteStore(target.path);
  }
  if (target.dialect === 'mysql') {
    const { openMysqlStore } = await import('./mysql/index.ts');
    return openMysqlStore(target, { timeoutMs: options.dbTimeoutMs ?? 10_000 });
  }
  const { openPostgresStore } = await import('./postgres/index.ts');
  return openPostgresStore(target, { timeoutMs: options.dbTimeoutMs ?? 10_000 });
}
