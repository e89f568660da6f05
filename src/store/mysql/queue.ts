import { randomUUID } from 'node:crypto';
import { TRANSITIONS, whereFrom } from '../../states.ts';
import type { HeldPost, NewPost, OnUnknown, Outcome, PostStatus, RecoveredPost } from '../../types.ts';
import { exchangeCalls, type QueueStore } from '../concerns/queue.ts';
import { attemptRecord, CLAIM_CHANNEL_COLUMNS, CLAIM_POST_COLUMNS, type ClaimChannelColumns, claimedFromRows, type ClaimRow, outcomeJson, partsColumn, postFromRow, type PostRow, publishedPartColumn } from '../rows.ts';
import { type ClaimOptions, type Exchange, leaseExpiredMessage, recoveredStatus } from '../store.ts';
import type { MysqlConnection, MysqlTx } from './connection.ts';

/** `ms` milliseconds after the server's now (DATETIME(3), UTC): one `?` for the ms. */
const NOW_PLUS_MS = 'NOW(3) + INTERVAL ? * 1000 MICROSECOND';

/** The channels an operator paused: their posts are never claimed nor counted as due (a list read once per statement). */
const NOT_PAUSED = 'channel_id NOT IN (SELECT id FROM channels WHERE paused_at IS NOT NULL)';

/**
 * The due posts a claim takes, oldest first, walking post_schedule_due (exported for the
 * conformance suite's plan check): due within the first parameter's ms (ClaimOptions.aheadMs);
 * `excluding`: not the posts of these ids (a parameter).
 */
export function dueForClaim(excluding: boolean): string {
  return `SELECT id FROM post_schedule
           WHERE ${whereFrom('claim')} AND run_at <= ${NOW_PLUS_MS} AND ${NOT_PAUSED}
             ${excluding ? 'AND id NOT IN (?)' : ''}
           ORDER BY run_at, id
           LIMIT ?
           FOR UPDATE SKIP LOCKED`;
}

/**
 * The outcomes of one exchange as a table `v` (one JSON parameter, JSON_TABLE): MySQL has
 * no arrays to unnest. Keys whose value is null are left out of the JSON (a missing path
 * is NULL on both servers; a JSON null is not on every version).
 */
const OUTCOMES = `JSON_TABLE(?, '$[*]' COLUMNS (
    id BIGINT PATH '$.id', token BIGINT PATH '$.token', kind VARCHAR(16) PATH '$.kind', status VARCHAR(16) PATH '$.status',
    error TEXT PATH '$.error', delay_ms BIGINT PATH '$.delayMs', external_id TEXT PATH '$.externalId',
    external_url TEXT PATH '$.externalUrl', maybe_sent INT PATH '$.maybeSent', uncounted INT PATH '$.uncounted')) AS v`;

/**
 * The fence of every outcome (`?`: the worker): the post is still processing under this
 * worker and claim token; a `published` also lands on a post recovery took back (pending
 * or unknown) if nobody claimed it since (publishLate: same token).
 */
const OUTCOME_FENCE = `s.claim_token = v.token
  AND (${whereFrom('publish', 's.status')} AND s.worker_id = ? OR v.kind = 'published' AND ${whereFrom('publishLate', 's.status')})`;

/** Rows per INSERT of schedulePosts: well under max_allowed_packet for any text a post may hold. */
const INSERT_CHUNK = 500;

/**
 * The queue on MySQL/MariaDB (see QueueStore), on the server's clock (NOW(3), UTC). Claims
 * use FOR UPDATE SKIP LOCKED, so workers on any number of hosts take disjoint sets of
 * posts without waiting. MySQL has no UPDATE ... RETURNING and no DML in a CTE, so what
 * PostgreSQL does in one statement is here one short READ COMMITTED transaction of a few
 * statements: the rows a write may change are locked and read first (SELECT ... FOR
 * UPDATE with the write's own fence), so the write that follows changes exactly those,
 * and their ids are known without reading them back.
 */
