import type { ClaimedPost, HeldPost, NewPost, Outcome, Post, PostStatus, PublishedPart, RecoveredPost } from '../../types.ts';

/**
 * The queue: posts scheduled, claimed by workers under a lease, their outcomes recorded
 * (fenced by the claim token), expired leases recovered, and an operator's requeue,
 * confirm and cancel. Every method that changes a post's status is one transition of
 * states.ts.
 */
export interface QueueStore {
  /** inserts posts (content and schedule) in one transaction; returns their ids in order */
  schedulePosts(posts: readonly NewPost[]): Promise<number[]>;
  /**
   * schedules one post under the caller's key (`schedule --key`, Idempotency-Key): when a
   * post already has that key (of any channel) nothing is written and its id comes back
   * with created = false. Two calls racing with one key make one post.
   */
  scheduleWithKey(post: NewPost, key: string): Promise<{ id: number; created: boolean }>;
  getPost(id: number): Promise<Post | null>;
  /**
   * posts pending with run_at <= the database's now (served by the due index); with
   * `aheadMs`, also those falling due within that many ms from now (`daemon --precise`
   * sizes its workers before the due time)
   */
  countDue(aheadMs?: number): Promise<number>;
  /**
   * The earliest run_at of a pending post of a channel not paused, on the database's
   * clock (served by the due index; past when posts are already due), with how far it is
   * from the database's now (`inMs`, negative when already due): `daemon --precise`
   * sleeps that long, never comparing run_at to its own clock. null when no post is
   * pending. With `after`, the earliest later than it (the daemon has handed out the due
   * times up to `after` already).
   */
  nextDue(after?: Date): Promise<NextDue | null>;
  /**
   * claim: moves up to `limit` due posts, oldest run_at first, to processing for
   * `workerId` in one atomic statement, with attempts + 1 and a lease of `leaseMs`.
   * Two concurrent claims never return the same post. A worker claims only what it
   * starts at once, so the claim is the record of the attempt, made before the call.
   */
  claim(workerId: string, limit: number, leaseMs: number): Promise<ClaimedPost[]>;
  /**
   * publish / retryLater / fail / holdUnknown / release: records outcomes in one transaction. Each update is
   * fenced: it applies only while the post is still processing under this worker and
   * claim token (publishLate: a `published` also applies to a post that recovery took
   * back, as long as nobody claimed it since: same token). Returns the ids applied.
   */
  recordOutcomes(workerId: string, outcomes: readonly Outcome[]): Promise<number[]>;
  /**
   * recordOutcomes and claim in one transaction and one round trip: what a busy
   * worker does each time publishes settle. A post that the outcomes return to
   * pending is not claimed again by the same call.
   */
  exchange(workerId: string, outcomes: readonly Outcome[], limit: number, leaseMs: number, claim?: ClaimOptions): Promise<Exchange>;
  /**
   * recordPart: one part of a thread went out; its external id is put on record at once,
   * before the next part is sent. Fenced like an outcome (still processing under this
   * worker and claim token), and applied only when `index` is the number of parts
   * already recorded: a part is appended, never rewritten. False when not applied.
   * Not a transition: the post stays processing.
   */
  recordPart(workerId: string, postId: number, token: number, index: number, part: PublishedPart): Promise<boolean>;
  /**
   * recover / recoverUnknown: a post whose lease expired may have been sent. It goes
   * back to pending, unconfirmed, when its channel's policy is retry or check and it had
   * fewer than `maxAttempts` attempts; otherwise (hold, no channel, attempts used up)
   * it is held as unknown.
   */
  recoverExpired(maxAttempts: number): Promise<RecoveredPost[]>;
  /**
   * heartbeat: extends to now + `leaseMs` the leases of posts this worker still holds
   * (fenced by worker and claim token). Returns the ids renewed; a missing one was taken away.
   */
  renewLeases(workerId: string, held: readonly { postId: number; token: number }[], leaseMs: number): Promise<number[]>;
  /**
   * After a round trip whose answer was lost (it may have committed): the posts still
   * processing under this worker, and the posts `ids` whatever their state, as the
   * database has them now. The worker then releases claims it never saw and drops
   * outcomes that were in fact recorded.
   */
  reconcile(workerId: string, ids: readonly number[]): Promise<HeldPost[]>;
  /**
   * requeue: failed or unknown posts back to pending, due now; attempts keep counting,
   * and MAX_ATTEMPTS counts afresh from here (attempts_base = attempts).
   * `allFailed` = every failed post (unknown ones are only ever requeued by id). The operator
   * chose to send again: the post is no longer unconfirmed, so it is sent without a check.
   */
  requeue(ids: readonly number[] | 'allFailed'): Promise<number[]>;
  /** confirm: unknown posts to published (an operator saw them on the platform). */
  confirmPublished(ids: readonly number[]): Promise<number[]>;
  /** cancel: a pending or unknown post to cancelled. Returns the status it had (null when not found). */
  cancel(id: number): Promise<{ cancelled: boolean; status: PostStatus | null }>;
}

