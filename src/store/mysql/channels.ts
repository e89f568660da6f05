import { TRANSITIONS, whereFrom } from '../../states.ts';
import type { NewChannel, PostStatus } from '../../types.ts';
import type { ChannelStore } from '../concerns/channels.ts';
import { channelFromRow, type ChannelRow } from '../rows.ts';
import { StoreError } from '../store.ts';
import type { MysqlConnection } from './connection.ts';

/** The statuses that keep a channel from being removed (its posts still to go out or to decide). */
const LIVE: readonly PostStatus[] = ['pending', 'processing', 'unknown'];

/**
 * A channel of this name, byte for byte: utf8mb4_bin compares bytes but pads with spaces
 * (`'main' = 'main '`), so the byte lengths must agree too (the index still finds it).
 * Two placeholders, both the name.
 */
const NAMED = 'name = ? AND LENGTH(name) = LENGTH(?) AND removed_at IS NULL';

/**
 * Channels on MySQL/MariaDB (see ChannelStore). Names compare byte for byte (the table's
 * collation is utf8mb4_bin). MySQL has no UPDATE ... RETURNING: a change that answers
 * the channel is its UPDATE and a SELECT in one short transaction, so the row read is
 * the one written (its lock is held until the commit). Every UPDATE's affectedRows
 * counts the rows matched, changed or not (mysql2 connects with CLIENT_FOUND_ROWS), as
 * PostgreSQL's RETURNING does.
 */
export function makeMysqlChannels(c: MysqlConnection): ChannelStore {
  const { q, exec, tx } = c;
  return {
    async addChannel(channel: NewChannel) {
      const { insertId } = await exec('INSERT INTO channels (name, platform, settings, on_unknown, credentials) VALUES (?, ?, ?, ?, ?)', [
        channel.name,
        channel.platform,
        JSON.stringify(channel.settings),
        channel.onUnknown,
        channel.credentials ?? null,
      ]);
      const [row] = await q<ChannelRow>('SELECT * FROM channels WHERE id = ?', [insertId]);
      if (row === undefined) throw new StoreError('insert into channels returned no row');
      return channelFromRow(row);
    },

    async listChannels() {
      return (await q<ChannelRow>('SELECT * FROM channels WHERE removed_at IS NULL ORDER BY name')).map(channelFromRow);
    },

    async findChannel(name: string) {
      const [row] = await q<ChannelRow>(`SELECT * FROM channels WHERE ${NAMED}`, [name, name]);
      return row === undefined ? null : channelFromRow(row);
    },

    async updateChannel(name, changes) {
      return tx(async (t) => {
        const { affectedRows } = await t.exec(
          `UPDATE channels SET on_unknown = COALESCE(?, on_unknown), enabled = COALESCE(?, enabled) WHERE ${NAMED}`,
          [changes.onUnknown ?? null, changes.enabled ?? null, name, name],
        );
        if (affectedRows === 0) return null;
        const [row] = await t.q<ChannelRow>(`SELECT * FROM channels WHERE ${NAMED}`, [name, name]);
        return row === undefined ? null : channelFromRow(row);
      });
    },

    async saveCredentials(channelId, sealed, expected) {
      // `<=>` is MySQL's IS NOT DISTINCT FROM (NULL equals NULL)
      const { affectedRows } =
        expected === undefined
          ? await exec('UPDATE channels SET credentials = ?, attention = NULL WHERE id = ?', [sealed, channelId])
          : await exec('UPDATE channels SET credentials = ? WHERE id = ? AND credentials <=> ?', [sealed, channelId, expected]);
      return affectedRows > 0;
    },

    async setAttention(channelId, reason) {
      await exec('UPDATE channels SET attention = ? WHERE id = ? AND NOT (attention <=> ?)', [reason, channelId, reason]);
    },

    async replaceSettings(channelId, settings) {
      return (await exec('UPDATE channels SET settings = ? WHERE id = ?', [JSON.stringify(settings), channelId])).affectedRows > 0;
    },

    async setChannelPaused(name, paused) {
      return tx(async (t) => {
        const { affectedRows } = await t.exec(
          `UPDATE channels SET paused_at = CASE WHEN ? THEN COALESCE(paused_at, NOW(3)) END WHERE ${NAMED}`,
          [paused, name, name],
        );
        if (affectedRows === 0) return null;
        const [row] = await t.q<ChannelRow>(`SELECT * FROM channels WHERE ${NAMED}`, [name, name]);
        return row === undefined ? null : channelFromRow(row);
      });
    },

    async removeChannel(name, cancelPosts) {
      // One transaction (PostgreSQL does it in one statement of CTEs with DML, which MySQL
      // has not). The channel's row is locked first (FOR UPDATE), so a post scheduled
      // meanwhile waits for it (its foreign key check) and then finds no channel; its live
      // posts are locked next, so a claim skips them and an outcome waits, and the counts,
      // the cancel and the removal see the same posts.
      return tx(async (t) => {
        const [ch] = await t.q<{ id: number }>(`SELECT id FROM channels WHERE ${NAMED} FOR UPDATE`, [name, name]);
        if (ch === undefined) return null;
        const live = await t.q<{ status: PostStatus; n: number }>(
          'SELECT status, count(*) AS n FROM post_schedule WHERE channel_id = ? AND status IN (?) GROUP BY status FOR UPDATE',
          [ch.id, LIVE],
        );
        const blocking = Object.fromEntries(live.map((r) => [r.status, r.n])) as Partial<Record<PostStatus, number>>;
        const keeps = live.some((r) => !(cancelPosts && (r.status === 'pending' || r.status === 'unknown')));
        if (keeps) return { removed: false, cancelled: 0, blocking };
        const cancelled = cancelPosts
          ? (
              await t.exec(`UPDATE post_schedule SET status = '${TRANSITIONS.cancel.to}', updated_at = NOW(3) WHERE channel_id = ? AND ${whereFrom('cancel')}`, [
                ch.id,
              ])
            ).affectedRows
          : 0;
        await t.exec("UPDATE channels SET removed_at = NOW(3), paused_at = NULL, name = CONCAT(?, ' (removed #', id, ')') WHERE id = ?", [name, ch.id]);
        return { removed: true, cancelled, blocking: {} };
      });
    },
  };
}
