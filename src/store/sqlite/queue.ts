import { TRANSITIONS, whereFrom } from '../../states.ts';
import type { HeldPost, NewPost, OnUnknown, Outcome, PostStatus, RecoveredPost } from '../../types.ts';
import { exchangeCalls, type QueueStore } from '../concerns/queue.ts';
import { attemptRecord, CHANNEL_COLUMNS, CLAIM_POST_COLUMNS, claimedFromRows, type ChannelRow, type ClaimRow, partsColumn, postFromRow, type PostRow, publishedPartColumn } from '../rows.ts';
import { type ClaimOptions, type Exchange, leaseExpiredMessage, recoveredStatus } from '../store.ts';
import type { SqliteConnection } from './connection.ts';

// Every update of a claim: still processing under this worker and this claim token.
const fence = `status = 'processing' AND worker_id = ? AND claim_token = ?`;
/** The statements of the queue (status counts the due posts with SQL.dueCount). */
export const SQL = {
  // an exchange's published posts in one statement ([id, token, waitedMs, externalId,
  // externalUrl] each): publish, or publishLate (recovery took the post back, nobody
  // claimed it since)
  published: `UPDATE post_schedule SET status = '${TRANSITIONS.publish.to}', published_at = @now,
                     external_id = json_extract(j.value, '$[3]'), external_url = json_extract(j.value, '$[4]'),
                     unconfirmed = 0, lease_expires_at = NULL, updated_at = @now
                FROM json_each(@published) j
               WHERE post_schedule.id = json_extract(j.value, '$[0]') AND claim_token = json_extract(j.value, '$[1]')
                 AND (${whereFrom('publish')} AND worker_id = @worker OR ${whereFrom('publishLate')})
              RETURNING id`,
  retry: `UPDATE post_schedule SET status = '${TRANSITIONS.retryLater.to}', run_at = ?, last_error = ?, attempts = attempts - ?,
                 unconfirmed = MAX(unconfirmed, ?), worker_id = NULL, locked_at = NULL, lease_expires_at = NULL, updated_at = ?
           WHERE id = ? AND ${whereFrom('retryLater')} AND ${fence}`,
  failed: `UPDATE post_schedule SET status = '${TRANSITIONS.fail.to}', last_error = ?, lease_expires_at = NULL, updated_at = ?
            WHERE id = ? AND ${whereFrom('fail')} AND ${fence}`,
  unknown: `UPDATE post_schedule SET status = '${TRANSITIONS.holdUnknown.to}', last_error = ?, unconfirmed = 1,
                   lease_expires_at = NULL, updated_at = ?
             WHERE id = ? AND ${whereFrom('holdUnknown')} AND ${fence}`,
  released: `UPDATE post_schedule SET status = '${TRANSITIONS.release.to}', attempts = attempts - 1,
                    worker_id = NULL, locked_at = NULL, lease_expires_at = NULL, updated_at = ?
              WHERE id = ? AND ${whereFrom('release')} AND ${fence}`,
  // Locks: the whole database, for the length of this short write transaction.
  claim: `UPDATE post_schedule
             SET status = '${TRANSITIONS.claim.to}', worker_id = ?, locked_at = ?, lease_expires_at = ?,
                 attempts = attempts + 1, claim_token = claim_token + 1, updated_at = ?
           WHERE id IN (SELECT id FROM post_schedule
                         WHERE ${whereFrom('claim')} AND run_at <= ?
                           AND id NOT IN (SELECT value FROM json_each(?))
                           -- never a post of a channel an operator paused (a list read once)
                           AND channel_id NOT IN (SELECT id FROM channels WHERE paused_at IS NOT NULL)
                         ORDER BY run_at, id LIMIT ?)
         RETURNING id`,
  // due posts, read from the partial due index
  dueCount: `SELECT count(*) AS n FROM post_schedule WHERE status = 'pending' AND run_at <= ?
               AND channel_id NOT IN (SELECT id FROM channels WHERE paused_at IS NOT NULL)`,
  // the next due time: the first entry of the partial due index not of a paused channel
  nextDue: `SELECT run_at FROM post_schedule WHERE status = 'pending' AND run_at > ?
              AND channel_id NOT IN (SELECT id FROM channels WHERE paused_at IS NOT NULL)
            ORDER BY run_at LIMIT 1`,
  // the attempt as it was before its outcome (posts show)
  before: 'SELECT attempts, locked_at FROM post_schedule WHERE id = ?',
  attempt: `INSERT INTO post_attempts (post_id, attempt, worker_id, started_at, finished_at, outcome, reason, error, external_id, external_url)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  // their attempts, read after the update (it changes neither attempts nor locked_at): those
  // it applied to; each started at its claim, or as long after as it waited in the worker
  publishedAttempts: `INSERT INTO post_attempts (post_id, attempt, worker_id, started_at, finished_at, outcome, external_id, external_url)
                      SELECT s.id, s.attempts, @worker, s.locked_at + json_extract(j.value, '$[2]'), @now, 'published',
                             json_extract(j.value, '$[3]'), json_extract(j.value, '$[4]')
                        FROM json_each(@published) j
                        JOIN post_schedule s ON s.id = json_extract(j.value, '$[0]') AND s.claim_token = json_extract(j.value, '$[1]')`,
  // the claimed posts with content and channel; ids as one JSON array, so that one
  // prepared statement serves every batch size
  claimed: `SELECT ${CLAIM_POST_COLUMNS}, d.text, d.parts
              FROM post_schedule s
              LEFT JOIN post_details d ON d.id = s.post_detail_id
             WHERE s.id IN (SELECT value FROM json_each(?))
             ORDER BY s.run_at, s.id`,
  // their channels, once each (a batch is mostly one channel's posts)
  claimedChannels: `SELECT ${CHANNEL_COLUMNS} FROM channels
                     WHERE id IN (SELECT channel_id FROM post_schedule WHERE id IN (SELECT value FROM json_each(?)))`,
} as const;


/**
 * The queue on SQLite (see QueueStore). Every write is one BEGIN IMMEDIATE transaction:
 * the select of due posts and their update to processing are one atomic step, and every
 * process on the file sees it whole. Times are this machine's clock, in epoch ms.
 */
export function makeSqliteQueue(c: SqliteConnection): QueueStore {
  const { db, stmt, immediate, read } = c;
  /** The claim and the outcomes in one immediate transaction (one commit). */
  const exchange = (workerId: string, outcomes: readonly Outcome[], limit: number, leaseMs: number, claim: ClaimOptions = {}): Promise<Exchange> =>
    immediate(() => {
      const now = Date.now();
      // a worker with a GLOBAL_MAX_WORKERS slot claims only while the slot is its own,
      // and the claim extends it as long as the leases it takes
      if (limit > 0 && claim.slot === true) {
        const held = stmt('UPDATE worker_slots SET expires_at = ? WHERE holder = ? AND expires_at > ?').run(now + leaseMs, workerId, now).changes;
        if (held === 0) limit = 0;
      }
      // The claim first, then the outcomes: a post this call returns to pending is not
      // claimed again by it (as on PostgreSQL, where both see the same snapshot).
      let ids: number[] = [];
      // never a post this call records an outcome for (a late publish of a post recovery
      // put back must land, not be hidden by a new claim)
      const recording = JSON.stringify(outcomes.map((o) => o.postId));
      if (limit > 0) ids = (stmt(SQL.claim).all(workerId, now, now + leaseMs, now, now + Math.max(0, claim.aheadMs ?? 0), recording, limit) as { id: number }[]).map((r) => r.id);
      const applied: number[] = [];
      // one entry per post and claim token (the first, as the per-row path would apply it):
      // of entries for one post, only the one with its token lands, and its attempt with it
      const seen = new Set<string>();
      const published = outcomes.flatMap((o) => {
        if (o.kind !== 'published' || seen.has(`${o.postId}:${o.token}`)) return [];
        seen.add(`${o.postId}:${o.token}`);
        return [[o.postId, o.token, Math.round(o.waitedMs ?? 0), o.externalId, o.externalUrl]];
      });
      if (published.length > 0) {
        const all = JSON.stringify(published);
        const done = (stmt(SQL.published).all({ now, worker: workerId, published: all }) as { id: number }[]).map((r) => r.id);
        applied.push(...done);
        // usually all of them; else the entries of those it applied to
        const recorded = done.length === published.length ? all : JSON.stringify(published.filter((p) => done.includes(p[0] as number)));
        if (done.length > 0) stmt(SQL.publishedAttempts).run({ now, worker: workerId, published: recorded });
      }
      for (const o of outcomes) {
        if (o.kind === 'published') continue;
        let changes: number;
        const before = o.kind === 'released' ? undefined : (stmt(SQL.before).get(o.postId) as { attempts: number; locked_at: number | null } | undefined);
        if (o.kind === 'retry') {
          changes = stmt(SQL.retry).run(now + o.delayMs, o.error, o.uncounted === true ? 1 : 0, o.unconfirmed ? 1 : 0, now, o.postId, workerId, o.token).changes;
        } else if (o.kind === 'failed') {
          changes = stmt(SQL.failed).run(o.error, now, o.postId, workerId, o.token).changes;
        } else if (o.kind === 'unknown') {
          changes = stmt(SQL.unknown).run(o.error, now, o.postId, workerId, o.token).changes;
        } else {
          changes = stmt(SQL.released).run(now, o.postId, workerId, o.token).changes;
        }
        if (changes > 0) applied.push(o.postId);
        // posts show: one row per attempt that ended, with its reason (a release is none)
        const record = attemptRecord(o);
        if (changes > 0 && before !== undefined && record !== null) {
          const error = o.kind === 'released' ? null : o.error;
          const startedAt = before.locked_at === null ? null : before.locked_at + Math.round(o.waitedMs ?? 0);
          stmt(SQL.attempt).run(o.postId, before.attempts, workerId, startedAt, now, record.outcome, record.reason, error, null, null);
        }
      }
      if (ids.length === 0) return { applied, claimed: [] };
      const claimed = JSON.stringify(ids);
      const rows = stmt(SQL.claimed).all(claimed) as ClaimRow[];
      return { applied, claimed: claimedFromRows(rows, stmt(SQL.claimedChannels).all(claimed) as ChannelRow[]) };
    });

  return {
    async schedulePosts(posts: readonly NewPost[]) {
      const { randomUUID } = await import('node:crypto');
      const insertDetail = db.prepare('INSERT INTO post_details (text, parts, created_at) VALUES (?, ?, ?)');
      const insertSchedule = db.prepare(
        `INSERT INTO post_schedule (post_detail_id, channel_id, run_at, scheduled_at, status, idempotency_key, created_at, updated_at)
         VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)`,
      );
      return immediate(() => {
        const now = Date.now();
        return posts.map((p) => {
          const detailId = insertDetail.run(p.text, partsColumn(p), now).lastInsertRowid;
          const at = p.runAt.getTime();
          return Number(insertSchedule.run(detailId, p.channelId, at, at, randomUUID(), now, now).lastInsertRowid);
        });
      });
    },

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

    async getPost(id: number) {
      const row = (await read(() =>
        stmt(`SELECT s.*, d.text, d.parts, ch.name AS channel_name FROM post_schedule s LEFT JOIN post_details d ON d.id = s.post_detail_id
            LEFT JOIN channels ch ON ch.id = s.channel_id WHERE s.id = ?`).get(id),
      )) as PostRow | undefined;
      return row === undefined ? null : postFromRow(row);
    },

    async countDue(aheadMs = 0) {
      const row = (await read(() =>
        stmt(SQL.dueCount).get(Date.now() + aheadMs),
      )) as { n: number };
      return row.n;
    },

    async nextDue(after?: Date) {
      const row = (await read(() => stmt(SQL.nextDue).get(after?.getTime() ?? -1))) as { run_at: number } | undefined;
      // the database's clock is this host's (the store writes run_at with Date.now())
      return row === undefined ? null : { runAt: new Date(row.run_at), inMs: row.run_at - Date.now() };
    },

    ...exchangeCalls(exchange),

    async recordPart(workerId, postId, token, index, part) {
      return immediate(
        () =>
          stmt(
            `UPDATE post_schedule SET published_parts = json_insert(published_parts, '$[#]', json(?)), updated_at = ?
              WHERE id = ? AND ${fence} AND json_array_length(published_parts) = ?`,
          ).run(publishedPartColumn(part), Date.now(), postId, workerId, token, index).changes > 0,
      );
    },

    async recoverExpired(maxAttempts: number) {
      return immediate(() => {
        const now = Date.now();
        const expired = stmt(
          `SELECT s.id, s.worker_id, s.attempts, s.attempts - s.attempts_base AS used, s.claim_token, s.locked_at, ch.on_unknown FROM post_schedule s
             LEFT JOIN channels ch ON ch.id = s.channel_id
            WHERE ${whereFrom('recover', 's.status')} AND s.lease_expires_at < ?`,
        ).all(now) as { id: number; worker_id: string | null; attempts: number; used: number; claim_token: number; locked_at: number | null; on_unknown: OnUnknown | null }[];
        const update = stmt(
          `UPDATE post_schedule SET status = ?, last_error = ?, unconfirmed = 1, worker_id = NULL, locked_at = NULL,
                  lease_expires_at = NULL, updated_at = ?
            WHERE id = ? AND status = 'processing' AND claim_token = ?`,
        );
        return expired.map((r): RecoveredPost => {
          const status = recoveredStatus(r.on_unknown, r.used, maxAttempts);
          const error = leaseExpiredMessage(r.worker_id, r.attempts, status === 'unknown');
          update.run(status, error, now, r.id, r.claim_token);
          stmt(SQL.attempt).run(r.id, r.attempts, r.worker_id, r.locked_at, now, 'expired', 'lease-expired', error, null, null);
          return { id: r.id, workerId: r.worker_id, attempts: r.attempts, status };
        });
      });
    },

    async renewLeases(workerId, held, leaseMs) {
      if (held.length === 0) return [];
      return immediate(() => {
        const now = Date.now();
        const renew = stmt(
          `UPDATE post_schedule SET lease_expires_at = ? WHERE id = ? AND ${fence}`,
        );
        return held.filter((h) => renew.run(now + leaseMs, h.postId, workerId, h.token).changes > 0).map((h) => h.postId);
      });
    },

    async reconcile(workerId, ids) {
      const rows = (await read(() =>
        stmt(
          `SELECT id, status, worker_id, claim_token FROM post_schedule WHERE status = 'processing' AND worker_id = ?
           UNION
           SELECT id, status, worker_id, claim_token FROM post_schedule WHERE id IN (SELECT value FROM json_each(?))`,
        ).all(workerId, JSON.stringify(ids)),
      )) as { id: number; status: PostStatus; worker_id: string | null; claim_token: number }[];
      return rows.map((r): HeldPost => ({ id: r.id, status: r.status, workerId: r.worker_id, token: r.claim_token }));
    },

    async requeue(ids: readonly number[] | 'allFailed') {
      const set = `SET status = '${TRANSITIONS.requeue.to}', run_at = ?, attempts_base = attempts, unconfirmed = 0, worker_id = NULL, locked_at = NULL,
                       lease_expires_at = NULL, updated_at = ?`;
      return immediate(() => {
        const now = Date.now();
        if (ids === 'allFailed') {
          return (
            db.prepare(`UPDATE post_schedule ${set} WHERE status = 'failed' RETURNING id`).all(now, now) as {
              id: number;
            }[]
          ).map((r) => r.id);
        }
        const stmt = db.prepare(`UPDATE post_schedule ${set} WHERE id = ? AND ${whereFrom('requeue')} RETURNING id`);
        return ids.flatMap((id) => (stmt.all(now, now, id) as { id: number }[]).map((r) => r.id));
      });
    },

    async confirmPublished(ids: readonly number[]) {
      return immediate(() => {
        const now = Date.now();
        const confirm = stmt(
          `UPDATE post_schedule SET status = '${TRANSITIONS.confirm.to}', published_at = ?, last_error = NULL, updated_at = ?
            WHERE id = ? AND ${whereFrom('confirm')} RETURNING id`,
        );
        return ids.flatMap((id) => (confirm.all(now, now, id) as { id: number }[]).map((r) => r.id));
      });
    },

    async cancel(id: number) {
      return immediate(() => {
        const row = db.prepare('SELECT status FROM post_schedule WHERE id = ?').get(id) as { status: PostStatus } | undefined;
        if (row === undefined) return { cancelled: false, status: null };
        const changes = db
          .prepare(
            `UPDATE post_schedule SET status = '${TRANSITIONS.cancel.to}', updated_at = ?
              WHERE id = ? AND ${whereFrom('cancel')}`,
          )
          .run(Date.now(), id).changes;
        return { cancelled: changes > 0, status: row.status };
      });
    },
  };
}
