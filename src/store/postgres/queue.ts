import { TRANSITIONS, whereFrom } from '../../states.ts';
import type { HeldPost, NewPost, OnUnknown, Outcome, PostStatus, RecoveredPost } from '../../types.ts';
import { exchangeCalls, type QueueStore } from '../concerns/queue.ts';
import { CLAIM_CHANNEL_COLUMNS, CLAIM_POST_COLUMNS, type ClaimChannelColumns, claimedFromRows, type ClaimRow, outcomeJson, partsColumn, postFromRow, type PostRow, publishedPartColumn } from '../rows.ts';
import { type ClaimOptions, type Exchange, leaseExpiredMessage, recoveredStatus } from '../store.ts';
import type { PostgresConnection } from './connection.ts';

/** A schedulePosts batch at least this big is a bulk load (it analyzes post_schedule). */
const BULK_ROWS = 1_000;

/**
 * Not a post of a channel an operator paused: a hashed subplan, which the planner counts
 * as keeping half the rows. `NOT (channel_id = ANY (ARRAY(...)))`, and a NOT EXISTS too,
 * were estimated to keep one row when every due post is one channel's (the planner cannot
 * know that channel is not paused), and the claim then read and sorted every due post
 * instead of taking the due index's first few: a drain quadratic in its size.
 */
const NOT_PAUSED = `channel_id NOT IN (SELECT id FROM channels WHERE paused_at IS NOT NULL)`;

/**
 * Outcomes and the next claim in one statement (one round trip, one commit).
 * - done: the outcomes, fenced by the claim token: a row changes only while it is still
 *   processing under this worker and claim; a post recovered and claimed by another
 *   worker is left alone. A `published` also lands on a post recovery took back
 *   (pending or unknown) if nobody claimed it since (publishLate).
 *   The claim skips the posts of these outcomes (a row changed by `claimed` would be
 *   silently skipped by `done`).
 * - due / claimed: the claim. Locks the due rows picked, FOR UPDATE; rows another claim
 *   holds are skipped, not waited for. Posts `done` returns to pending are not seen by
 *   `due` (same snapshot), so they are never re-claimed by the same call.
 * Returns one row: `applied` (comma-separated ids) and `claimed` (a JSON array).
 * Exported for the conformance suite's plan check.
 */
