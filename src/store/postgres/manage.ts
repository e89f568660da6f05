import { TRANSITIONS, whereFrom } from '../../states.ts';
import type { PostStatus } from '../../types.ts';
import { attemptFromRow, ATTEMPTS_QUERY, listItemFromRow, listPostsQuery, type AttemptRow, type ListRow } from '../list.ts';
import { channelFromRow, partsColumn, type ChannelRow } from '../rows.ts';
import type { Store } from '../store.ts';

type Query = <R>(text: string, values?: unknown[]) => Promise<R[]>;
type Manage = Pick<Store, 'scheduleWithKey' | 'listPosts' | 'postAttempts' | 'editPost' | 'setChannelPaused' | 'removeChannel'>;

/** The statuses that keep a channel from being removed (its posts still to go out or to decide). */
const LIVE: readonly PostStatus[] = ['pending', 'processing', 'unknown'];

/** Managing posts and channels on PostgreSQL (see Store), each method one statement. */
export function makePostgresManage(q: Query): Manage {
  const findByKey = async (key: string): Promise<number | null> => {
    const [row] = await q<{ id: number }>('SELECT id FROM post_schedule WHERE schedule_key = $1', [key]);
    return row?.id ?? null;
  };
  return {
    async scheduleWithKey(post, key) {
      const existing = await findByKey(key);
      if (existing !== null) return { id: existing, created: false };
      const { randomUUID } = await import('node:crypto');
      // The unique index on schedule_key settles a race: the loser's statement inserts
      // nothing (ON CONFLICT DO NOTHING on the schedule row, and its content row is not
      // kept: the content is inserted only if the schedule row is).
      const rows = await q<{ id: number }>(
        `WITH claimed_key AS (
           INSERT INTO post_schedule (post_detail_id, channel_id, run_at, scheduled_at, status, idempotency_key, schedule_key)
           VALUES (nextval(pg_get_serial_sequence('post_details', 'id')), $2, $3, $3, 'pending', $4, $5)
           ON CONFLICT (schedule_key) WHERE schedule_key IS NOT NULL DO NOTHING
           RETURNING id, post_detail_id
         ), details AS (
           INSERT INTO post_details (id, text, parts) SELECT post_detail_id, $1, $6::text::jsonb FROM claimed_key
         )
         SELECT id FROM claimed_key`,
        [post.text, post.channelId, post.runAt.toISOString(), randomUUID(), key, partsColumn(post)],
      );
      const id = rows[0]?.id;
      if (id !== undefined) return { id, created: true };
      const winner = await findByKey(key);
      if (winner === null) throw new Error(`schedule key ${key}: taken, then not found`);
      return { id: winner, created: false };
    },

    async listPosts(query) {
      const { text, values } = listPostsQuery(
        query,
        (n) => `$${n}`,
        (d) => d.toISOString(),
        (column, n) => `left(${column}, ${n})`,
      );
      return (await q<ListRow>(text, values)).map(listItemFromRow);
    },

    async postAttempts(postId) {
      return (await q<AttemptRow>(ATTEMPTS_QUERY('$1'), [postId])).map(attemptFromRow);
    },

    async editPost(id, changes) {
      const content = changes.content;
      const [row] = await q<{ status: PostStatus | null; edited: number }>(
        `WITH before AS (SELECT status FROM post_schedule WHERE id = $1),
              s AS (
                UPDATE post_schedule SET run_at = COALESCE($2::timestamptz, run_at), scheduled_at = COALESCE($2::timestamptz, scheduled_at),
                       updated_at = now()
                 WHERE id = $1 AND status = 'pending'
                RETURNING post_detail_id),
              d AS (
                UPDATE post_details SET text = $4, parts = $5::text::jsonb
                 WHERE $3::boolean AND id IN (SELECT post_detail_id FROM s))
         SELECT (SELECT status FROM before) AS status, (SELECT count(*) FROM s)::int AS edited`,
        [
          id,
          changes.runAt?.toISOString() ?? null,
          content !== undefined,
          content?.text ?? '',
          content === undefined ? null : partsColumn({ text: content.text, parts: content.parts }),
        ],
      );
      if (row?.status == null) return { edited: false, status: null };
      return { edited: row.edited > 0, status: row.status };
    },

    async setChannelPaused(name, paused) {
      const [row] = await q<ChannelRow>(
        `UPDATE channels SET paused_at = CASE WHEN $2::boolean THEN COALESCE(paused_at, now()) END
          WHERE name = $1 AND removed_at IS NULL RETURNING *`,
        [name, paused],
      );
      return row === undefined ? null : channelFromRow(row);
    },

    async removeChannel(name, cancelPosts) {
      // One statement: the channel's row is locked first (FOR UPDATE), so a post scheduled
      // meanwhile waits for it and then finds no channel; the counts and the cancel see
      // the same snapshot.
      const [row] = await q<{ id: number | null; counts: Record<string, number> | null; cancelled: number; removed: number }>(
        `WITH ch AS (SELECT id, name FROM channels WHERE name = $1 AND removed_at IS NULL FOR UPDATE),
              live AS (
                SELECT status, count(*)::int AS n FROM post_schedule
                 WHERE channel_id = (SELECT id FROM ch) AND status = ANY($3::text[]) GROUP BY status),
              cancelled AS (
                UPDATE post_schedule SET status = '${TRANSITIONS.cancel.to}', updated_at = now()
                 WHERE $2::boolean AND channel_id = (SELECT id FROM ch) AND ${whereFrom('cancel')}
                   AND NOT EXISTS (SELECT 1 FROM live WHERE status = 'processing')
                RETURNING id),
              removed AS (
                UPDATE channels SET removed_at = now(), paused_at = NULL, name = $4 || ' (removed #' || id || ')'
                 WHERE id = (SELECT id FROM ch)
                   AND NOT EXISTS (SELECT 1 FROM live WHERE NOT ($2::boolean AND status IN ('pending', 'unknown')))
                RETURNING id)
         SELECT (SELECT id FROM ch) AS id, (SELECT jsonb_object_agg(status, n) FROM live) AS counts,
                (SELECT count(*) FROM cancelled)::int AS cancelled, (SELECT count(*) FROM removed)::int AS removed`,
        [name, cancelPosts, LIVE, name],
      );
      if (row?.id == null) return null;
      const counts = row.counts ?? {};
      const removed = row.removed > 0;
      return { removed, cancelled: removed ? row.cancelled : 0, blocking: removed ? {} : counts };
    },
  };
}
