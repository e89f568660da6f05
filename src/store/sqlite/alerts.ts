import { randomUUID } from 'node:crypto';
import type { AlertStore } from '../concerns/alerts.ts';
import type { AlertCandidate } from '../store.ts';
import type { SqliteConnection } from './connection.ts';

/**
 * Alerts on SQLite (see AlertStore). Each alert is one
 * BEGIN IMMEDIATE transaction: its `alerts` row (post id, claim token) first, the alert
 * post only when that row is new.
 */
export function makeSqliteAlerts(c: SqliteConnection): AlertStore {
  const { stmt, immediate, read } = c;
  return {
    async unalertedOutcomes(alertChannelId, withinMs, limit) {
      // one branch per status, each served by its partial index on updated_at
      const branch = (status: string) =>
        `SELECT s.id AS post_id, s.claim_token, s.status, s.last_error, c.name AS channel_name, s.updated_at
           FROM post_schedule s LEFT JOIN channels c ON c.id = s.channel_id
          WHERE s.status = '${status}' AND s.updated_at >= @since AND s.channel_id <> @alert
            AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.post_id = s.id AND a.claim_token = s.claim_token)`;
      const rows = (await read(() =>
        stmt(`SELECT * FROM (${branch('failed')} UNION ALL ${branch('unknown')}) ORDER BY updated_at, post_id LIMIT @limit`).all({
          since: Date.now() - withinMs,
          alert: alertChannelId,
          limit,
        }),
      )) as { post_id: number; claim_token: number; status: 'failed' | 'unknown'; last_error: string | null; channel_name: string | null }[];
      return rows.map(
        (r): AlertCandidate => ({ postId: r.post_id, token: r.claim_token, outcome: r.status, channelName: r.channel_name, error: r.last_error }),
      );
    },

    async scheduleAlerts(alertChannelId, alerts) {
      const ids: number[] = [];
      for (const a of alerts) {
        const id = await immediate(() => {
          const now = Date.now();
          const fresh = stmt('INSERT INTO alerts (post_id, claim_token, outcome, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING').run(
            a.postId,
            a.token,
            a.outcome,
            now,
          );
          if (fresh.changes === 0) return null;
          const detail = stmt('INSERT INTO post_details (text, parts, created_at) VALUES (?, NULL, ?)').run(a.text, now).lastInsertRowid;
          return Number(
            stmt(
              `INSERT INTO post_schedule (post_detail_id, channel_id, run_at, scheduled_at, status, idempotency_key, created_at, updated_at)
               VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)`,
            ).run(detail, alertChannelId, now, now, randomUUID(), now, now).lastInsertRowid,
          );
        });
        if (id !== null) ids.push(id);
      }
      return ids;
    },
  };
}
