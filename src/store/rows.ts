/* eslint-disable @typescript-eslint/no-unnecessary-type-conversion --
   the drivers return ids and counts as numbers or as strings (int8) depending on the
   dialect and its settings; Number() makes them numbers whatever the row type says */
import { TRANSITIONS } from '../states.ts';
import type { AttemptReason } from '../reasons.ts';
import { ON_UNKNOWN, type Channel, type ClaimedPost, type CycleRecord, type CycleState, type OnUnknown, type Post, type PostPart, type Outcome, type PostStatus, type PublishedPart } from '../types.ts';

/** Row shapes shared by the dialects, and their mapping to domain objects. */

export type TimeValue = Date | number | string | null;

export function toDate(value: TimeValue): Date | null {
  if (value === null) return null;
  return value instanceof Date ? value : new Date(value);
}

export function required(value: TimeValue, column: string): Date {
  const d = toDate(value);
  if (d === null) throw new Error(`column ${column} is unexpectedly null`);
  return d;
}

export function parseSettings(value: unknown): Record<string, unknown> {
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  if (typeof value !== 'string') return {};
  try {
    const parsed: unknown = JSON.parse(value);
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** A JSON column as the driver hands it: text (SQLite) or already parsed (PostgreSQL jsonb). */
function json(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  try {
    return JSON.parse(value) as unknown;
  } catch {
    return null;
  }
}

/**
 * A post's parts from its content row: `parts` when the content is more than one text,
 * else one part of `text` without images. Written only by schedulePosts, so its shape is
 * trusted past a check that it is a non-empty array.
 */
export function partsFrom(text: string, parts: unknown): PostPart[] {
  const parsed = json(parts);
  if (Array.isArray(parsed) && parsed.length > 0) return parsed as PostPart[];
  return [{ text, images: [] }];
}

/** What schedulePosts stores in `post_details.parts`: null for one part without images. */
export function partsColumn(post: { readonly text: string; readonly parts?: readonly PostPart[] }): string | null {
  const parts = post.parts;
  if (parts === undefined || parts.length === 0) return null;
  if (parts.length === 1 && parts[0]?.images.length === 0 && parts[0].text === post.text) return null;
  return JSON.stringify(parts.map((p) => ({ text: p.text, images: p.images.map((i) => ({ source: i.source, alt: i.alt })) })));
}

export function publishedPartsFrom(value: unknown): PublishedPart[] {
  const parsed = json(value);
  return Array.isArray(parsed) ? (parsed as PublishedPart[]) : [];
}

/** One published part as recorded (replyRef only when there is one). */
export function publishedPartColumn(part: PublishedPart): string {
  return JSON.stringify({
    externalId: part.externalId,
    externalUrl: part.externalUrl,
    ...(part.replyRef === undefined ? {} : { replyRef: part.replyRef }),
  });
}

export interface ChannelRow {
  id: number;
  name: string;
  platform: string;
  settings: unknown;
  enabled: number | boolean;
  on_unknown: string;
  credentials: string | null;
  attention: string | null;
  created_at: TimeValue;
  /** an operator's pause (absent from claim rows: a paused channel's posts are not claimed) */
  paused_at?: TimeValue;
  /** a network's pause (a 429): no send before it */
  paused_until?: TimeValue;
}

/** A policy read from the database; anything unexpected is treated as the safe one, hold. */
function onUnknownFrom(value: string | null): OnUnknown {
  return (ON_UNKNOWN as readonly (string | null)[]).includes(value) ? (value as OnUnknown) : 'hold';
}

const truthy = (value: number | boolean | null): boolean => value === true || value === 1;

export function channelFromRow(row: ChannelRow): Channel {
  return {
    id: Number(row.id),
    name: row.name,
    platform: row.platform,
    settings: parseSettings(row.settings),
    enabled: truthy(row.enabled),
    onUnknown: onUnknownFrom(row.on_unknown),
    credentials: row.credentials,
    attention: row.attention,
    createdAt: required(row.created_at, 'channels.created_at'),
    pausedAt: toDate(row.paused_at ?? null),
    ...(row.paused_until === undefined ? {} : { rateLimitedUntil: toDate(row.paused_until) }),
  };
}

export interface PostRow {
  id: number;
  post_detail_id: number;
  channel_id: number;
  created_at?: TimeValue;
  updated_at?: TimeValue;
  text: string | null;
  run_at: TimeValue;
  status: PostStatus;
  attempts: number;
  worker_id: string | null;
  locked_at: TimeValue;
  lease_expires_at: TimeValue;
  last_error: string | null;
  published_at: TimeValue;
  external_id: string | null;
  external_url: string | null;
  idempotency_key: string;
  unconfirmed: number | boolean;
  scheduled_at: TimeValue;
  claim_token: number;
  attempts_base: number;
  parts: unknown;
  published_parts: unknown;
  schedule_key?: string | null;
  channel_name?: string | null;
}

export function postFromRow(row: PostRow): Post {
  return {
    id: Number(row.id),
    postDetailId: Number(row.post_detail_id),
    channelId: Number(row.channel_id),
    text: row.text ?? '',
    runAt: required(row.run_at, 'post_schedule.run_at'),
    status: row.status,
    attempts: Number(row.attempts),
    workerId: row.worker_id,
    lockedAt: toDate(row.locked_at),
    leaseExpiresAt: toDate(row.lease_expires_at),
    lastError: row.last_error,
    publishedAt: toDate(row.published_at),
    externalId: row.external_id,
    externalUrl: row.external_url,
    idempotencyKey: row.idempotency_key,
    unconfirmed: truthy(row.unconfirmed),
    scheduledAt: toDate(row.scheduled_at) ?? required(row.run_at, 'post_schedule.run_at'),
    claimToken: Number(row.claim_token),
    attemptsBase: Number(row.attempts_base),
    parts: partsFrom(row.text ?? '', row.parts),
    publishedParts: publishedPartsFrom(row.published_parts),
    scheduleKey: row.schedule_key ?? null,
    channelName: row.channel_name ?? null,
    ...(row.created_at == null ? {} : { createdAt: required(row.created_at, 'post_schedule.created_at') }),
    ...(row.updated_at == null ? {} : { updatedAt: required(row.updated_at, 'post_schedule.updated_at') }),
  };
}

/**
 * A claimed post's row: its columns, its content (d.text, d.parts) and its channel's id
 * (ch_id). PostgreSQL and MySQL join the channel's columns too (ClaimChannelColumns), in
 * the same round trip; SQLite reads the batch's channels once (its SQL.claimedChannels),
 * not once per post.
 */
export interface ClaimRow {
  id: number;
  run_at: TimeValue;
  scheduled_at: TimeValue;
  attempts: number;
  attempts_base: number;
  claim_token: number;
  idempotency_key: string;
  unconfirmed: number | boolean;
  text: string | null;
  parts: unknown;
  published_parts: unknown;
  ch_id: number | null;
}

/** A claimed post's channel columns, when joined to its row (ch_name null: no such channel, or another row carries them). */
export interface ClaimChannelColumns {
  ch_name: string | null;
  ch_platform: string | null;
  ch_settings: unknown;
  ch_enabled: number | boolean | null;
  ch_on_unknown: string | null;
  ch_credentials: string | null;
  ch_attention: string | null;
  ch_created_at: TimeValue;
}

/**
 * Claimed posts from their rows. Each channel is made once per batch and shared by its
 * posts (a batch of 200 posts of one channel parses its settings once): from `channels`
 * when given (rows of CHANNEL_COLUMNS), else from the row of each channel that carries
 * ClaimChannelColumns (any one of its posts' rows; the others may have them null). A post
 * whose channel is gone has none (the worker fails it).
 */
export function claimedFromRows(rows: readonly (ClaimRow & Partial<ClaimChannelColumns>)[], channels?: readonly ChannelRow[]): ClaimedPost[] {
  const byId = new Map<number, Channel>();
  if (channels !== undefined) {
    for (const c of channels) byId.set(Number(c.id), channelFromRow(c));
  } else {
    for (const row of rows) {
      if (row.ch_id === null || row.ch_name == null || row.ch_platform == null || byId.has(Number(row.ch_id))) continue;
      byId.set(
        Number(row.ch_id),
        channelFromRow({
          id: row.ch_id,
          name: row.ch_name,
          platform: row.ch_platform,
          settings: row.ch_settings,
          enabled: row.ch_enabled ?? false,
          on_unknown: row.ch_on_unknown ?? 'hold',
          credentials: row.ch_credentials ?? null,
          attention: row.ch_attention ?? null,
          created_at: row.ch_created_at ?? null,
        }),
      );
    }
  }
  return rows.map(
    (row): ClaimedPost => ({
      id: Number(row.id),
      runAt: required(row.run_at, 'post_schedule.run_at'),
      scheduledAt: toDate(row.scheduled_at) ?? required(row.run_at, 'post_schedule.run_at'),
      attempt: Number(row.attempts),
      attemptsBase: Number(row.attempts_base),
      token: Number(row.claim_token),
      idempotencyKey: row.idempotency_key,
      unconfirmed: truthy(row.unconfirmed),
      text: row.text,
      parts: row.text === null ? null : partsFrom(row.text, row.parts),
      publishedParts: publishedPartsFrom(row.published_parts),
      channel: (row.ch_id === null ? undefined : byId.get(Number(row.ch_id))) ?? null,
    }),
  );
}

export interface CycleRow {
  id: number;
  host: string;
  /** 1 while the host's cycle lock, taken before this cycle started, is still held */
  lock_held: number | boolean | null;
  started_at: TimeValue;
  finished_at: TimeValue;
  pending: number | null;
  recovered: number | null;
  workers_spawned: number | null;
  workers_succeeded: number | null;
  workers_failed: number | null;
  exit_code: number | null;
  duration_ms: number | null;
}

export function cycleFromRow(row: CycleRow): CycleRecord {
  const finished = row.finished_at !== null;
  const state: CycleState = finished ? 'finished' : truthy(row.lock_held) ? 'running' : 'dead';
  return {
    id: Number(row.id),
    host: row.host,
    state,
    startedAt: required(row.started_at, 'cycles.started_at'),
    finishedAt: toDate(row.finished_at),
    pending: Number(row.pending ?? 0),
    recovered: Number(row.recovered ?? 0),
    workersSpawned: Number(row.workers_spawned ?? 0),
    workersSucceeded: Number(row.workers_succeeded ?? 0),
    workersFailed: Number(row.workers_failed ?? 0),
    exitCode: row.exit_code === null ? null : Number(row.exit_code),
    durationMs: row.duration_ms === null ? null : Number(row.duration_ms),
  };
}

/** A claimed post's own columns (post_schedule as s), with its channel's id as ch_id. */
export const CLAIM_POST_COLUMNS = `
  s.id, s.run_at, s.scheduled_at, s.attempts, s.attempts_base, s.claim_token, s.idempotency_key, s.unconfirmed, s.published_parts,
  s.channel_id AS ch_id`;

/** The claimed posts' channel columns, joined (channels as ch): ClaimChannelColumns. */
export const CLAIM_CHANNEL_COLUMNS = `
  ch.name AS ch_name, ch.platform AS ch_platform, ch.settings AS ch_settings,
  ch.enabled AS ch_enabled, ch.on_unknown AS ch_on_unknown, ch.credentials AS ch_credentials, ch.attention AS ch_attention, ch.created_at AS ch_created_at`;

/** A channel's columns as channelFromRow reads them (channels, unaliased). */
export const CHANNEL_COLUMNS = 'id, name, platform, settings, enabled, on_unknown, credentials, attention, created_at';

/** The status each outcome kind leads to (the `to` of its transition). */
export const OUTCOME_STATUS = {
  published: TRANSITIONS.publish.to,
  retry: TRANSITIONS.retryLater.to,
  failed: TRANSITIONS.fail.to,
  unknown: TRANSITIONS.holdUnknown.to,
  released: TRANSITIONS.release.to,
} as const satisfies Record<string, PostStatus>;

/**
 * The post_attempts row an outcome makes: its outcome and reason (src/reasons.ts); null
 * for none (a release: nothing was tried). A retry that does not count against
 * MAX_ATTEMPTS (a rate limit, credentials) is recorded as `waited`, under the number of
 * the attempt that follows it.
 */
export function attemptRecord(o: Outcome): { outcome: string; reason: AttemptReason | null } | null {
  if (o.kind === 'released') return null;
  if (o.kind === 'published') return { outcome: 'published', reason: null };
  if (o.kind === 'retry' && o.uncounted === true) return { outcome: 'waited', reason: o.reason ?? 'other' };
  return { outcome: o.kind, reason: o.reason ?? 'other' };
}

/**
 * One outcome as a JSON object, for an exchange that takes its outcomes as one JSON
 * array (PostgreSQL: json_to_recordset; MySQL: JSON_TABLE): one parameter, cheaper to
 * send and to parse than an array per field. Keys whose value is null are left out (a
 * missing key reads as NULL on every server; a JSON null does not on every MySQL).
 */
export function outcomeJson(o: Outcome): Record<string, string | number> {
  const row: Record<string, string | number> = { id: o.postId, token: o.token, kind: o.kind, status: OUTCOME_STATUS[o.kind] };
  if (o.kind === 'failed' || o.kind === 'retry' || o.kind === 'unknown') row['error'] = o.error;
  if (o.kind === 'published' && o.externalId !== null) row['externalId'] = o.externalId;
  if (o.kind === 'published' && o.externalUrl !== null) row['externalUrl'] = o.externalUrl;
  row['delayMs'] = o.kind === 'retry' ? Math.round(o.delayMs) : 0;
  row['maybeSent'] = o.kind === 'retry' && o.unconfirmed ? 1 : 0;
  row['uncounted'] = o.kind === 'retry' && o.uncounted === true ? 1 : 0;
  const attempt = attemptRecord(o);
  if (attempt !== null) row['attemptOutcome'] = attempt.outcome;
  // the attempt started this long after its claim (claimed ahead)
  if (o.waitedMs !== undefined && o.waitedMs > 0) row['waitedMs'] = Math.round(o.waitedMs);
  if (attempt?.reason != null) row['reason'] = attempt.reason;
  return row;
}

/**
 * The last cycles with their state: an unfinished one is running while its host's
 * cycle lock, taken before it started, is still held and unexpired (`now` is the
 * dialect's clock expression).
 */
export function cyclesQuery(now: string, limit: string): string {
  return `SELECT c.*, (c.finished_at IS NULL AND EXISTS (
            SELECT 1 FROM cycle_locks l WHERE l.host = c.host AND l.locked_at <= c.started_at AND l.expires_at > ${now}
          )) AS lock_held
     FROM cycles c ORDER BY c.id DESC LIMIT ${limit}`;
}

/** Posts held as unknown, oldest first, for `status` (same text in both dialects). */
export const UNKNOWN_POSTS = `SELECT s.id, ch.name AS channel, s.last_error, s.attempts FROM post_schedule s
   LEFT JOIN channels ch ON ch.id = s.channel_id
  WHERE s.status = 'unknown' ORDER BY s.updated_at, s.id LIMIT 20`;
export interface UnknownRow {
  id: number;
  channel: string | null;
  last_error: string | null;
  attempts: number;
}

