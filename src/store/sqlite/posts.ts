import type { PostStatus } from '../../types.ts';
import type { PostsStore } from '../concerns/posts.ts';
import { attemptFromRow, type AttemptRow, ATTEMPTS_QUERY, listItemFromRow, listPostsQuery, type ListRow } from '../list.ts';
import { partsColumn } from '../rows.ts';
import type { SqliteConnection } from './connection.ts';

/**
 * Posts as operators see and edit them, on SQLite (see PostsStore). Each write is one BEGIN IMMEDIATE
 * transaction: every process on the file sees it whole, so a key is looked up and taken
 * in one step, and a channel is checked and removed in one.
 */
export function makeSqlitePosts(c: SqliteConnection): PostsStore {
  const { stmt, immediate, read } = c;
  return {
    async listPosts(query) {
      const { text, values } = listPostsQuery(
        query,
        () => '?',
        (d) => d.getTime(),
        (column, n) => `substr(${column}, 1, ${n})`,
      );
      return ((await read(() => stmt(text).all(...values))) as ListRow[]).map(listItemFromRow);
    },

    async postAttempts(postId) {
      return ((await read(() => stmt(ATTEMPTS_QUERY('?')).all(postId))) as AttemptRow[]).map(attemptFromRow);
    },

    async editPost(id, changes) {
      return immediate(() => {
        const row = stmt('SELECT status, post_detail_id FROM post_schedule WHERE id = ?').get(id) as { status: PostStatus; post_detail_id: number } | undefined;
        if (row === undefined) return { edited: false, status: null };
        if (row.status !== 'pending') return { edited: false, status: row.status };
        const now = Date.now();
        if (changes.runAt !== undefined) {
          const at = changes.runAt.getTime();
          stmt('UPDATE post_schedule SET run_at = ?, scheduled_at = ?, updated_at = ? WHERE id = ?').run(at, at, now, id);
        } else {
          stmt('UPDATE post_schedule SET updated_at = ? WHERE id = ?').run(now, id);
        }
        const content = changes.content;
        if (content !== undefined) {
          stmt('UPDATE post_details SET text = ?, parts = ? WHERE id = ?').run(content.text, partsColumn({ text: content.text, parts: content.parts }), row.post_detail_id);
        }
        return { edited: true, status: row.status };
      });
    },
  };
}
