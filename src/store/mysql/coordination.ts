import { raw, type Connection } from 'mysql2/promise';
import type { CoordinationStore } from '../concerns/coordination.ts';
import { holderDead, makeHolder } from '../holder.ts';
import { StoreError } from '../store.ts';
import type { MysqlConnection } from './connection.ts';

/**
 * How often watchDue reads the due posts' fingerprint (DUE_FINGERPRINT). 50 ms, as
 * SQLite reads its data_version: the read is three look-ups at one end of an index and
 * one scan of the few channels' rows (EXPLAIN: "Select tables optimized away" for the
 * posts), one round trip on a connection of the watch's own: ~0.24 ms with 100,000 posts
 * pending (SELECT 1: ~0.1 ms; MariaDB 10.11 on this machine, measured). A post scheduled
 * to go out at once waits at most this long to be seen.
 */
const DUE_POLL_MS = 50;

/** How long watchDue waits before connecting again after its connection was lost. */
const WATCH_RETRY_MS = 1_000;

/**
 * What changes when a post may have become due earlier (MySQL has no LISTEN/NOTIFY, and
 * triggers cannot reach another session): a post inserted (the highest id), a pending
 * post scheduled, edited, retried or recovered (the latest updated_at among pending
 * posts: each of those writes it), the next due time itself, and a channel resumed (the
 * count of operator-paused channels). A claim or an outcome may change it too (a
 * pending post leaves); that costs the daemon one nextDue, as SQLite's data_version does.
 * No trigger keeps a quieter counter: MySQL's triggers run once per row (a 10,000-post
 * schedule would write one hot row 10,000 times) and, where binary logging is on, need
 * a privilege (SUPER or log_bin_trust_function_creators) an application seldom has.
 */
const DUE_FINGERPRINT = `SELECT (SELECT MAX(id) FROM post_schedule) AS last_id,
  (SELECT MIN(run_at) FROM post_schedule WHERE status = 'pending') AS next_run,
  (SELECT MAX(updated_at) FROM post_schedule WHERE status = 'pending') AS last_pending,
  (SELECT COUNT(*) FROM channels WHERE paused_at IS NOT NULL) AS paused`;

/** How often acquireWorkerSlots tries again for the workers whose slot another dispatcher took first. */
const SLOT_TRIES = 4;

const DUPLICATE_KEY = 1062;

/**
 * Coordination rows on MySQL/MariaDB (see CoordinationStore), on the database's clock
 * (NOW(3)). A cycle lock is taken in one short transaction (MySQL's INSERT ... ON
 * DUPLICATE KEY UPDATE has no WHERE); worker slots are numbered rows under a primary key,
 * so at most `cap` exist however many dispatchers insert at once. The watch of the due
 * posts polls (DUE_FINGERPRINT) on a connection of its own.
 */
