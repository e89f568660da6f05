import type Database from 'better-sqlite3';
import { dueLoads } from '../sizing.ts';
import type { Store } from '../store.ts';

/** One due channel's recent publish times (channel, samples), exported for the conformance suite's plan check. */
export const RECENT_PUBLISH_TIMES = `SELECT a.finished_at - a.started_at AS ms
             FROM (SELECT id FROM post_schedule WHERE channel_id = ? AND status = 'published' ORDER BY updated_at DESC LIMIT ?) p
             JOIN post_attempts a ON a.post_id = p.id AND a.outcome = 'published' AND a.started_at IS NOT NULL`;

/**
 * Store.dueByChannel on SQLite: the due posts grouped by channel through the due index
 * (`+channel_id`, as in metrics, so SQLite groups in a temporary b-tree rather than walk
 * post_schedule_channel), then for each due channel its `samples` most recently
 * published posts through post_schedule_published (channel, updated_at), each joined to
 * its published attempt through post_attempts_post. One read transaction.
 */
export function makeSqliteSizing(stmt: (text: string) => Database.Statement, read: <T>(fn: () => T) => Promise<T>): Pick<Store, 'dueByChannel'> {
  return {
    async dueByChannel(samples) {
      return read(() => {
        const due = stmt(
          `SELECT channel_id, count(*) AS due FROM post_schedule
            WHERE status = 'pending' AND run_at <= ?
              AND channel_id NOT IN (SELECT id FROM channels WHERE paused_at IS NOT NULL)
            GROUP BY +channel_id`,
        ).all(Date.now()) as { channel_id: number; due: number }[];
        const times = stmt(
          RECENT_PUBLISH_TIMES,
        );
        return dueLoads(
          due.flatMap((d): { channelId: number; due: number; ms: number | null }[] => {
            const ms = times.all(d.channel_id, samples) as { ms: number }[];
            return ms.length === 0 ? [{ channelId: d.channel_id, due: d.due, ms: null }] : ms.map((t) => ({ channelId: d.channel_id, due: d.due, ms: t.ms }));
          }),
        );
      });
    },
  };
}
