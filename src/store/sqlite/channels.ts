import { TRANSITIONS, whereFrom } from '../../states.ts';
import type { Channel, NewChannel, PostStatus } from '../../types.ts';
import type { ChannelStore } from '../concerns/channels.ts';
import { channelFromRow, type ChannelRow } from '../rows.ts';
import type { SqliteConnection } from './connection.ts';

/**
 * Channels on SQLite (see ChannelStore). Each write is one BEGIN IMMEDIATE
 * transaction: every process on the file sees it whole, so a key is looked up and taken
 * in one step, and a channel is checked and removed in one.
 */
export function makeSqliteChannels(c: SqliteConnection): ChannelStore {
  const { stmt, immediate, read } = c;
  return {
    async addChannel(channel: NewChannel): Promise<Channel> {
      const row = (await immediate(() =>
        stmt('INSERT INTO channels (name, platform, settings, enabled, on_unknown, credentials, created_at) VALUES (?, ?, ?, 1, ?, ?, ?) RETURNING *').get(
          channel.name,
          channel.platform,
          JSON.stringify(channel.settings),
          channel.onUnknown,
          channel.credentials ?? null,
          Date.now(),
        ),
      )) as ChannelRow;
      return channelFromRow(row);
    },

    async listChannels() {
      return ((await read(() => stmt('SELECT * FROM channels WHERE removed_at IS NULL ORDER BY name').all())) as ChannelRow[]).map(channelFromRow);
    },

    async findChannel(name: string) {
      const row = (await read(() => stmt('SELECT * FROM channels WHERE name = ? AND removed_at IS NULL').get(name))) as ChannelRow | undefined;
      return row === undefined ? null : channelFromRow(row);
    },

    async updateChannel(name, changes) {
      const row = (await immediate(() =>
        stmt(
          `UPDATE channels SET on_unknown = COALESCE(?, on_unknown), enabled = COALESCE(?, enabled)
            WHERE name = ? AND removed_at IS NULL RETURNING *`,
        ).get(changes.onUnknown ?? null, changes.enabled === undefined ? null : changes.enabled ? 1 : 0, name),
      )) as ChannelRow | undefined;
      return row === undefined ? null : channelFromRow(row);
    },

    async saveCredentials(channelId, sealed, expected) {
      return immediate(() =>
        expected === undefined
          ? stmt('UPDATE channels SET credentials = ?, attention = NULL WHERE id = ?').run(sealed, channelId).changes > 0
          : stmt('UPDATE channels SET credentials = ? WHERE id = ? AND credentials IS ?').run(sealed, channelId, expected).changes > 0,
      );
    },

    async setAttention(channelId, reason) {
      await immediate(() => stmt('UPDATE channels SET attention = ? WHERE id = ? AND attention IS NOT ?').run(reason, channelId, reason));
    },

    async replaceSettings(channelId, settings) {
      return immediate(() => stmt('UPDATE channels SET settings = ? WHERE id = ?').run(JSON.stringify(settings), channelId).changes > 0);
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
