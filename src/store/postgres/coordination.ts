import postgres from 'postgres';
import type { CoordinationStore } from '../concerns/coordination.ts';
import { holderDead, makeHolder } from '../holder.ts';
import { StoreError } from '../store.ts';
import { type PostgresConnection, type Sql, typeOptions } from './connection.ts';

/** The NOTIFY channel of a change to the due posts (trigger of migration 12), payload the schema. */
const DUE_CHANNEL = 'post_scheduler_due';

/** How long watchDue waits before listening again after its connection was lost. */
const WATCH_RETRY_MS = 1_000;

/**
 * Coordination rows on PostgreSQL (see CoordinationStore), each taken or renewed in one
 * statement on the database's clock; the watch of the due posts LISTENs on a connection
 * of its own.
 */
export function makePostgresCoordination(c: PostgresConnection): CoordinationStore {
  const { q, within, connectError, target, options } = c;
  const holder = makeHolder();
  return {
    async tryLockCycle(host, ttlMs) {
      // Taken when free, expired, or already ours; in one statement, so two dispatchers
      // racing for it cannot both win.
      const take = `INSERT INTO cycle_locks (host, holder, machine, pid, locked_at, expires_at)
                    VALUES ($1, $2, $3, $4, now(), now() + $5 * interval '1 millisecond')
                    ON CONFLICT (host) DO UPDATE
                      SET holder = excluded.holder, machine = excluded.machine, pid = excluded.pid,
                          locked_at = now(), expires_at = excluded.expires_at
                    WHERE cycle_locks.expires_at <= now() OR cycle_locks.holder = excluded.holder OR cycle_locks.holder = $6
                    RETURNING holder`;
      const values = [host, holder.id, holder.machine, holder.pid, ttlMs];
      if ((await q(take, [...values, holder.id])).length > 0) return true;
      // Held: by a process of this machine that died (free at once), or by a live one.
      const [row] = await q<{ holder: string; machine: string; pid: number }>('SELECT holder, machine, pid FROM cycle_locks WHERE host = $1', [host]);
      if (row === undefined || !holderDead(row)) return false;
      return (await q(take, [...values, row.holder])).length > 0;
    },

    async renewCycleLock(host, ttlMs) {
      const rows = await q(
        "UPDATE cycle_locks SET expires_at = now() + $3 * interval '1 millisecond' WHERE host = $1 AND holder = $2 RETURNING 1",
        [host, holder.id, ttlMs],
      );
      return rows.length > 0;
    },

    async unlockCycle(host) {
      await q('DELETE FROM cycle_locks WHERE host = $1 AND holder = $2', [host, holder.id]);
    },

    async acquireWorkerSlots(host, workers, cap, ttlMs) {
      if (workers.length === 0) return [];
      await q('DELETE FROM worker_slots WHERE expires_at <= now()');
      // Free slots, lowest first, paired with the workers in order. Two dispatchers that
      // pick the same free slot collide on its key: one row wins, the other is skipped
      // (ON CONFLICT DO NOTHING), so the cap is never exceeded, at worst under-used.
      const rows = await q<{ holder: string }>(
        `WITH free AS (
           SELECT g AS slot, row_number() OVER (ORDER BY g) AS n FROM generate_series(0, $1::int - 1) AS g
            WHERE NOT EXISTS (SELECT 1 FROM worker_slots w WHERE w.slot = g)
         ), wanted AS (
           SELECT holder, n FROM unnest($2::text[]) WITH ORDINALITY AS t(holder, n)
         )
         INSERT INTO worker_slots (slot, holder, host, machine, pid, expires_at)
         SELECT free.slot, wanted.holder, $3, $4, $5, now() + $6 * interval '1 millisecond' FROM free JOIN wanted USING (n)
         ON CONFLICT DO NOTHING
         RETURNING holder`,
        [cap, workers, host, holder.machine, holder.pid, ttlMs],
      );
      const got = new Set(rows.map((r) => r.holder));
      return workers.filter((w) => got.has(w));
    },

    async renewWorkerSlots(workers, ttlMs) {
      if (workers.length === 0) return [];
      const rows = await q<{ holder: string }>(
        "UPDATE worker_slots SET expires_at = now() + $2 * interval '1 millisecond' WHERE holder = ANY($1::text[]) RETURNING holder",
        [workers, ttlMs],
      );
      return rows.map((r) => r.holder);
    },

    async releaseWorkerSlots(workers) {
      if (workers.length === 0) return;
      await q('DELETE FROM worker_slots WHERE holder = ANY($1::text[])', [workers]);
    },

    async watchDue(onChange: () => void) {
      // A connection of its own, LISTENing; the trigger of migration 12 names the schema
      // in its payload (a database may hold several). A lost connection is opened again
      // every second until it listens again; then onChange, as notifications may be lost.
      let closed = false;
      let current: Sql | null = null;
      let retry: NodeJS.Timeout | undefined;
      const open = async (): Promise<void> => {
        // onnotify: an option of postgres.js (what its own listen() uses) its types leave out
        const notify = { onnotify: (_channel: string, payload: string) => payload === target.schema && onChange() };
        const listener: Sql = postgres(target.url, {
          ...(notify as object),
          ...typeOptions,
          max: 1,
          idle_timeout: 0,
          max_lifetime: null,
          connect_timeout: Math.max(1, Math.ceil(options.timeoutMs / 1000)),
          onnotice: () => undefined,
          onclose: () => {
            if (closed || current !== listener) return;
            current = null;
            listener.end({ timeout: 0 }).catch(() => undefined);
            reopen();
          },
          connection: { application_name: 'post-scheduler', search_path: target.schema },
        });
        try {
          await within(listener, (db) => db.unsafe(`LISTEN ${DUE_CHANNEL}`), options.timeoutMs, () => undefined);
        } catch (e) {
          await listener.end({ timeout: 0 }).catch(() => undefined);
          throw e instanceof StoreError ? e : connectError(e);
        }
        if (closed) {
          await listener.end({ timeout: 0 }).catch(() => undefined);
          return;
        }
        current = listener;
        onChange();
      };
      const reopen = (): void => {
        retry = setTimeout(() => {
          open().catch(() => {
            if (!closed) reopen();
          });
        }, WATCH_RETRY_MS);
      };
      await open();
      return {
        async close() {
          closed = true;
          clearTimeout(retry);
          const listener = current;
          current = null;
          await listener?.end({ timeout: 1 }).catch(() => undefined);
        },
      };
    },
  };
}
