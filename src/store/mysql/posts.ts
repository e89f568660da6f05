import type { PostStatus } from '../../types.ts';
import type { PostsStore } from '../concerns/posts.ts';
import { attemptFromRow, type AttemptRow, ATTEMPTS_QUERY, listItemFromRow, listPostsQuery, type ListRow } from '../list.ts';
import { partsColumn } from '../rows.ts';
import type { MysqlConnection } from './connection.ts';

/**
 * Posts as operators see and edit them, on MySQL/MariaDB (see PostsStore). Reads are one
 * statement each; an edit is one short transaction (no DML in a CTE here): the post's row
 * locked and read, then its schedule and content updated only while it is pending.
 */
export function makeMysqlPosts(c: MysqlConnection): PostsStore {
  const { q } = c;
  return {
    async listPosts(query) {
      const { text, values } = listPostsQuery(
        query,
        () => '?',
        (d) => d,
        // LEFT counts characters, not bytes: an emoji is one
        (column, n) => `LEFT(${column}, ${n})`,
      );
      return (await q<ListRow>(text, values)).map(listItemFromRow);
    },

    async postAttempts(postId) {
      return (await q<AttemptRow>(ATTEMPTS_QUERY('?'), [postId])).map(attemptFromRow);
    },

    async editPost(id, changes) {
      return c.tx(async (t) => {
        // a claim in between wins: it either committed before this lock (not pending), or waits for it
        const [row] = await t.q<{ status: PostStatus; post_detail_id: number }>('SELECT status, post_detail_id FROM post_schedule WHERE id = ? FOR UPDATE', [id]);
        if (row === undefined) return { edited: false, status: null };
        if (row.status !== 'pending') return { edited: false, status: row.status };
        const runAt = changes.runAt ?? null;
        await t.exec(
          `UPDATE post_schedule SET run_at = COALESCE(?, run_at), scheduled_at = COALESCE(?, scheduled_at), updated_at = NOW(3)
            WHERE id = ? AND status = 'pending'`,
          [runAt, runAt, id],
        );
        const content = changes.content;
        if (content !== undefined) {
          await t.exec('UPDATE post_details SET text = ?, parts = ? WHERE id = ?', [
            content.text,
            partsColumn({ text: content.text, parts: content.parts }),
            row.post_detail_id,
          ]);
        }
        return { edited: true, status: row.status };
      });
    },
  };
}
