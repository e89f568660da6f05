import type { PostStatus } from '../../types.ts';
import type { PostsStore } from '../concerns/posts.ts';
import { attemptFromRow, type AttemptRow, ATTEMPTS_QUERY, listItemFromRow, listPostsQuery, type ListRow } from '../list.ts';
import { partsColumn } from '../rows.ts';
import type { PostgresConnection } from './connection.ts';

/** Posts as operators see and edit them, on PostgreSQL (see PostsStore), each method one statement. */
export function makePostgresPosts(c: PostgresConnection): PostsStore {
  const { q } = c;
  return {
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
  };
}