export function makeMysqlCoordination(c: MysqlConnection): CoordinationStore {
  const { q, exec, tx, options, where } = c;
  const holder = makeHolder();
  const ttl = (ms: number): number => Math.max(0, Math.round(ms)) * 1000;
  return {
    async tryLockCycle(host, ttlMs) {
      // Taken when free, expired, ours, or held by a process of this machine that died.
      // The row is read FOR UPDATE, so two dispatchers racing for a held row take turns;
      // for a missing row both may insert, and the primary key lets one win.
      return tx(async (t) => {
        const [row] = await t.q<{ holder: string; machine: string; pid: number; expired: number | boolean }>(
          'SELECT holder, machine, pid, expires_at <= NOW(3) AS expired FROM cycle_locks WHERE host = ? FOR UPDATE',
          [host],
        );
        const values = [holder.id, holder.machine, holder.pid, ttl(ttlMs), host];
        if (row === undefined) {
          try {
            await t.exec(
              'INSERT INTO cycle_locks (holder, machine, pid, expires_at, host, locked_at) VALUES (?, ?, ?, NOW(3) + INTERVAL ? MICROSECOND, ?, NOW(3))',
              values,
            );
            return true;
          } catch (e) {
            if ((e as { errno?: number }).errno === DUPLICATE_KEY) return false;
            throw e;
          }
        }
        if (!(row.expired === 1 || row.expired === true || row.holder === holder.id || holderDead(row))) return false;
        await t.exec('UPDATE cycle_locks SET holder = ?, machine = ?, pid = ?, expires_at = NOW(3) + INTERVAL ? MICROSECOND, locked_at = NOW(3) WHERE host = ?', values);
        return true;
      });
    },

    async renewCycleLock(host, ttlMs) {
      const { affectedRows } = await exec('UPDATE cycle_locks SET expires_at = NOW(3) + INTERVAL ? MICROSECOND WHERE host = ? AND holder = ?', [
        ttl(ttlMs),
        host,
        holder.id,
      ]);
      return affectedRows > 0;
    },

    async unlockCycle(host) {
      await exec('DELETE FROM cycle_locks WHERE host = ? AND holder = ?', [host, holder.id]);
    },

    async acquireWorkerSlots(host, workers, cap, ttlMs) {
      if (workers.length === 0) return [];
      await exec('DELETE FROM worker_slots WHERE expires_at <= NOW(3)');
      // Free slots, lowest first, paired with the workers in order. Two dispatchers that
      // pick the same free slot collide on its primary key: one row wins, the other is
      // skipped (INSERT IGNORE), so the cap is never exceeded. The loser reads the free
      // slots again and tries the next ones for its remaining workers (PostgreSQL's one
      // statement leaves them without), so a burst of dispatchers fills the cap.
      const got = new Set<string>();
      for (let attempt = 0; attempt < SLOT_TRIES; attempt++) {
        const wanted = workers.filter((w) => !got.has(w));
        const taken = new Set((await q<{ slot: number }>('SELECT slot FROM worker_slots')).map((r) => r.slot));
        const free = Array.from({ length: cap }, (_, i) => i).filter((slot) => !taken.has(slot));
        const pairs = wanted.slice(0, free.length).map((worker, i) => ({ worker, slot: free[i] ?? 0 }));
        if (pairs.length === 0) break;
        const { affectedRows } = await exec('INSERT IGNORE INTO worker_slots (slot, holder, host, machine, pid, expires_at) VALUES ?', [
          pairs.map((p) => [p.slot, p.worker, host, holder.machine, holder.pid, raw(`NOW(3) + INTERVAL ${ttl(ttlMs)} MICROSECOND`)]),
        ]);
        if (affectedRows === pairs.length) {
          for (const p of pairs) got.add(p.worker);
          break;
        }
        // some lost their slot to another dispatcher: which ones won
        const mine = await q<{ slot: number; holder: string }>('SELECT slot, holder FROM worker_slots WHERE holder IN (?)', [pairs.map((p) => p.worker)]);
        const won = new Set(mine.map((r) => `${r.slot}\u0000${r.holder}`));
        for (const p of pairs) if (won.has(`${p.slot}\u0000${p.worker}`)) got.add(p.worker);
      }
      return workers.filter((w) => got.has(w));
    },

    async renewWorkerSlots(workers, ttlMs) {
      if (workers.length === 0) return [];
      // No UPDATE ... RETURNING: the update, then which of them are held. The holders are
      // these workers' ids, so the second statement sees what the first left.
      await exec('UPDATE worker_slots SET expires_at = NOW(3) + INTERVAL ? MICROSECOND WHERE holder IN (?)', [ttl(ttlMs), workers]);
      const held = new Set((await q<{ holder: string }>('SELECT holder FROM worker_slots WHERE holder IN (?)', [workers])).map((r) => r.holder));
      return workers.filter((w) => held.has(w));
    },

    async releaseWorkerSlots(workers) {
      if (workers.length === 0) return;
      await exec('DELETE FROM worker_slots WHERE holder IN (?)', [workers]);
    },

    async watchDue(onChange: () => void) {
      // A connection of its own, reading DUE_FINGERPRINT every DUE_POLL_MS; onChange when
      // it differs from the last read. A lost connection (or a read past DB_TIMEOUT_MS)
      // is opened again every second until it reads again; then onChange, as changes may
      // have been missed meanwhile.
      let closed = false;
      let conn: Connection | null = null;
      let timer: NodeJS.Timeout | undefined;
      let last = '';
      const read = async (on: Connection): Promise<string> => {
        const [rows] = await within(on.query(DUE_FINGERPRINT), options.timeoutMs);
        return JSON.stringify(rows);
      };
      const connect = async (): Promise<void> => {
        const made = await within(c.connectOther(), options.timeoutMs, (late) => late.destroy());
        try {
          last = await read(made);
        } catch (e) {
          made.destroy();
          throw e;
        }
        if (closed) made.destroy();
        else conn = made;
      };
      const schedule = (ms: number): void => {
        if (closed) return;
        timer = setTimeout(() => void poll(), ms);
        timer.unref();
      };
      const poll = async (): Promise<void> => {
        let changed: boolean;
        try {
          if (conn === null) {
            await connect();
            changed = true;
          } else {
            const now = await read(conn);
            changed = now !== last;
            last = now;
          }
        } catch {
          conn?.destroy();
          conn = null;
          schedule(WATCH_RETRY_MS);
          return;
        }
        if (closed) return;
        schedule(DUE_POLL_MS);
        if (changed) onChange();
      };
      try {
        await connect();
      } catch (e) {
        throw e instanceof StoreError ? e : new StoreError(`cannot watch MySQL at ${where}: ${(e as Error).message}`, { cause: e });
      }
      schedule(DUE_POLL_MS);
      onChange();
      return {
        async close() {
          closed = true;
          clearTimeout(timer);
          const open = conn;
          conn = null;
          if (open === null) return;
          await within(open.end(), 1_000).catch(() => undefined);
          open.destroy();
        },
      };
    },
  };
}

/** `work` within `ms`, or a StoreError; a result that comes later goes to `late`. */
async function within<T>(work: Promise<T>, ms: number, late?: (value: T) => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  let expired = false;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      expired = true;
      reject(new StoreError(`MySQL did not answer within ${ms} ms (DB_TIMEOUT_MS)`));
    }, ms);
  });
  work.then(
    (value) => {
      if (expired) late?.(value);
    },
    () => undefined,
  );
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
