import type { PostStatus } from './types.ts';

/**
 * Every move a post can make between states, in one place. Each store implements
 * exactly these transitions, one method each, and builds its `WHERE status ...`
 * guards from this table, so "who may move a post from A to B" has one answer.
 */
export const TRANSITIONS = {
  /**
   * a worker takes due posts it starts at once (worker_id, locked_at, lease set;
   * attempts + 1): the attempt is on record before anything is sent
   */
  claim: { from: ['pending'], to: 'processing' },
  /** the channel accepted the post */
  publish: { from: ['processing'], to: 'published' },
  /**
   * the channel accepted the post, and the answer came after recovery had taken the
   * claim back (lease expired) but before any new claim (same claim token): a
   * confirmed outcome is never thrown away
   */
  publishLate: { from: ['pending', 'unknown'], to: 'published' },
  /** a retryable failure: back to pending with run_at pushed out by the backoff */
  retryLater: { from: ['processing'], to: 'pending' },
  /** a permanent failure, or MAX_ATTEMPTS reached with nothing delivered */
  fail: { from: ['processing'], to: 'failed' },
  /** the attempt may have been delivered and the channel holds such posts (or attempts ran out) */
  holdUnknown: { from: ['processing'], to: 'unknown' },
  /** claimed but not started when the worker stopped: handed back at once, attempt not counted */
  release: { from: ['processing'], to: 'pending' },
  /**
   * the lease ran out: the worker died, maybe after sending. Channels with `retry` or
   * `check` get the post back (unconfirmed) on the next cycle ...
   */
  recover: { from: ['processing'], to: 'pending' },
  /** ... channels with `hold`, and posts on their last allowed attempt, keep it as unknown */
  recoverUnknown: { from: ['processing'], to: 'unknown' },
  /** an operator puts a failed or unknown post back (`retry`): it will be sent again; attempts keep counting */
  requeue: { from: ['failed', 'unknown'], to: 'pending' },
  /** an operator says an unknown post did go out (`mark-published`) */
  confirm: { from: ['unknown'], to: 'published' },
  /** an operator withdraws a post that has not gone out, or gives up on an unknown one (`cancel`) */
  cancel: { from: ['pending', 'unknown'], to: 'cancelled' },
} as const satisfies Record<string, { from: readonly PostStatus[]; to: PostStatus }>;

export type TransitionName = keyof typeof TRANSITIONS;

/**
 * The SQL guard for a transition's source states: `status = 'a'` for one state (so
 * that partial indexes on `status = 'pending'` serve it; SQLite does not match them
 * with a one-element IN), `status IN ('a', 'b')` for several. Values are constants,
 * never input.
 */
export function whereFrom(name: TransitionName, column = 'status'): string {
  const from = TRANSITIONS[name].from as readonly PostStatus[];
  return from.length === 1 ? `${column} = '${from[0] ?? ''}'` : `${column} IN (${from.map((s) => `'${s}'`).join(', ')})`;
}
