import type { Config } from '../config.ts';
import { openStore } from '../store/open.ts';
import type { Store } from '../store/store.ts';

/**
 * The store of a long-running server: opened (and migrated) on first use, and again on
 * the next request after a failure, so the server starts and /healthz answers while
 * the database is down, and recovers by itself when it comes back.
 */
export interface StoreSource {
  get(): Promise<Store>;
  close(): Promise<void>;
}

export function storeSource(config: Config): StoreSource {
  let opening: Promise<Store> | null = null;
  return {
    get() {
      opening ??= (async () => {
        const store = await openStore(config.database, { dbTimeoutMs: config.dbTimeoutMs });
        try {
          await store.migrate();
          return store;
        } catch (e) {
          await store.close().catch(() => undefined);
          throw e;
        }
      })().catch((e: unknown) => {
        opening = null;
        throw e;
      });
      return opening;
    },
    async close() {
      const open = opening;
      opening = null;
      if (open !== null) await open.then((s) => s.close(), () => undefined);
    },
  };
}
