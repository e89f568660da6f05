import type { CoordinationStore } from '../concerns/coordination.ts';
import { holderDead, makeHolder } from '../holder.ts';
import type { SqliteConnection } from './connection.ts';

/**
 * How often watchDue reads the file's data_version (a change by another process may
 * have moved the next due time). 50 ms: the read costs ~5 µs (measured; nextDue's indexed
 * look-up with 100,000 posts pending, ~6 µs), and it says only that something was written,
 * so the daemon reads nextDue only then; a post scheduled to go out at once waits at most
 * this long to be seen.
 */
const DUE_POLL_MS = 50;

/**
 * Coordination rows on SQLite (see CoordinationStore): each write one BEGIN IMMEDIATE
 * transaction, on this machine's clock; the watch of the due posts reads the file's
 * data_version.
 */
export function makeSqliteCoordination(c: SqliteConnection): CoordinationStore {
  const { db, stmt, immediate } = c;
  /** This store's identity in cycle_locks: one per connection. */
  const holder = makeHolder();
  return {
    async tryLockCycle(host: string, ttlMs: number) {
      return immediate(() => {
        const now = Date.now();
        const held = stmt('SELECT holder, machine, pid, expires_at FROM cycle_locks WHERE host = ?').get(host) as
          | { holder: string; machine: string; pid: number; expires_at: number }
          | undefined;
        if (held !== undefined && held.holder !== holder.id && held.expires_at > now && !holderDead(held)) return false;
        stmt(
          `INSERT INTO cycle_locks (host, holder, machine, pid, locked_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (host) DO UPDATE SET holder = excluded.holder, machine = excluded.machine, pid = excluded.pid,
                                            locked_at = excluded.locked_at, expires_at = excluded.expires_at`,
        ).run(host, holder.id, holder.machine, holder.pid, now, now + ttlMs);
        return true;
      });
    },

    async renewCycleLock(host, ttlMs) {
      return immediate(() => stmt('UPDATE cycle_locks SET expires_at = ? WHERE host = ? AND holder = ?').run(Date.now() + ttlMs, host, holder.id).changes > 0);
    },

    async unlockCycle(host: string) {
      await immediate(() => stmt('DELETE FROM cycle_locks WHERE host = ? AND holder = ?').run(host, holder.id));
    },

    async acquireWorkerSlots(host, workers, cap, ttlMs) {
      if (workers.length === 0) return [];
      return immediate(() => {
        const now = Date.now();
        stmt('DELETE FROM worker_slots WHERE expires_at <= ?').run(now);
        const taken = new Set((stmt('SELECT slot FROM worker_slots').all() as { slot: number }[]).map((r) => r.slot));
        const free = Array.from({ length: cap }, (_, i) => i).filter((slot) => !taken.has(slot));
        const insert = stmt('INSERT INTO worker_slots (slot, holder, host, machine, pid, expires_at) VALUES (?, ?, ?, ?, ?, ?)');
        const got = workers.slice(0, free.length);
        got.forEach((worker, i) => insert.run(free[i], worker, host, holder.machine, holder.pid, now + ttlMs));
        return got;
      });
    },

    async renewWorkerSlots(workers, ttlMs) {
      if (workers.length === 0) return [];
      return immediate(() => {
        const renew = stmt('UPDATE worker_slots SET expires_at = ? WHERE holder = ?');
        const until = Date.now() + ttlMs;
        return workers.filter((w) => renew.run(until, w).changes > 0);
      });
    },

    async releaseWorkerSlots(workers) {
      if (workers.length === 0) return;
      await immediate(() => {
        const release = stmt('DELETE FROM worker_slots WHERE holder = ?');
        for (const w of workers) release.run(w);
      });
    },

    watchDue(onChange: () => void) {
      // data_version changes when another connection commits: one read of shared memory,
      // no table touched, so it can be read often
      const version = () => db.pragma('data_version', { simple: true }) as number;
      let last = version();
      const timer = setInterval(() => {
        try {
          const now = version();
          if (now !== last) {
            last = now;
            onChange();
          }
        } catch {
          // the file is briefly unreadable: the next tick reads again
        }
      }, DUE_POLL_MS);
      timer.unref();
      queueMicrotask(onChange);
      return Promise.resolve({
        close: () => {
          clearInterval(timer);
          return Promise.resolve();
        },
      });
    },
  };
}
