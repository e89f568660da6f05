import type { StatusReport } from '../../types.ts';
import type { RateStore } from '../concerns/rate.ts';
import type { RateGrant } from '../store.ts';
import type { SqliteConnection } from './connection.ts';

/**
 * Rate windows and channel pauses on SQLite (see RateStore). A take runs in one
 * BEGIN IMMEDIATE transaction, so every process on the file sees the windows one at a
 * time; the clock is this machine's (SQLite lives on one machine).
 */
export function makeSqliteRate(c: SqliteConnection): RateStore {
  const { stmt, immediate } = c;
  return {
    async takeRateSlot(channelId, keys) {
      return immediate((): RateGrant => {
        const now = Date.now();
        const pause = stmt('SELECT paused_until FROM channels WHERE id = ?').get(channelId) as { paused_until: number | null } | undefined;
        const pausedFor = Math.max(0, (pause?.paused_until ?? 0) - now);
        let waitMs = pausedFor;
        const windows = keys.map((k) => {
          const row = stmt('SELECT stamps FROM rate_windows WHERE key = ?').get(k.key) as { stamps: string } | undefined;
          const stamps = row === undefined ? [] : (JSON.parse(row.stamps) as number[]);
          const recent = stamps.filter((s) => s > now - k.windowMs).sort((a, b) => a - b);
          // free once the limit-th newest send leaves the window
          const bound = recent[recent.length - k.limit];
          if (bound !== undefined) waitMs = Math.max(waitMs, bound + k.windowMs - now);
          return { key: k.key, kept: [...recent, now].slice(-k.limit) };
        });
        if (waitMs > 0) return { granted: false, waitMs, paused: pausedFor > 0 };
        const save = stmt('INSERT INTO rate_windows (key, stamps) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET stamps = excluded.stamps');
        for (const w of windows) save.run(w.key, JSON.stringify(w.kept));
        return { granted: true, at: now };
      });
    },

    async settleRateSlot(keys, at) {
      await immediate(() => {
        const now = Date.now();
        for (const key of keys) {
          const row = stmt('SELECT stamps FROM rate_windows WHERE key = ?').get(key) as { stamps: string } | undefined;
          const stamps = row === undefined ? [] : (JSON.parse(row.stamps) as number[]);
          const i = stamps.indexOf(at);
          // a send that outlived its window had its stamp dropped by a later take: its end is counted anew
          if (i < 0) stamps.push(Math.max(at, now));
          else stamps[i] = Math.max(at, now);
          stmt('UPDATE rate_windows SET stamps = ? WHERE key = ?').run(JSON.stringify(stamps.sort((a, b) => a - b)), key);
        }
      });
    },

    async acquireSendSlot(key, cap, holder, ttlMs) {
      return immediate(() => {
        const now = Date.now();
        stmt('DELETE FROM send_slots WHERE key = ? AND expires_at <= ?').run(key, now);
        const taken = new Set((stmt('SELECT slot FROM send_slots WHERE key = ?').all(key) as { slot: number }[]).map((r) => r.slot));
        const free = Array.from({ length: cap }, (_, i) => i).find((slot) => !taken.has(slot));
        if (free === undefined) return false;
        stmt('INSERT INTO send_slots (key, slot, holder, expires_at) VALUES (?, ?, ?, ?)').run(key, free, holder, now + ttlMs);
        return true;
      });
    },

    async releaseSendSlot(key, holder) {
      await immediate(() => stmt('DELETE FROM send_slots WHERE key = ? AND holder = ?').run(key, holder));
    },

    async pauseChannel(channelId, delayMs, reason) {
      await immediate(() => {
        const until = Date.now() + Math.max(0, Math.round(delayMs));
        stmt(
          `UPDATE channels SET paused_until = ?, pause_reason = ?
            WHERE id = ? AND (paused_until IS NULL OR paused_until < ?)`,
        ).run(until, reason, channelId, until);
      });
    },
  };
}

/** The channels a network's 429 paused until a time still ahead (status shows them). */
export function sqlitePausedChannels(c: SqliteConnection): StatusReport['pausedChannels'] {
  const { stmt } = c;
  const rows = stmt('SELECT name, paused_until, pause_reason FROM channels WHERE paused_until > ? ORDER BY paused_until, name').all(Date.now()) as {
    name: string;
    paused_until: number;
    pause_reason: string | null;
  }[];
  return rows.map((r) => ({ channel: r.name, until: new Date(r.paused_until), reason: r.pause_reason }));
}
