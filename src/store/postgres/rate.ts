import type { StatusReport } from '../../types.ts';
import type { RateStore } from '../concerns/rate.ts';
import type { PostgresConnection } from './connection.ts';

/**
 * Rate windows and channel pauses on PostgreSQL (see RateStore): a take is one
 * call of take_rate_slot (migration 6), which locks the windows' rows and reads the
 * database's clock, so workers on every host share the same windows.
 */
export function makePostgresRate(c: PostgresConnection): RateStore {
  const { q } = c;
  return {
    async takeRateSlot(channelId, keys) {
      // take_rate_slot returns minus the slot's time when it grants one, else the wait
      const [row] = await q<{ answer: number; paused: boolean }>(
        `SELECT take_rate_slot($1, $2::text[], $3::int[], $4::bigint[]) AS answer,
                coalesce((SELECT paused_until > clock_timestamp() FROM channels WHERE id = $1), false) AS paused`,
        [channelId, keys.map((k) => k.key), keys.map((k) => k.limit), keys.map((k) => Math.round(k.windowMs))],
      );
      const answer = row?.answer ?? 0;
      return answer > 0 ? { granted: false, waitMs: answer, paused: row?.paused === true } : { granted: true, at: -answer };
    },

    async settleRateSlot(keys, at) {
      // One occurrence of `at` (the first) becomes the database's now; the rest stay. A
      // send that outlived its window had its stamp dropped by a later take: its end is
      // counted anew (coalesce(..., 0) removes nothing). The rows are locked in key
      // order first, as take_rate_slot locks them, so a take and a settle of the same
      // windows cannot deadlock.
      await q(
        `WITH locked AS (SELECT key FROM rate_windows WHERE key = ANY ($1::text[]) ORDER BY key FOR UPDATE)
         UPDATE rate_windows r
            SET stamps = ARRAY(
                  SELECT s FROM unnest(r.stamps) WITH ORDINALITY AS u(s, n)
                   WHERE n <> coalesce(array_position(r.stamps, $2::bigint), 0)
                  UNION ALL SELECT greatest($2::bigint, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                  ORDER BY 1)
           FROM locked
          WHERE r.key = locked.key`,
        [keys, at],
      );
    },

    async acquireSendSlot(key, cap, holder, ttlMs) {
      await q('DELETE FROM send_slots WHERE key = $1 AND expires_at <= now()', [key]);
      // the lowest free slot; two takers of the same one collide on its key and one of
      // them gets nothing (ON CONFLICT DO NOTHING): the cap is never exceeded
      const rows = await q<{ slot: number }>(
        `INSERT INTO send_slots (key, slot, holder, expires_at)
         SELECT $1, g, $3, now() + $4 * interval '1 millisecond' FROM generate_series(0, $2::int - 1) AS g
          WHERE NOT EXISTS (SELECT 1 FROM send_slots s WHERE s.key = $1 AND s.slot = g)
          ORDER BY g LIMIT 1
         ON CONFLICT DO NOTHING
         RETURNING slot`,
        [key, cap, holder, Math.round(ttlMs)],
      );
      return rows.length > 0;
    },

    async releaseSendSlot(key, holder) {
      await q('DELETE FROM send_slots WHERE key = $1 AND holder = $2', [key, holder]);
    },

    async pauseChannel(channelId, delayMs, reason) {
      await q(
        `UPDATE channels SET paused_until = now() + $2 * interval '1 millisecond', pause_reason = $3
          WHERE id = $1 AND (paused_until IS NULL OR paused_until < now() + $2 * interval '1 millisecond')`,
        [channelId, Math.max(0, Math.round(delayMs)), reason],
      );
    },
  };
}

/** The channels a network's 429 paused until a time still ahead (status shows them). */
export async function postgresPausedChannels(c: PostgresConnection): Promise<StatusReport['pausedChannels']> {
  const { q } = c;
  const rows = await q<{ name: string; paused_until: Date; pause_reason: string | null }>(
    'SELECT name, paused_until, pause_reason FROM channels WHERE paused_until > now() ORDER BY paused_until, name',
  );
  return rows.map((r) => ({ channel: r.name, until: r.paused_until, reason: r.pause_reason }));
}
