/* eslint-disable @typescript-eslint/no-unnecessary-type-conversion --
   the drivers return ids and counts as numbers or as strings (int8), whatever the row type says */
import { LIST_TEXT, type PostAttempt, type PostListItem, type PostQuery } from './store.ts';
import { toDate, type TimeValue } from './rows.ts';

/**
 * The statement of `posts list` for one query, in either dialect: only the filters it
 * asks for are in it, so that each shape gets its own plan (pending posts: the due index;
 * SQLite also has (run_at, id) and (channel_id, run_at, id) indexes; PostgreSQL sorts the
 * matches of other shapes: see migration 8). Pagination is by keyset on (run_at, id).
 */
export function listPostsQuery(
  query: PostQuery,
  /** the placeholder of the nth value ($n or ?) */
  param: (n: number) => string,
  /** a time as the dialect stores it */
  time: (d: Date) => unknown,
  /** the first `n` characters of a text column */
  left: (column: string, n: number) => string,
): { text: string; values: unknown[] } {
  const values: unknown[] = [];
  const p = (value: unknown): string => {
    values.push(value);
    return param(values.length);
  };
  const where: string[] = [];
  if (query.statuses !== undefined && query.statuses.length > 0) {
    where.push(query.statuses.length === 1 ? `s.status = ${p(query.statuses[0])}` : `s.status IN (${query.statuses.map((s) => p(s)).join(', ')})`);
  }
  if (query.channelId !== undefined) where.push(`s.channel_id = ${p(query.channelId)}`);
  if (query.from !== undefined) where.push(`s.run_at >= ${p(time(query.from))}`);
  if (query.to !== undefined) where.push(`s.run_at < ${p(time(query.to))}`);
  const cmp = query.order === 'next' ? '>' : '<';
  if (query.after !== undefined) {
    const at = time(query.after.runAt);
    where.push(`(s.run_at ${cmp} ${p(at)} OR s.run_at = ${p(at)} AND s.id ${cmp} ${p(query.after.id)})`);
  }
  const dir = query.order === 'next' ? 'ASC' : 'DESC';
  // the page first, then its content and channel: a join never runs over more than the page
  const text = `SELECT s.id, s.status, s.run_at, s.attempts, s.external_url, s.last_error, ch.name AS channel, ${left('d.text', LIST_TEXT)} AS text
      FROM (SELECT s.id, s.status, s.run_at, s.attempts, s.external_url, s.last_error, s.channel_id, s.post_detail_id
              FROM post_schedule s
             ${where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`}
             ORDER BY s.run_at ${dir}, s.id ${dir}
             LIMIT ${p(query.limit)}) AS s
      LEFT JOIN channels ch ON ch.id = s.channel_id
      LEFT JOIN post_details d ON d.id = s.post_detail_id
     ORDER BY s.run_at ${dir}, s.id ${dir}`;
  return { text, values };
}

export interface ListRow {
  id: number;
  status: PostListItem['status'];
  run_at: TimeValue;
  attempts: number;
  external_url: string | null;
  last_error: string | null;
  channel: string | null;
  text: string | null;
}

export function listItemFromRow(row: ListRow): PostListItem {
  return {
    id: Number(row.id),
    status: row.status,
    channel: row.channel,
    runAt: toDate(row.run_at) ?? new Date(0),
    attempts: Number(row.attempts),
    text: row.text ?? '',
    externalUrl: row.external_url,
    lastError: row.last_error,
  };
}

export interface AttemptRow {
  attempt: number;
  worker_id: string | null;
  started_at: TimeValue;
  finished_at: TimeValue;
  outcome: string;
  reason: string | null;
  error: string | null;
  external_id: string | null;
  external_url: string | null;
}

export const ATTEMPTS_QUERY = (param: string): string =>
  `SELECT attempt, worker_id, started_at, finished_at, outcome, reason, error, external_id, external_url
     FROM post_attempts WHERE post_id = ${param} ORDER BY attempt, finished_at`;

export function attemptFromRow(row: AttemptRow): PostAttempt {
  return {
    attempt: Number(row.attempt),
    workerId: row.worker_id,
    startedAt: toDate(row.started_at),
    finishedAt: toDate(row.finished_at) ?? new Date(0),
    outcome: row.outcome,
    reason: row.reason,
    error: row.error,
    externalId: row.external_id,
    externalUrl: row.external_url,
  };
}

