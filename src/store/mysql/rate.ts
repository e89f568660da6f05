import type { StatusReport } from '../../types.ts';
import type { RateKey, RateStore } from '../concerns/rate.ts';
import type { MysqlConnection, MysqlTx } from './connection.ts';

/** The database's clock as epoch ms (the session's time_zone is UTC, NOW(3) has ms). */
const NOW_MS = 'ROUND(UNIX_TIMESTAMP(NOW(3)) * 1000)';

/** How often a taker of a send slot that lost it to another taker of the same slot tries the next free one. */
const SLOT_TRIES = 4;

/**
 * Rate windows and channel pauses on MySQL/MariaDB (see RateStore). PostgreSQL takes a
 * slot in one call of a plpgsql function (its migration 6); here it is one short
 * transaction of the store's that does what the function does: it locks the windows'
 * rows in key order (two takers of overlapping sets cannot deadlock), reads the
 * database's clock only once they are held (a stamp is never earlier than the send),
 * computes the waits, and writes every window's stamps (a JSON array) or none. Workers on
 * every host share the same windows.
 */
export function makeMysqlRate(c: MysqlConnection): RateStore {
  const { q, exec, tx } = c;
  return {
    async takeRateSlot(channelId, keys) {
      const byKey = new Map<string, RateKey>(keys.map((k) => [k.key, k]));
      const sorted = [...byKey.keys()].sort(byteOrder);
      return tx(async (t) => {
        const windows = await lockWindows(t, sorted, true);
        // the clock, read once the windows are locked, and the channel's pause (a 429)
        const [clock] = await t.q<{ now_ms: number; paused_ms: number | null }>(
          `SELECT ${NOW_MS} AS now_ms, (SELECT CEIL(UNIX_TIMESTAMP(paused_until) * 1000) FROM channels WHERE id = ?) AS paused_ms`,
          [channelId],
        );
        const now = clock?.now_ms ?? 0;
        const pausedFor = Math.max(0, (clock?.paused_ms ?? 0) - now);
        let waitMs = pausedFor;
        const kept = new Map<string, number[]>();
        for (const [key, stamps] of windows) {
          const k = byKey.get(key);
          if (k === undefined) continue;
          const win = Math.round(k.windowMs);
          const recent = stamps.filter((s) => s > now - win).sort((a, b) => a - b);
          // free once the limit-th newest send leaves the window
          const bound = recent[recent.length - k.limit];
          if (recent.length >= k.limit && bound !== undefined) waitMs = Math.max(waitMs, bound + win - now);
          kept.set(key, k.limit > 0 ? [...recent, now].sort((a, b) => a - b).slice(-k.limit) : []);
        }
        if (waitMs > 0) return { granted: false, waitMs, paused: pausedFor > 0 };
        await saveWindows(t, kept);
        return { granted: true, at: now };
      });
    },

    async settleRateSlot(keys, at) {
      const sorted = [...new Set(keys)].sort(byteOrder);
      if (sorted.length === 0) return;
      // One occurrence of `at` (the first) becomes the database's now; the rest stay. A
      // send that outlived its window had its stamp dropped by a later take: its end is
      // counted anew. The rows are locked in key order, as a take locks them, so a take
      // and a settle of the same windows cannot deadlock; a window that is not there is
      // left alone.
      await tx(async (t) => {
        const windows = await lockWindows(t, sorted, false);
        if (windows.size === 0) return;
        const [clock] = await t.q<{ now_ms: number }>(`SELECT ${NOW_MS} AS now_ms`);
        const end = Math.max(at, clock?.now_ms ?? 0);
        const settled = new Map<string, number[]>();
        for (const [key, stamps] of windows) {
          const i = stamps.indexOf(at);
          const rest = i < 0 ? stamps : [...stamps.slice(0, i), ...stamps.slice(i + 1)];
          settled.set(key, [...rest, end].sort((a, b) => a - b));
        }
        await saveWindows(t, settled);
      });
    },

    async acquireSendSlot(key, cap, holder, ttlMs) {
      await exec('DELETE FROM send_slots WHERE `key` = ? AND expires_at <= NOW(3)', [key]);
      // The lowest free slot; two takers of the same one collide on its key and one of
      // them inserts nothing (INSERT IGNORE), so the cap is never exceeded. The loser
      // reads again and tries the next free one (PostgreSQL's single statement leaves it
      // without), so that `cap` concurrent takers get `cap` slots.
      for (let attempt = 0; attempt < SLOT_TRIES; attempt++) {
        const held = await q<{ slot: number }>('SELECT slot FROM send_slots WHERE `key` = ?', [key]);
        const taken = new Set(held.map((r) => r.slot));
        const free = Array.from({ length: cap }, (_, i) => i).find((slot) => !taken.has(slot));
        if (free === undefined) return false;
        const { affectedRows } = await exec('INSERT IGNORE INTO send_slots (`key`, slot, holder, expires_at) VALUES (?, ?, ?, NOW(3) + INTERVAL ? MICROSECOND)', [
          key,
          free,
          holder,
          Math.round(ttlMs) * 1000,
        ]);
        if (affectedRows > 0) return true;
      }
      return false;
    },

    async releaseSendSlot(key, holder) {
      await exec('DELETE FROM send_slots WHERE `key` = ? AND holder = ?', [key, holder]);
    },

    async pauseChannel(channelId, delayMs, reason) {
      const us = Math.max(0, Math.round(delayMs)) * 1000;
      await exec(
        `UPDATE channels SET paused_until = NOW(3) + INTERVAL ? MICROSECOND, pause_reason = ?
          WHERE id = ? AND (paused_until IS NULL OR paused_until < NOW(3) + INTERVAL ? MICROSECOND)`,
        [us, reason, channelId, us],
      );
    },
  };
}

