import { randomUUID } from 'node:crypto';
import type { AlertStore } from '../concerns/alerts.ts';
import type { AlertCandidate } from '../store.ts';
import type { PostgresConnection } from './connection.ts';

/**
 * Alerts on PostgreSQL (see AlertStore). Each alert is one
 * statement: its `alerts` row (post id, claim token) first, ON CONFLICT DO NOTHING, and
 * the alert post only from the row inserted. A second dispatcher inserting the same row
 * waits for the first to commit, then inserts nothing.
 */
export function makePostgresAlerts(c: PostgresConnection): AlertStore {
  const { q } = c;
  return {
    async unalertedOutcomes(alertChannelId, withinMs, limit) {
      // one branch per status, each served by its partial index on updated_at
      const branch = (status: string) =>
        `SELECT s.id AS post_id, s.claim_token, s.status, s.last_error, c.name AS channel_name, s.updated_at
           FROM post_schedule s LEFT JOIN channels c ON c.id = s.channel_id
          WHERE s.status = '${status}' AND s.updated_at >= now() - $1 * interval '1 millisecond' AND s.channel_id <> $2
            AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.post_id = s.id AND a.claim_token = s.claim_token)`;
      const rows = await q<{ post_id: string | number; claim_token: string | number; status: 'failed' | 'unknown'; last_error: string | null; channel_name: string | null }>(
        `SELECT * FROM (${branch('failed')} UNION ALL ${branch('unknown')}) AS u ORDER BY updated_at, post_id LIMIT $3`,
        [Math.round(withinMs), alertChannelId, limit],
      );
      return rows.map(
        (r): AlertCandidate => ({
          postId: Number(r.post_id),
          token: Number(r.claim_token),
          outcome: r.status,
          channelName: r.channel_name,
          error: r.last_error,
        }),
      );
    },

    async scheduleAlerts(alertChannelId, alerts) {
      const ids: number[] = [];
      for (const a of alerts) {
        const rows = await q<{ id: string | number }>(
          `WITH fresh AS (
             INSERT INTO alerts (post_id, claim_token, outcome) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING post_id
           ), detail AS (
             INSERT INTO post_details (text) SELECT $4 FROM fresh RETURNING id
           )
           INSERT INTO post_schedule (post_detail_id, channel_id, run_at, scheduled_at, status, idempotency_key)
           SELECT detail.id, $5, now(), now(), 'pending', $6 FROM detail
           RETURNING id`,
          [a.postId, a.token, a.outcome, a.text, alertChannelId, randomUUID()],
        );
        for (const r of rows) ids.push(Number(r.id));
      }
      return ids;
    },
  };
}