export interface ClaimOptions {
  /**
   * The worker holds a GLOBAL_MAX_WORKERS slot in its name: it claims only while that
   * slot is still its own and unexpired, and the claim extends the slot as long as the
   * leases it takes (so no claim outlives the slot, and a worker resumed after its slot
   * was taken claims nothing).
   */
  readonly slot?: boolean;
  /**
   * Also the posts due within this many ms of the database's now (0 by default): a resident
   * claims just before a due time and holds each post until its run_at, so that the claim's
   * round trip is not spent after it (src/workers/resident.ts).
   */
  readonly aheadMs?: number;
}

export interface Exchange {
  /** ids of the outcomes that were applied (the rest were fenced out) */
  readonly applied: number[];
  readonly claimed: ClaimedPost[];
}

/** The next due time (Store.nextDue): run_at, and run_at less the database's now, in ms. */
export interface NextDue {
  readonly runAt: Date;
  readonly inMs: number;
}

/** U+0000, and half of a surrogate pair (an emoji cut in two by a length limit) */
// eslint-disable-next-line no-control-regex -- U+0000 is what is looked for
const UNSTORABLE = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** `text` with U+FFFD for what no database here stores as it is. */
function storableText(text: string): string {
  return text.replace(UNSTORABLE, '\uFFFD');
}

/** whether `text` has any (search: no copy, and the regex's lastIndex is not used) */
const unstorable = (text: string | null): boolean => text !== null && text.search(UNSTORABLE) !== -1;

/**
 * Outcomes as every database can store them: PostgreSQL's text holds no U+0000, and its
 * JSON no half of a surrogate pair (a publisher's message or an id cut at a length
 * limit); one such value made the statement fail whole, with every outcome and the claim
 * beside it, again at each retry. Errors, external ids and URLs are stored with U+FFFD in
 * their place, on every database alike.
 */
function storable(outcomes: readonly Outcome[]): readonly Outcome[] {
  const needed = (o: Outcome): boolean => ('error' in o ? unstorable(o.error) : o.kind === 'published' && (unstorable(o.externalId) || unstorable(o.externalUrl)));
  if (!outcomes.some(needed)) return outcomes;
  return outcomes.map((o) => {
    if (!needed(o)) return o;
    if ('error' in o) return { ...o, error: storableText(o.error) };
    if (o.kind !== 'published') return o;
    return { ...o, externalId: o.externalId === null ? null : storableText(o.externalId), externalUrl: o.externalUrl === null ? null : storableText(o.externalUrl) };
  });
}

/**
 * claim, recordOutcomes and exchange from a dialect's one exchange: a claim is an
 * exchange without outcomes, recording outcomes one that claims nothing.
 */
export function exchangeCalls(exchange: QueueStore['exchange']): Pick<QueueStore, 'claim' | 'recordOutcomes' | 'exchange'> {
  return {
    claim: async (workerId, limit, leaseMs) => (await exchange(workerId, [], limit, leaseMs)).claimed,
    recordOutcomes: async (workerId, outcomes) => (await exchange(workerId, storable(outcomes), 0, 0)).applied,
    exchange: (workerId, outcomes, limit, leaseMs, claim) => exchange(workerId, storable(outcomes), limit, leaseMs, claim),
  };
}
