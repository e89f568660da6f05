import { TRANSITIONS, whereFrom } from '../../states.ts';
import type { NewChannel, PostStatus } from '../../types.ts';
import type { ChannelStore } from '../concerns/channels.ts';
import { channelFromRow, type ChannelRow } from '../rows.ts';
import { StoreError } from '../store.ts';
import type { PostgresConnection } from './connection.ts';

/** The statuses that keep a channel from being removed (its posts still to go out or to decide). */
const LIVE: readonly PostStatus[] = ['pending', 'processing', 'unknown'];

/** Channels on PostgreSQL (see ChannelStore), each method one statement. */
export function makePostgresChannels(c: PostgresConnection): ChannelStore {
  const { q } = c;
  return {
    async addChannel(channel: NewChannel) {
      const [row] = await q<ChannelRow>(
        'INSERT INTO channels (name, platform, settings, on_unknown, credentials) VALUES ($1, $2, $3, $4, $5) RETURNING *',
        [channel.name, channel.platform, channel.settings, channel.onUnknown, channel.credentials ?? null],
      );
      if (row === undefined) throw new StoreError('insert into channels returned no row');
      return channelFromRow(row);
    },

    async listChannels() {
      return (await q<ChannelRow>('SELECT * FROM channels WHERE removed_at IS NULL ORDER BY name')).map(channelFromRow);
    },

    async findChannel(name: string) {
      const [row] = await q<ChannelRow>('SELECT * FROM channels WHERE name = $1 AND removed_at IS NULL', [name]);
      return row === undefined ? null : channelFromRow(row);
    },

    async updateChannel(name, changes) {
      const [row] = await q<ChannelRow>(
        `UPDATE channels SET on_unknown = COALESCE($2, on_unknown), enabled = COALESCE($3::text::boolean, enabled)
          WHERE name = $1 AND removed_at IS NULL RETURNING *`,
        [name, changes.onUnknown ?? null, changes.enabled === undefined ? null : String(changes.enabled)],
      );
      return row === undefined ? null : channelFromRow(row);
    },

    async saveCredentials(channelId, sealed, expected) {
      const rows =
        expected === undefined
          ? await q('UPDATE channels SET credentials = $2, attention = NULL WHERE id = $1 RETURNING id', [channelId, sealed])
          : await q('UPDATE channels SET credentials = $2 WHERE id = $1 AND credentials IS NOT DISTINCT FROM $3 RETURNING id', [channelId, sealed, expected]);
      return rows.length > 0;
    },

    async setAttention(channelId, reason) {
      await q('UPDATE channels SET attention = $2 WHERE id = $1 AND attention IS DISTINCT FROM $2', [channelId, reason]);
    },

    async replaceSettings(channelId, settings) {
      return (await q('UPDATE channels SET settings = $2 WHERE id = $1 RETURNING id', [channelId, settings])).length > 0;
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
