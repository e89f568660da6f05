import { dueLoads } from '../sizing.ts';
import type { Store } from '../store.ts';

type Query = <R>(text: string, values?: unknown[]) => Promise<R[]>;

/** Store.dueByChannel's statement ($1: samples), exported for the conformance suite's plan check. */
export const DUE_BY_CHANNEL = `WITH due AS (
           SELECT channel_id, count(*)::int AS due FROM post_schedule
            WHERE status = 'pending' AND run_at <= now()
              AND NOT (channel_id = ANY (ARRAY(SELECT id FROM channels WHERE paused_at IS NOT NULL)))
            GROUP BY channel_id
         )
         SELECT d.channel_id, d.due, t.ms FROM due d
         LEFT JOIN LATERAL (
           SELECT (extract(epoch FROM a.finished_at - a.started_at) * 1000)::float8 AS ms
             FROM (SELECT id FROM post_schedule p WHERE p.channel_id = d.channel_id AND p.status = 'published'
                    ORDER BY p.updated_at DESC LIMIT $1) p
             JOIN post_attempts a ON a.post_id = p.id AND a.outcome = 'published' AND a.started_at IS NOT NULL
         ) t ON true`;

/**
 * Store.dueByChannel on PostgreSQL: the due posts grouped by channel through the due
 * index (as countDue counts them, on the database's clock), and for each such channel
 * its `samples` most recently published posts through post_schedule_published (channel,
 * updated_at), each joined to its published attempt through post_attempts_post.
 */
export function makePostgresSizing(q: Query): Pick<Store, 'dueByChannel'> {
  return {
    async dueByChannel(samples) {
      const rows = await q<{ channel_id: string | number; due: number; ms: number | null }>(
        DUE_BY_CHANNEL,
        [samples],
      );
      return dueLoads(rows.map((r) => ({ channelId: Number(r.channel_id), due: r.due, ms: r.ms })));
    },
  };
}
