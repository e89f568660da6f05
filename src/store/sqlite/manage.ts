import type Database from 'better-sqlite3';
import { TRANSITIONS, whereFrom } from '../../states.ts';
import type { PostStatus } from '../../types.ts';
import { attemptFromRow, ATTEMPTS_QUERY, listItemFromRow, listPostsQuery, type AttemptRow, type ListRow } from '../list.ts';
import { channelFromRow, partsColumn, type ChannelRow } from '../rows.ts';
import type { Store } from '../store.ts';

type Manage = Pick<Store, 'scheduleWithKey' | 'listPosts' | 'postAttempts' | 'editPost' | 'setChannelPaused' | 'removeChannel'>;

/**
 * Managing posts and channels on SQLite (see Store). Each write is one BEGIN IMMEDIATE
 * transaction: every process on the file sees it whole, so a key is looked up and taken
 * in one step, and a channel is checked and removed in one.
 */
export function makeSqliteManage(
  stmt: (text: string) => Database.Statement,
  immediate: <T>(fn: () => T) => Promise<T>,
  read: <T>(fn: () => T) => Promise<T>,
): Manage {
  return {
    async scheduleWithKey(post, key) {
      const { randomUUID } = await import('node:crypto');
      return immediate(() => {
        const existing = stmt('SELECT id FROM post_schedule WHERE schedule_key = ?').get(key) as { id: number } | undefined;
        if (existing !== undefined) return { id: existing.id, created: false };
        const now = Date.now();
        const detailId = stmt('INSERT INTO post_details (text, parts, created_at) VALUES (?, ?, ?)').run(post.text, partsColumn(post), now).lastInsertRowid;
        const at = post.runAt.getTime();
        const id = stmt(
          `INSERT INTO post_schedule (post_detail_id, channel_id, run_at, scheduled_at, status, idempotency_key, schedule_key, created_at, updated_at)
           VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?)`,
        ).run(detailId, post.channelId, at, at, randomUUID(), key, now, now).lastInsertRowid;
        return { id: Number(id), created: true };
      });
    },

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

    async setChannelPaused(name, paused) {
      const row = (await immediate(() =>
        stmt(
          `UPDATE channels SET paused_at = CASE WHEN ? THEN COALESCE(paused_at, ?) END
            WHERE name = ? AND removed_at IS NULL RETURNING *`,
        ).get(paused ? 1 : 0, Date.now(), name),
      )) as ChannelRow | undefined;
      return row === undefined ? null : channelFromRow(row);
    },

    async removeChannel(name, cancelPosts) {
      return immediate(() => {
        const ch = stmt('SELECT id FROM channels WHERE name = ? AND removed_at IS NULL').get(name) as { id: number } | undefined;
        if (ch === undefined) return null;
        const live = stmt(
          `SELECT status, count(*) AS n FROM post_schedule
            WHERE channel_id = ? AND status IN ('pending', 'processing', 'unknown') GROUP BY status`,
        ).all(ch.id) as { status: PostStatus; n: number }[];
        const blocking = Object.fromEntries(live.map((r) => [r.status, r.n])) as Partial<Record<PostStatus, number>>;
        const keeps = live.some((r) => !(cancelPosts && (r.status === 'pending' || r.status === 'unknown')));
        if (keeps) return { removed: false, cancelled: 0, blocking };
        const now = Date.now();
        const cancelled = cancelPosts
          ? stmt(`UPDATE post_schedule SET status = '${TRANSITIONS.cancel.to}', updated_at = ? WHERE channel_id = ? AND ${whereFrom('cancel')}`).run(now, ch.id).changes
          : 0;
        stmt(`UPDATE channels SET removed_at = ?, paused_at = NULL, name = name || ' (removed #' || id || ')' WHERE id = ?`).run(now, ch.id);
        return { removed: true, cancelled, blocking: {} };
      });
    },
  };
}
