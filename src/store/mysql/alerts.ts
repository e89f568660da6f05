import { randomUUID } from 'node:crypto';
import type { AlertStore } from '../concerns/alerts.ts';
import type { AlertCandidate } from '../store.ts';
import type { MysqlConnection } from './connection.ts';

/** ER_DUP_ENTRY: the row's primary key is taken. */
const DUPLICATE = 1062;

/**
 * Alerts on MySQL/MariaDB (see AlertStore). Each alert is one short transaction (MySQL
 * has no data-modifying CTE to do it in one statement, as PostgreSQL does): its `alerts`
 * row (post id, claim token) first, the alert post only when that row is new. A second
 * dispatcher inserting the same row waits for the first to commit, then fails on the
 * primary key and schedules nothing. (Not INSERT IGNORE: that would also turn a
 * missing post, a foreign-key error, into a silent no-op.)
 */
export function makeMysqlAlerts(c: MysqlConnection): AlertStore {
  const { q, tx } = c;
  return {
    async unalertedOutcomes(alertChannelId, withinMs, limit) {
      // one branch per status, each a range of post_schedule_done (status, updated_at, id)
      // read in index order and cut at `limit`, so that neither sorts its whole window
      const branch = (status: string) =>
        `(SELECT s.id AS post_id, s.claim_token, s.status, s.last_error, c.name AS channel_name, s.updated_at
            FROM post_schedule s LEFT JOIN channels c ON c.id = s.channel_id
           WHERE s.status = '${status}' AND s.updated_at >= NOW(3) - INTERVAL ? MICROSECOND AND s.channel_id <> ?
             AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.post_id = s.id AND a.claim_token = s.claim_token)
           ORDER BY s.updated_at, s.id LIMIT ?)`;
      const since = Math.max(0, Math.round(withinMs * 1000));
      const rows = await q<{ post_id: number; claim_token: number; status: 'failed' | 'unknown'; last_error: string | null; channel_name: string | null }>(
        `SELECT * FROM (${branch('failed')} UNION ALL ${branch('unknown')}) AS u ORDER BY updated_at, post_id LIMIT ?`,
        [since, alertChannelId, limit, since, alertChannelId, limit, limit],
      );
      return rows.map(
        (r): AlertCandidate => ({ postId: r.post_id, token: r.claim_token, outcome: r.status, channelName: r.channel_name, error: r.last_error }),
      );
    },

    async scheduleAlerts(alertChannelId, alerts) {
      const ids: number[] = [];
      for (const a of alerts) {
        const id = await tx(async (t) => {
          try {
            await t.exec('INSERT INTO alerts (post_id, claim_token, outcome, created_at) VALUES (?, ?, ?, NOW(3))', [a.postId, a.token, a.outcome]);
          } catch (e) {
            if ((e as { errno?: number }).errno === DUPLICATE) return null;
            throw e;
          }
          const detail = (await t.exec('INSERT INTO post_details (text, parts) VALUES (?, NULL)', [a.text])).insertId;
          return (
            await t.exec(
              `INSERT INTO post_schedule (post_detail_id, channel_id, run_at, scheduled_at, status, idempotency_key, published_parts)
               VALUES (?, ?, NOW(3), NOW(3), 'pending', ?, '[]')`,
              [detail, alertChannelId, randomUUID()],
            )
          ).insertId;
        });
        if (id !== null) ids.push(id);
      }
      return ids;
    },
  };
}