export const EXCHANGE = `
  WITH v AS (
    -- the outcomes: one JSON array, one parameter (rows.ts outcomeJson)
    SELECT id, token, kind, status, error, "delayMs" AS delay_ms, "externalId" AS external_id, "externalUrl" AS external_url,
           "maybeSent" = 1 AS maybe_sent, uncounted = 1 AS uncounted, "attemptOutcome" AS attempt_outcome, reason,
           coalesce("waitedMs", 0) AS waited_ms
      FROM json_to_recordset($3::text::json)
           AS t(id bigint, token bigint, kind text, status text, error text, "delayMs" bigint, "externalId" text, "externalUrl" text,
                "maybeSent" int, uncounted int, "attemptOutcome" text, reason text, "waitedMs" bigint)
  ), done AS (
    UPDATE post_schedule s
       SET status = v.status,
           run_at = CASE WHEN v.kind = 'retry' THEN now() + v.delay_ms * interval '1 millisecond' ELSE s.run_at END,
           published_at = CASE WHEN v.kind = 'published' THEN now() ELSE s.published_at END,
           external_id = COALESCE(v.external_id, s.external_id),
           external_url = COALESCE(v.external_url, s.external_url),
           last_error = CASE WHEN v.kind IN ('retry', 'failed', 'unknown') THEN v.error ELSE s.last_error END,
           unconfirmed = CASE WHEN v.kind = 'published' THEN false
                              WHEN v.kind = 'unknown' THEN true
                              ELSE s.unconfirmed OR v.maybe_sent END,
           worker_id = CASE WHEN v.status = 'pending' THEN NULL ELSE s.worker_id END,
           locked_at = CASE WHEN v.status = 'pending' THEN NULL ELSE s.locked_at END,
           attempts = CASE WHEN v.kind = 'released' OR v.uncounted THEN s.attempts - 1 ELSE s.attempts END,
           lease_expires_at = NULL,
           updated_at = now()
      -- o: the row as this statement's snapshot saw it (the attempt's number and start)
      FROM v JOIN post_schedule o ON o.id = v.id
     -- s.id = ANY: a primary-key lookup per outcome, whatever the planner guesses of v's size
     WHERE s.id = ANY($2::bigint[]) AND s.id = v.id AND s.claim_token = v.token
       AND (${whereFrom('publish', 's.status')} AND s.worker_id = $1
            OR v.kind = 'published' AND ${whereFrom('publishLate', 's.status')})
    RETURNING s.id, s.claim_token, o.attempts AS attempt, o.locked_at AS attempt_started_at
  ), attempt AS (
    -- posts show: one row per attempt that ended, with its reason (a release is none: attempt_outcome NULL)
    INSERT INTO post_attempts (post_id, attempt, worker_id, started_at, finished_at, outcome, reason, error, external_id, external_url)
    -- one per post, of the claim that landed (an older claim's outcome lands nothing); by the
    -- worker that reports it (a late publish's post has had no worker since recovery); it
    -- started at its claim, or as long after as it waited in the worker (claimed ahead)
    SELECT DISTINCT ON (v.id) v.id, done.attempt, $1, done.attempt_started_at + v.waited_ms * interval '1 millisecond', now(),
           v.attempt_outcome, v.reason, v.error, v.external_id, v.external_url
      FROM done JOIN v ON v.id = done.id AND v.token = done.claim_token
     WHERE v.attempt_outcome IS NOT NULL
  ), slot AS (
    -- the worker's GLOBAL_MAX_WORKERS slot ($6), extended as long as the leases taken
    UPDATE worker_slots SET expires_at = now() + $5 * interval '1 millisecond'
     WHERE $6::boolean AND $4 > 0 AND holder = $1 AND expires_at > now()
    RETURNING 1
  ), due AS (
    SELECT id FROM post_schedule
     WHERE ${whereFrom('claim')} AND run_at <= now() + $7 * interval '1 millisecond' AND (NOT $6::boolean OR EXISTS (SELECT 1 FROM slot))
       -- never a post of a channel an operator paused (NOT_PAUSED)
       AND ${NOT_PAUSED}
       -- never a post this call records an outcome for: the same snapshot still sees a
       -- post recovery put back as pending, and a claim would hide its late publish
       AND NOT (id = ANY($2::bigint[]))
     ORDER BY run_at, id
     LIMIT $4
     FOR UPDATE SKIP LOCKED
  ), claimed AS (
    UPDATE post_schedule s
       SET status = '${TRANSITIONS.claim.to}', worker_id = $1, locked_at = now(),
           lease_expires_at = now() + $5 * interval '1 millisecond',
           attempts = s.attempts + 1, claim_token = s.claim_token + 1, updated_at = now()
     -- a primary-key lookup per claimed post (as in done), never a hash join over the table
     WHERE s.id = ANY (ARRAY(SELECT id FROM due))
    RETURNING s.id, s.run_at, s.scheduled_at, s.attempts, s.attempts_base, s.claim_token, s.idempotency_key, s.unconfirmed,
              s.published_parts, s.post_detail_id, s.channel_id
  )
  SELECT (SELECT COALESCE(string_agg(id::text, ','), '') FROM done) AS applied,
         -- the claimed posts as one JSON array, oldest first: the worker parses one value
         -- (natively) rather than a row of twenty columns per post
         (SELECT json_agg(c ORDER BY c.run_at, c.id) FROM (
            SELECT ${CLAIM_POST_COLUMNS}, ${CLAIM_CHANNEL_COLUMNS},
                   -- a lookup by primary key per claimed row, never a scan of all content
                   (SELECT d.text FROM post_details d WHERE d.id = s.post_detail_id) AS text,
                   (SELECT d.parts FROM post_details d WHERE d.id = s.post_detail_id) AS parts
              FROM (SELECT *, row_number() OVER (PARTITION BY channel_id) AS nth FROM claimed) s
              -- a channel's columns on one of its posts' rows only (claimedFromRows): the
              -- worker makes each channel once per batch, not once per post
              LEFT JOIN channels ch ON ch.id = s.channel_id AND s.nth = 1
         ) AS c) AS claimed`;