/**
 * Locks the rows of the windows `sorted` (keys in ascending byte order, the primary key's
 * order, which is the order FOR UPDATE takes them in) and returns their stamps. With
 * `create`, the missing ones are made first (INSERT IGNORE, in the same order) and then
 * locked: a window's first take is the only one that pays for it.
 */
async function lockWindows(t: MysqlTx, sorted: readonly string[], create: boolean): Promise<Map<string, number[]>> {
  if (sorted.length === 0) return new Map();
  const read = async () =>
    new Map(
      (await t.q<{ key: string; stamps: unknown }>('SELECT `key`, stamps FROM rate_windows WHERE `key` IN (?) ORDER BY `key` FOR UPDATE', [sorted])).map((r) => [
        r.key,
        stampsFrom(r.stamps),
      ]),
    );
  const found = await read();
  if (!create || found.size === sorted.length) return found;
  const missing = sorted.filter((k) => !found.has(k));
  await t.exec('INSERT IGNORE INTO rate_windows (`key`, stamps) VALUES ?', [missing.map((k) => [k, '[]'])]);
  return read();
}

/** Writes each window's stamps in one statement. */
async function saveWindows(t: MysqlTx, stamps: ReadonlyMap<string, readonly number[]>): Promise<void> {
  if (stamps.size === 0) return;
  const entries = [...stamps];
  await t.exec(`UPDATE rate_windows SET stamps = CASE \`key\` ${entries.map(() => 'WHEN ? THEN ?').join(' ')} END WHERE \`key\` IN (?)`, [
    ...entries.flatMap(([key, s]) => [key, JSON.stringify(s)]),
    entries.map(([key]) => key),
  ]);
}

/** A JSON array of epoch ms as the driver hands it: text (MariaDB) or parsed (MySQL). */
function stampsFrom(value: unknown): number[] {
  let parsed: unknown = value;
  if (typeof value === 'string') {
    try {
      parsed = JSON.parse(value);
    } catch {
      parsed = [];
    }
  }
  return Array.isArray(parsed) ? parsed.map(Number).filter((n) => Number.isFinite(n)) : [];
}

/** The primary key's order (utf8mb4_bin compares bytes; for these ASCII keys, code units agree). */
function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** The channels a network's 429 paused until a time still ahead (status shows them). */
export async function mysqlPausedChannels(c: MysqlConnection): Promise<StatusReport['pausedChannels']> {
  const rows = await c.q<{ name: string; paused_until: Date; pause_reason: string | null }>(
    'SELECT name, paused_until, pause_reason FROM channels WHERE paused_until > NOW(3) ORDER BY paused_until, name',
  );
  return rows.map((r) => ({ channel: r.name, until: r.paused_until, reason: r.pause_reason }));
}