export function makeMysqlQueue(c: MysqlConnection): QueueStore {
  const { q } = c;

  /**
   * Outcomes and the next claim in one transaction (one commit):
   * 1. the outcome rows that pass the fence, locked (FOR UPDATE) and read as they are:
   *    who claimed them and when (the attempt's record); these are the ids applied. The
   *    outcomes table comes first (STRAIGHT_JOIN), each of its rows a primary-key lookup:
   *    joined the other way round, MariaDB scanned the JSON_TABLE once per post row and
   *    a multi-table UPDATE paid for it again (1.2 ms against 0.95 for 13 outcomes); the
   *    `s.id IN (?)` stays, so that no plan can make it a scan of the table, which FOR
   *    UPDATE would lock row by row;
   * 2. one UPDATE joined to the outcomes table the same way, with the same fence (the
   *    rows are ours now: it changes exactly those of step 1);
   * 3. one INSERT of the attempts that ended (a release is none);
   * 4. with a GLOBAL_MAX_WORKERS slot: the slot extended as long as the leases taken, and
   *    no claim when it is no longer this worker's;
   * 5. the due posts, oldest first, FOR UPDATE SKIP LOCKED: rows another claim holds are
   *    skipped, not waited for. Never a post of this call's outcomes: one it just put
   *    back to pending (a retry with no delay is due at once) is not claimed again, and a
   *    post recovery put back must get its late publish, not a new claim;
   * 6. those rows to processing under a new claim token and a lease;
   * 7. the claimed rows with content and channel (a plain read: locking a channel row
   *    would make every claim of its posts wait for the others).
   */
  const exchange = async (workerId: string, outcomes: readonly Outcome[], limit: number, leaseMs: number, claim: ClaimOptions = {}): Promise<Exchange> => {
    if (outcomes.length === 0 && limit <= 0) return { applied: [], claimed: [] };
    return c.tx(async (t) => {
      const recording = outcomes.map((o) => o.postId);
      let applied: number[] = [];
      if (outcomes.length > 0) {
        const table = JSON.stringify(outcomes.map(outcomeJson));
        const before = await t.q<{ id: number; attempts: number; claim_token: number | string; locked_at: Date | null }>(
          `SELECT s.id, s.attempts, s.claim_token, s.locked_at FROM ${OUTCOMES} STRAIGHT_JOIN post_schedule s ON s.id = v.id
            WHERE s.id IN (?) AND ${OUTCOME_FENCE}
            FOR UPDATE`,
          [table, recording, workerId],
        );
        applied = [...new Set(before.map((b) => b.id))];
        if (applied.length > 0) {
          await t.exec(
            `UPDATE ${OUTCOMES} STRAIGHT_JOIN post_schedule s ON s.id = v.id
                SET s.status = v.status,
                    s.run_at = CASE WHEN v.kind = 'retry' THEN NOW(3) + INTERVAL v.delay_ms * 1000 MICROSECOND ELSE s.run_at END,
                    s.published_at = CASE WHEN v.kind = 'published' THEN NOW(3) ELSE s.published_at END,
                    s.external_id = COALESCE(v.external_id, s.external_id),
                    s.external_url = COALESCE(v.external_url, s.external_url),
                    s.last_error = CASE WHEN v.kind IN ('retry', 'failed', 'unknown') THEN v.error ELSE s.last_error END,
                    s.unconfirmed = CASE WHEN v.kind = 'published' THEN FALSE
                                         WHEN v.kind = 'unknown' THEN TRUE
                                         ELSE s.unconfirmed OR v.maybe_sent = 1 END,
                    s.worker_id = CASE WHEN v.status = 'pending' THEN NULL ELSE s.worker_id END,
                    s.locked_at = CASE WHEN v.status = 'pending' THEN NULL ELSE s.locked_at END,
                    s.attempts = CASE WHEN v.kind = 'released' OR v.uncounted = 1 THEN s.attempts - 1 ELSE s.attempts END,
                    s.lease_expires_at = NULL,
                    s.updated_at = NOW(3)
              WHERE s.id IN (?) AND ${OUTCOME_FENCE}`,
            [table, applied, workerId],
          );
          // posts show: one row per attempt that ended, with its reason; finished_at is
          // the column's default, the server's now
          const byId = new Map(before.map((b) => [b.id, b]));
          const attempts = outcomes.flatMap((o) => {
            const b = byId.get(o.postId);
            const record = attemptRecord(o);
            // one per post: the first outcome of its claim (an outcome of an older claim lands nothing)
            if (b === undefined || record === null || Number(b.claim_token) !== o.token) return [];
            byId.delete(o.postId);
            const error = o.kind === 'failed' || o.kind === 'retry' || o.kind === 'unknown' ? o.error : null;
            const [externalId, externalUrl] = o.kind === 'published' ? [o.externalId, o.externalUrl] : [null, null];
            // it started at its claim, or as long after as it waited in the worker (claimed ahead)
            const startedAt = b.locked_at === null || o.waitedMs === undefined ? b.locked_at : new Date(b.locked_at.getTime() + Math.round(o.waitedMs));
            // by the worker that reports it (a late publish's post has no worker since recovery)
            return [[o.postId, b.attempts, workerId, startedAt, record.outcome, record.reason, error, externalId, externalUrl]];
          });
          if (attempts.length > 0) {
            await t.exec(
              'INSERT INTO post_attempts (post_id, attempt, worker_id, started_at, outcome, reason, error, external_id, external_url) VALUES ?',
              [attempts],
            );
          }
        }
      }
      if (limit > 0 && claim.slot === true) {
        const slot = await t.exec(`UPDATE worker_slots SET expires_at = ${NOW_PLUS_MS} WHERE holder = ? AND expires_at > NOW(3)`, [leaseMs, workerId]);
        if (slot.affectedRows === 0) limit = 0;
      }
      if (limit <= 0) return { applied, claimed: [] };
      const ahead = Math.max(0, claim.aheadMs ?? 0);
      const due = await t.q<{ id: number }>(dueForClaim(recording.length > 0), recording.length > 0 ? [ahead, recording, limit] : [ahead, limit]);
      if (due.length === 0) return { applied, claimed: [] };
      const ids = due.map((d) => d.id);
      await t.exec(
        `UPDATE post_schedule
            SET status = '${TRANSITIONS.claim.to}', worker_id = ?, locked_at = NOW(3), lease_expires_at = ${NOW_PLUS_MS},
                attempts = attempts + 1, claim_token = claim_token + 1, updated_at = NOW(3)
          WHERE id IN (?)`,
        [workerId, leaseMs, ids],
      );
      const rows = await t.q<ClaimRow & ClaimChannelColumns>(
        `SELECT ${CLAIM_POST_COLUMNS}, ${CLAIM_CHANNEL_COLUMNS}, d.text, d.parts
           FROM post_schedule s
           LEFT JOIN post_details d ON d.id = s.post_detail_id
           LEFT JOIN channels ch ON ch.id = s.channel_id
          WHERE s.id IN (?)
          ORDER BY s.run_at, s.id`,
        [ids],
      );
      return { applied, claimed: claimedFromRows(rows) };
    });
  };

  /**
   * The step between a multi-row INSERT's ids (auto_increment_increment, 1 unless the
   * server is set up for multi-source replication), read once.
   */
  let increment: number | null = null;
  const idStep = async (t: MysqlTx): Promise<number> => {
    if (increment === null) {
      const [row] = await t.q<{ step: number }>('SELECT @@auto_increment_increment AS step');
      increment = row?.step ?? 1;
    }
    return increment;
  };

  /**
   * Inserts `posts` (content, then schedule rows) in `t`, one multi-row INSERT per table
   * and chunk; returns their ids in order. A multi-row INSERT ... VALUES is a "simple
   * insert" to InnoDB: its rows get consecutive ids (one step apart) from the first,
   * which insertId reports, in every innodb_autoinc_lock_mode.
   */
  const insertPosts = async (t: MysqlTx, posts: readonly NewPost[], key: string | null): Promise<number[]> => {
    const step = await idStep(t);
    const ids: number[] = [];
    for (let from = 0; from < posts.length; from += INSERT_CHUNK) {
      const chunk = posts.slice(from, from + INSERT_CHUNK);
      const details = await t.exec('INSERT INTO post_details (text, parts) VALUES ?', [chunk.map((p) => [p.text, partsColumn(p)])]);
      const schedule = await t.exec(
        `INSERT INTO post_schedule (post_detail_id, channel_id, run_at, scheduled_at, status, idempotency_key, schedule_key, published_parts)
         VALUES ?`,
        [chunk.map((p, i) => [details.insertId + i * step, p.channelId, p.runAt, p.runAt, 'pending', randomUUID(), key, '[]'])],
      );
      ids.push(...chunk.map((_, i) => schedule.insertId + i * step));
    }
    return ids;
  };

  const findByKey = async (key: string): Promise<number | null> => {
    const [row] = await q<{ id: number }>('SELECT id FROM post_schedule WHERE schedule_key = ?', [key]);
    return row === undefined ? null : row.id;
  };

  return {
    async schedulePosts(posts: readonly NewPost[]) {
      if (posts.length === 0) return [];
      return c.tx((t) => insertPosts(t, posts, null));
    },

    async scheduleWithKey(post, key) {
      const existing = await findByKey(key);
      if (existing !== null) return { id: existing, created: false };
      // The unique index on schedule_key settles a race: the loser's INSERT waits for the
      // winner's transaction, then fails as a duplicate, and its whole transaction (its
      // content row too) is rolled back.
      try {
        const [id] = await c.tx((t) => insertPosts(t, [post], key));
        if (id !== undefined) return { id, created: true };
      } catch (e) {
        if (!isDuplicateKey(e)) throw e;
      }
      const winner = await findByKey(key);
      if (winner === null) throw new Error(`schedule key ${key}: taken, then not found`);
      return { id: winner, created: false };
    },

    async getPost(id: number) {
      const [row] = await q<PostRow>(
        `SELECT s.*, d.text, d.parts, ch.name AS channel_name FROM post_schedule s LEFT JOIN post_details d ON d.id = s.post_detail_id
          LEFT JOIN channels ch ON ch.id = s.channel_id WHERE s.id = ?`,
        [id],
      );
      return row === undefined ? null : postFromRow(row);
    },

    async countDue(aheadMs = 0) {
      // a range of the due index (status, run_at, id)
      const [row] = await q<{ n: number }>(
        `SELECT count(*) AS n FROM post_schedule WHERE status = 'pending' AND run_at <= ${NOW_PLUS_MS} AND ${NOT_PAUSED}`,
        [aheadMs],
      );
      return row?.n ?? 0;
    },

    async nextDue(after?: Date) {
      // in_ms on the server's clock: the daemon never compares run_at to its host's
      const [row] = await q<{ run_at: Date; in_ms: number }>(
        `SELECT run_at, TIMESTAMPDIFF(MICROSECOND, NOW(3), run_at) / 1000 AS in_ms
           FROM post_schedule WHERE status = 'pending' ${after === undefined ? '' : 'AND run_at > ?'} AND ${NOT_PAUSED}
          ORDER BY run_at LIMIT 1`,
        after === undefined ? [] : [after],
      );
      return row === undefined ? null : { runAt: row.run_at, inMs: Math.round(row.in_ms) };
    },

    ...exchangeCalls(exchange),

    async recordPart(workerId, postId, token, index, part) {
      // one row, one statement: affectedRows says whether it applied (an append always changes the row)
      const done = await c.exec(
        `UPDATE post_schedule SET published_parts = JSON_ARRAY_APPEND(published_parts, '$', JSON_EXTRACT(?, '$')), updated_at = NOW(3)
          WHERE id = ? AND status = 'processing' AND worker_id = ? AND claim_token = ? AND JSON_LENGTH(published_parts) = ?`,
        [publishedPartColumn(part), postId, workerId, token, index],
      );
      return done.affectedRows > 0;
    },

    async recoverExpired(maxAttempts: number) {
      return c.tx(async (t) => {
        // The expired leases, locked; rows a worker is recording an outcome for right now
        // are skipped (SKIP LOCKED), not waited for: the next cycle sees them if still out.
        // The channel's policy is read by a subquery, which FOR UPDATE does not lock.
        const rows = await t.q<{ id: number; worker_id: string | null; attempts: number; used: number; locked_at: Date | null; on_unknown: OnUnknown | null }>(
          `SELECT s.id, s.worker_id, s.attempts, s.attempts - s.attempts_base AS used, s.locked_at,
                  (SELECT ch.on_unknown FROM channels ch WHERE ch.id = s.channel_id) AS on_unknown
             FROM post_schedule s
            WHERE ${whereFrom('recover', 's.status')} AND s.lease_expires_at < NOW(3)
            FOR UPDATE SKIP LOCKED`,
        );
        if (rows.length === 0) return [];
        const recovered = rows.map((r) => {
          const status = recoveredStatus(r.on_unknown, r.used, maxAttempts);
          return { id: r.id, workerId: r.worker_id, attempts: r.attempts, status, lockedAt: r.locked_at };
        });
        const table = JSON.stringify(recovered.map((r) => ({ id: r.id, status: r.status, error: leaseExpiredMessage(r.workerId, r.attempts, r.status === 'unknown') })));
        await t.exec(
          `UPDATE post_schedule s JOIN JSON_TABLE(?, '$[*]' COLUMNS (id BIGINT PATH '$.id', status VARCHAR(16) PATH '$.status', error TEXT PATH '$.error')) AS v
              ON v.id = s.id
              SET s.status = v.status, s.last_error = v.error, s.unconfirmed = TRUE, s.worker_id = NULL, s.locked_at = NULL,
                  s.lease_expires_at = NULL, s.updated_at = NOW(3)
            WHERE s.id IN (?) AND ${whereFrom('recover', 's.status')}`,
          [table, recovered.map((r) => r.id)],
        );
        await t.exec('INSERT INTO post_attempts (post_id, attempt, worker_id, started_at, outcome, reason, error) VALUES ?', [
          recovered.map((r) => [r.id, r.attempts, r.workerId, r.lockedAt, 'expired', 'lease-expired', leaseExpiredMessage(r.workerId, r.attempts, r.status === 'unknown')]),
        ]);
        return recovered.map((r): RecoveredPost => ({ id: r.id, workerId: r.workerId, attempts: r.attempts, status: r.status }));
      });
    },

    async renewLeases(workerId, held, leaseMs) {
      if (held.length === 0) return [];
      const table = JSON.stringify(held.map((h) => ({ id: h.postId, token: h.token })));
      const fenced = `FROM post_schedule s JOIN JSON_TABLE(?, '$[*]' COLUMNS (id BIGINT PATH '$.id', token BIGINT PATH '$.token')) AS v ON v.id = s.id
          WHERE s.id IN (?) AND s.status = 'processing' AND s.worker_id = ? AND s.claim_token = v.token`;
      return c.tx(async (t) => {
        // the leases still this worker's, locked, then extended: no RETURNING to say which
        const rows = await t.q<{ id: number }>(`SELECT s.id ${fenced} FOR UPDATE`, [table, held.map((h) => h.postId), workerId]);
        const ids = rows.map((r) => r.id);
        if (ids.length === 0) return [];
        await t.exec(`UPDATE post_schedule SET lease_expires_at = ${NOW_PLUS_MS} WHERE id IN (?)`, [leaseMs, ids]);
        return ids;
      });
    },

    async reconcile(workerId, ids) {
      const mine = `SELECT id, status, worker_id, claim_token FROM post_schedule WHERE status = 'processing' AND worker_id = ?`;
      const rows = await q<{ id: number; status: PostStatus; worker_id: string | null; claim_token: number }>(
        ids.length === 0 ? mine : `${mine} UNION SELECT id, status, worker_id, claim_token FROM post_schedule WHERE id IN (?)`,
        ids.length === 0 ? [workerId] : [workerId, ids],
      );
      return rows.map((r): HeldPost => ({ id: r.id, status: r.status, workerId: r.worker_id, token: r.claim_token }));
    },

    async requeue(ids: readonly number[] | 'allFailed') {
      const set = `status = '${TRANSITIONS.requeue.to}', run_at = NOW(3), attempts_base = attempts, unconfirmed = FALSE, worker_id = NULL,
                   locked_at = NULL, lease_expires_at = NULL, updated_at = NOW(3)`;
      if (ids === 'allFailed') return lockedUpdate(c, "status = 'failed'", [], set);
      if (ids.length === 0) return [];
      return lockedUpdate(c, `id IN (?) AND ${whereFrom('requeue')}`, [ids], set);
    },

    async confirmPublished(ids: readonly number[]) {
      if (ids.length === 0) return [];
      return lockedUpdate(
        c,
        `id IN (?) AND ${whereFrom('confirm')}`,
        [ids],
        `status = '${TRANSITIONS.confirm.to}', published_at = NOW(3), last_error = NULL, updated_at = NOW(3)`,
      );
    },

    async cancel(id: number) {
      return c.tx(async (t) => {
        // the status the update sees: the row is locked between the two
        const [row] = await t.q<{ status: PostStatus }>('SELECT status FROM post_schedule WHERE id = ? FOR UPDATE', [id]);
        if (row === undefined) return { cancelled: false, status: null };
        const done = await t.exec(`UPDATE post_schedule SET status = '${TRANSITIONS.cancel.to}', updated_at = NOW(3) WHERE id = ? AND ${whereFrom('cancel')}`, [id]);
        return { cancelled: done.affectedRows > 0, status: row.status };
      });
    },
  };
}

/**
 * An operator's update of the posts matching `where` (their guard from states.ts), in one
 * transaction: the rows locked and read (the ids an UPDATE ... RETURNING would give), then
 * updated by id. Returns the ids, ascending.
 */
async function lockedUpdate(c: MysqlConnection, where: string, values: readonly unknown[], set: string): Promise<number[]> {
  return c.tx(async (t) => {
    const rows = await t.q<{ id: number }>(`SELECT id FROM post_schedule WHERE ${where} ORDER BY id FOR UPDATE`, [...values]);
    const ids = rows.map((r) => r.id);
    if (ids.length === 0) return [];
    await t.exec(`UPDATE post_schedule SET ${set} WHERE id IN (?)`, [ids]);
    return ids;
  });
}

const DUPLICATE_KEY = 1062;

/** A duplicate-key error (ER_DUP_ENTRY), as thrown or as the cause the connection wrapped it with. */
function isDuplicateKey(e: unknown): boolean {
  const errno = (x: unknown): unknown => (x as { errno?: unknown } | null)?.errno;
  return errno(e) === DUPLICATE_KEY || errno((e as { cause?: unknown } | null)?.cause) === DUPLICATE_KEY;
}