/**
 * The queue on PostgreSQL (see QueueStore), on the database's clock. Claims use FOR
 * UPDATE SKIP LOCKED, so workers on any number of hosts take disjoint sets of posts
 * without waiting; a claim and the outcomes before it are one statement (exchange).
 */
export function makePostgresQueue(c: PostgresConnection): QueueStore {
  const { q } = c;
  const exchange = async (workerId: string, outcomes: readonly Outcome[], limit: number, leaseMs: number, claim: ClaimOptions = {}): Promise<Exchange> => {
    // one row: the ids of the outcomes applied, and the posts claimed (null when none)
    const [row] = await q<{ applied: string; claimed: (ClaimRow & ClaimChannelColumns)[] | null }>(EXCHANGE, [
      workerId,
      outcomes.map((o) => o.postId),
      JSON.stringify(outcomes.map(outcomeJson)),
      Math.max(0, limit),
      leaseMs,
      claim.slot === true,
      Math.max(0, claim.aheadMs ?? 0),
    ]);
    const applied = (row?.applied ?? '') === '' ? [] : (row?.applied ?? '').split(',').map(Number);
    return { applied, claimed: claimedFromRows(row?.claimed ?? []) };
  };

  const findByKey = async (key: string): Promise<number | null> => {
    const [row] = await q<{ id: number }>('SELECT id FROM post_schedule WHERE schedule_key = $1', [key]);
    return row?.id ?? null;
  };
  return {
    async schedulePosts(posts: readonly NewPost[]) {
      if (posts.length === 0) return [];
      const { randomUUID } = await import('node:crypto');
      // One statement for the whole batch: content rows first, then their schedule rows,
      // paired by ordinality so ids come back in input order.
      const rows = await q<{ id: number }>(
        `WITH input AS (
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::text[], $5::jsonb[])
                    WITH ORDINALITY AS t(text, channel_id, run_at, idempotency_key, parts, n)
         ), details AS (
           INSERT INTO post_details (text, parts) SELECT text, parts FROM input ORDER BY n RETURNING id
         ), numbered AS (
           SELECT id, row_number() OVER (ORDER BY id) AS n FROM details
         )
         INSERT INTO post_schedule (post_detail_id, channel_id, run_at, scheduled_at, status, idempotency_key)
         SELECT numbered.id, input.channel_id, input.run_at, input.run_at, 'pending', input.idempotency_key
           FROM input JOIN numbered USING (n)
          ORDER BY input.n
         RETURNING id`,
        [
          posts.map((p) => p.text),
          posts.map((p) => p.channelId),
          posts.map((p) => p.runAt.toISOString()),
          posts.map(() => randomUUID()),
          posts.map((p) => partsColumn(p)),
        ],
      );
      // A bulk load (simulate, an import): fresh statistics, as PostgreSQL advises after
      // one, so that the next claims walk the due index rather than sort every due post
      // (a planner that still counts the table as empty estimates two due posts).
      // The posts are in whatever it does: a lock it waits for past lock_timeout, or a role
      // that does not own the table (a warning, skipped), leaves the statistics as they were.
      if (posts.length >= BULK_ROWS) await q('ANALYZE post_schedule').catch(() => undefined);
      return rows.map((r) => r.id).sort((a, b) => a - b);
    },

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

    async getPost(id: number) {
      const [row] = await q<PostRow>(
        `SELECT s.*, d.text, d.parts, ch.name AS channel_name FROM post_schedule s LEFT JOIN post_details d ON d.id = s.post_detail_id
          LEFT JOIN channels ch ON ch.id = s.channel_id WHERE s.id = $1`,
        [id],
      );
      return row === undefined ? null : postFromRow(row);
    },

    async countDue(aheadMs = 0) {
      const [row] = await q<{ n: number }>(
        `SELECT count(*) AS n FROM post_schedule WHERE status = 'pending' AND run_at <= now() + $1 * interval '1 millisecond'
          AND ${NOT_PAUSED}`,
        [aheadMs],
      );
      return row?.n ?? 0;
    },

    async nextDue(after?: Date) {
      // in_ms on the database's clock: the daemon never compares run_at to its host's
      const [row] = await q<{ run_at: Date; in_ms: number }>(
        `SELECT run_at, (extract(epoch FROM run_at - now()) * 1000)::float8 AS in_ms
           FROM post_schedule WHERE status = 'pending' AND ($1::timestamptz IS NULL OR run_at > $1::timestamptz)
            AND ${NOT_PAUSED}
          ORDER BY run_at LIMIT 1`,
        [after?.toISOString() ?? null],
      );
      return row === undefined ? null : { runAt: row.run_at, inMs: Math.round(row.in_ms) };
    },

    ...exchangeCalls(exchange),

    async recordPart(workerId, postId, token, index, part) {
      const rows = await q<{ id: number }>(
        `UPDATE post_schedule SET published_parts = published_parts || jsonb_build_array($5::text::jsonb), updated_at = now()
          WHERE id = $1 AND status = 'processing' AND worker_id = $2 AND claim_token = $3 AND jsonb_array_length(published_parts) = $4
         RETURNING id`,
        [postId, workerId, token, index, publishedPartColumn(part)],
      );
      return rows.length > 0;
    },

    async recoverExpired(maxAttempts: number) {
      const rows = await q<{ id: number; worker_id: string | null; attempts: number; used: number; claim_token: number; locked_at: Date | null; on_unknown: OnUnknown | null }>(
        `SELECT s.id, s.worker_id, s.attempts, s.attempts - s.attempts_base AS used, s.claim_token, s.locked_at, ch.on_unknown FROM post_schedule s
           LEFT JOIN channels ch ON ch.id = s.channel_id
          WHERE ${whereFrom('recover', 's.status')} AND s.lease_expires_at < now()`,
      );
      if (rows.length === 0) return [];
      const recovered = rows.map((r): RecoveredPost => ({
        id: r.id,
        workerId: r.worker_id,
        attempts: r.attempts,
        status: recoveredStatus(r.on_unknown, r.used, maxAttempts),
      }));
      const tokens = new Map(rows.map((r) => [r.id, r.claim_token]));
      const started = new Map(rows.map((r) => [r.id, r.locked_at]));
      // Fenced by the claim token and by the lease still being out, as read by this
      // statement: a post renewed or recorded meanwhile is left alone.
      const applied = await q<{ id: number }>(
        `WITH v AS (
           SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::timestamptz[], $7::int[])
                    AS v(id, status, error, token, worker_id, locked_at, attempts)
         ), done AS (
           UPDATE post_schedule s
              SET status = v.status, last_error = v.error, unconfirmed = true, worker_id = NULL, locked_at = NULL,
                  lease_expires_at = NULL, updated_at = now()
             FROM v
            WHERE s.id = v.id AND s.status = 'processing' AND s.claim_token = v.token AND s.lease_expires_at < now()
           RETURNING s.id
         ), attempt AS (
           INSERT INTO post_attempts (post_id, attempt, worker_id, started_at, finished_at, outcome, reason, error)
           SELECT v.id, v.attempts, v.worker_id, v.locked_at, now(), 'expired', 'lease-expired', v.error FROM done JOIN v ON v.id = done.id
         )
         SELECT id FROM done`,
        [
          recovered.map((r) => r.id),
          recovered.map((r) => r.status),
          recovered.map((r) => leaseExpiredMessage(r.workerId, r.attempts, r.status === 'unknown')),
          recovered.map((r) => tokens.get(r.id) ?? 0),
          recovered.map((r) => r.workerId),
          recovered.map((r) => started.get(r.id)?.toISOString() ?? null),
          recovered.map((r) => r.attempts),
        ],
      );
      const ids = new Set(applied.map((r) => r.id));
      return recovered.filter((r) => ids.has(r.id));
    },

    async renewLeases(workerId, held, leaseMs) {
      if (held.length === 0) return [];
      const rows = await q<{ id: number }>(
        `UPDATE post_schedule s SET lease_expires_at = now() + $4 * interval '1 millisecond'
           FROM unnest($2::bigint[], $3::bigint[]) AS v(id, token)
          WHERE s.id = v.id AND s.status = 'processing' AND s.worker_id = $1 AND s.claim_token = v.token
         RETURNING s.id`,
        [workerId, held.map((h) => h.postId), held.map((h) => h.token), leaseMs],
      );
      return rows.map((r) => r.id);
    },

    async reconcile(workerId, ids) {
      const rows = await q<{ id: number; status: PostStatus; worker_id: string | null; claim_token: number }>(
        `SELECT id, status, worker_id, claim_token FROM post_schedule WHERE status = 'processing' AND worker_id = $1
         UNION
         SELECT id, status, worker_id, claim_token FROM post_schedule WHERE id = ANY($2::bigint[])`,
        [workerId, ids],
      );
      return rows.map((r): HeldPost => ({ id: r.id, status: r.status, workerId: r.worker_id, token: r.claim_token }));
    },

    async requeue(ids: readonly number[] | 'allFailed') {
      const set = `SET status = '${TRANSITIONS.requeue.to}', run_at = now(), attempts_base = attempts, unconfirmed = false, worker_id = NULL,
                       locked_at = NULL, lease_expires_at = NULL, updated_at = now()`;
      const rows =
        ids === 'allFailed'
          ? await q<{ id: number }>(`UPDATE post_schedule ${set} WHERE status = 'failed' RETURNING id`)
          : await q<{ id: number }>(
              `UPDATE post_schedule ${set} WHERE id = ANY($1::bigint[]) AND ${whereFrom('requeue')} RETURNING id`,
              [ids],
            );
      return rows.map((r) => r.id).sort((a, b) => a - b);
    },

    async confirmPublished(ids: readonly number[]) {
      const rows = await q<{ id: number }>(
        `UPDATE post_schedule SET status = '${TRANSITIONS.confirm.to}', published_at = now(), last_error = NULL, updated_at = now()
          WHERE id = ANY($1::bigint[]) AND ${whereFrom('confirm')} RETURNING id`,
        [ids],
      );
      return rows.map((r) => r.id).sort((a, b) => a - b);
    },

    async cancel(id: number) {
      // One statement: `before` reads the status the update sees (same snapshot).
      const [row] = await q<{ status: PostStatus | null; cancelled: number }>(
        `WITH before AS (SELECT status FROM post_schedule WHERE id = $1),
              done AS (
                UPDATE post_schedule SET status = '${TRANSITIONS.cancel.to}', updated_at = now()
                 WHERE id = $1 AND ${whereFrom('cancel')} RETURNING id)
         SELECT (SELECT status FROM before) AS status, (SELECT count(*) FROM done) AS cancelled`,
        [id],
      );
      if (row?.status == null) return { cancelled: false, status: null };
      return { cancelled: row.cancelled > 0, status: row.status };
    },
  };
}
