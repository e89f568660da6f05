import { setTimeout as sleep } from 'node:timers/promises';
import { backoffDelay } from '../backoff.ts';
import type { Config } from '../config.ts';
import { errorMessage, withFields, type Logger } from '../log.ts';
import {
  CredentialsRejectedError,
  PermanentPublishError,
  RetryablePublishError,
  SettingsError,
  type LoadedImage,
  type MediaLimits,
  type Publisher,
  type PublishRequest,
} from '../publishers/publisher.ts';
import type { RateGate } from '../ratelimits/gate.ts';
import { contentProblem, textOnlyProblem, type ContentProblem, type ContentRules } from '../content/check.ts';
import { reasonOf, type AttemptReason } from '../reasons.ts';
import type { Channel, ClaimedPost, Outcome, PostImage, PublishedPart } from '../types.ts';

/** How many times a published part of a thread is tried to be put on record, and the pause between tries. */
const RECORD_PART_TRIES = 3;
const RECORD_PART_RETRY_MS = 250;

/** The shortest pause a network's rate limit (a 429) puts its channel in. */
const MIN_RATE_PAUSE_MS = 1_000;

/** The longest a server's Retry-After is honoured. */
const MAX_RETRY_AFTER_MS = 24 * 60 * 60 * 1000;

/**
 * The outcome rules for one claimed post: check what can be checked before sending,
 * publish, and turn what happened into the outcome the worker records.
 *
 * - A post that cannot be sent as it is (no channel, disabled channel, no content,
 *   unknown platform, bad settings, a 4xx) fails alone, with its reason.
 * - A failure that may pass is retried with backoff, up to MAX_ATTEMPTS.
 * - An attempt that may have been delivered (sent, then no answer) has an unknown
 *   outcome, and the channel's policy decides: `retry` sends it again with the same
 *   idempotency key; `check` looks it up first next time; `hold` keeps it as unknown.
 *   A post that may have been delivered is never recorded as failed (it is held),
 *   except on a `retry` channel, where sending it again is safe.
 */
export interface PublishDeps {
  readonly config: Config;
  readonly log: Logger;
  /** the publisher of the channel's platform (workers/publishers.ts); null for a platform nobody knows */
  publisherFor(channel: Channel): Promise<Publisher | null>;
  /** aborted when the worker must stop sending */
  readonly signal: AbortSignal;
  /** opens a channel's sealed credentials (throws CredentialsError naming the problem) */
  openCredentials(sealed: string): Record<string, unknown>;
  /** seals and stores a channel's refreshed credentials, unless they changed since `previous` was read */
  saveCredentials(channelId: number, credentials: Record<string, unknown>, previous: string | null): Promise<void>;
  /** marks (reason) or clears (null) that a channel needs an operator */
  setAttention(channelId: number, reason: string | null): Promise<void>;
  /** the channels' rate limits, shared by every worker (src/ratelimits); absent: sends are not limited */
  readonly rateGate?: RateGate;
  /** what the channel takes (content/rules.ts); null for a platform nobody knows */
  contentRules(channel: Channel): Promise<ContentRules | null>;
  /** where `media:` image sources are (MEDIA_DIR); absent: not set */
  readonly mediaDir?: string | null;
  /** reads one image of a part about to be sent (content/images.ts) */
  loadImage(image: PostImage, limits: MediaLimits, channel: Channel): Promise<LoadedImage>;
  /** puts one published part of a thread on record (fenced: false when the claim is no longer ours) */
  recordPart(postId: number, token: number, index: number, part: PublishedPart): Promise<boolean>;
  /**
   * whether another part of a thread may start now: false once the worker is stopping or
   * past its last moment to start a publish (the rest then waits for the next attempt,
   * rather than be cut off mid-send); absent: always
   */
  mayStartPart?(): boolean;
  /** called as each part is handed to its publisher (a worker's first one applies its V8 flags, see v8-settings.ts) */
  sending?(): void;
}

/** A post whose channel's credentials were refused waits at least this long before it is tried again. */
const CREDENTIALS_RETRY_MS = 15 * 60 * 1000;

/**
 * On a `retry` channel a post that may have been delivered is sent again within this,
 * whatever a server's Retry-After says: inside the windows in which networks remember an
 * idempotency key (Mastodon: about an hour), so the resend is recognised as a repeat.
 */
const MAYBE_OUT_RETRY_MAX_MS = 50 * 60 * 1000;

export async function publishPost(post: ClaimedPost, deps: PublishDeps): Promise<Outcome> {
  const { config } = deps;
  const base = { postId: post.id, token: post.token };
  // MAX_ATTEMPTS counts from the latest operator retry; `attempt` counts over the post's life
  const used = post.attempt - post.attemptsBase;

  const channel = post.channel;
  const startedAt = Date.now();
  // every line about this post carries its id, channel and attempt (JSON keys; text
  // unchanged); made at its first line, as most posts are published without one
  let scoped: Logger | null = null;
  const lines = (): Logger => (scoped ??= withFields(deps.log, { postId: post.id, channel: channel?.name ?? null, attempt: post.attempt }));
  const log = {
    info: (message: string) => lines().info(message),
    warn: (message: string) => lines().warn(message),
    /** a line about how this attempt ended, with the outcome and how long the attempt took */
    outcome: (level: 'info' | 'warn', outcome: string, message: string) => lines()[level](message, { outcome, durationMs: Date.now() - startedAt }),
  };
  // An earlier attempt may have been delivered, until a lookup says it was not.
  let mayBeOut = post.unconfirmed;
  // On a `retry` channel a resend is safe by the channel's own declaration (the platform
  // honours the idempotency key), so such a post may be recorded failed and retried.
  const holdsMaybeOut = () => mayBeOut && channel?.onUnknown !== 'retry';
  const holdUnknown = (reason: string, why: AttemptReason): Outcome => {
    log.outcome('warn', 'unknown', `Post ${post.id} outcome unknown, held for an operator: ${reason}`);
    return { kind: 'unknown', ...base, error: `outcome unknown: ${reason}`, reason: why };
  };
  /** A post that may already be out is never recorded as failed: it is held instead. */
  const fail = (reason: string, why: AttemptReason): Outcome => {
    if (holdsMaybeOut()) return holdUnknown(`an earlier attempt may have been delivered, and now: ${reason}`, why);
    log.outcome('warn', 'failed', `Post ${post.id} failed: ${reason}`);
    return { kind: 'failed', ...base, error: reason, reason: why };
  };
  /** `maybeSent`: this attempt may have been delivered. */
  const retryOrGiveUp = (reason: string, retryAfterMs: number | null, maybeSent: boolean, why: AttemptReason): Outcome => {
    const unconfirmed = maybeSent || mayBeOut;
    if (used >= config.maxAttempts) {
      mayBeOut = unconfirmed;
      return fail(`gave up after ${used} attempts: ${reason}`, why);
    }
    // the server's Retry-After is honoured up to a day, so no post is parked for years
    let delayMs = Math.max(backoffDelay(used, config.retryBaseMs, config.retryMaxMs), Math.min(retryAfterMs ?? 0, MAX_RETRY_AFTER_MS));
    if (unconfirmed && channel?.onUnknown === 'retry') delayMs = Math.min(delayMs, MAYBE_OUT_RETRY_MAX_MS);
    log.outcome('warn', 'retry', `Post ${post.id} will retry in ${Math.round(delayMs / 1000)}s (attempt ${used}/${config.maxAttempts}): ${reason}`);
    return { kind: 'retry', ...base, error: reason, delayMs, unconfirmed, reason: why };
  };

  /**
   * The channel, not the post, must be fixed (credentials refused or unreadable): the
   * channel is marked for an operator, and the post waits without using up an attempt.
   */
  const waitForOperator = async (reason: string, why: 'auth' | 'credentials'): Promise<Outcome> => {
    log.outcome('warn', 'retry', `Post ${post.id} waits for an operator: ${reason}`);
    if (channel !== null) await deps.setAttention(channel.id, reason).catch(() => undefined);
    return { kind: 'retry', ...base, error: reason, delayMs: CREDENTIALS_RETRY_MS, unconfirmed: mayBeOut, uncounted: true, reason: why };
  };

  /** A rate limit (ours or the network's) delays the post: it waits without using up an attempt. */
  const rateDelayed = (reason: string, waitMs: number, why: 'rate-limited' | 'throttled'): Outcome => {
    // a post that may be out on a `retry` channel is resent while the network still
    // knows its key (it meets the limit again, at no cost): never later than that
    const delayMs = mayBeOut && channel?.onUnknown === 'retry' ? Math.min(waitMs, MAYBE_OUT_RETRY_MAX_MS) : waitMs;
    log.outcome('info', 'retry', `Post ${post.id} waits ${Math.ceil(delayMs / 1000)}s for its channel's rate limit: ${reason}`);
    return { kind: 'retry', ...base, error: reason, delayMs, unconfirmed: mayBeOut, uncounted: true, reason: why };
  };

  if (channel === null) return fail('its channel no longer exists', 'channel');
  if (!channel.enabled) return fail(`channel ${channel.name} is disabled`, 'channel');
  if (post.text === null || post.parts === null) return fail('its content (post_details row) is missing', 'content');
  const parts = post.parts;
  let publisher: Publisher | null;
  try {
    publisher = await deps.publisherFor(channel);
  } catch (e) {
    return retryOrGiveUp(`cannot load publisher for ${channel.platform}: ${errorMessage(e)}`, null, false, 'other');
  }
  if (publisher === null) return fail(`unknown platform "${channel.platform}" on channel ${channel.name}`, 'channel');

  // Content that breaks the channel's limits fails alone, for good (it should have been
  // refused when it was scheduled).
  let rules: ContentRules | null;
  try {
    rules = await deps.contentRules(channel);
  } catch (e) {
    if (e instanceof SettingsError || e instanceof PermanentPublishError) return fail(`channel ${channel.name}: ${e.message}`, 'channel');
    return retryOrGiveUp(`channel ${channel.name}: ${errorMessage(e)}`, null, false, 'other');
  }
  if (rules === null) return fail(`unknown platform "${channel.platform}" on channel ${channel.name}`, 'channel');
  // Only what is still to send is checked (a part already out stays out, whatever changed
  // since); a part that may be out is checked once its lookup says it is not.
  const contentRules = rules;
  const unsentFrom = Math.min(post.publishedParts.length, parts.length);
  const checkFrom = mayBeOut && channel.onUnknown !== 'retry' ? unsentFrom + 1 : unsentFrom;
  const unfitContent = (problem: ContentProblem | null): Outcome | null =>
    problem === null ? null : fail(`content does not fit channel ${channel.name}: ${problem.message}`, 'content');
  const contentFailure = async (from: number, only?: number): Promise<Outcome | null> =>
    unfitContent(await contentProblem(contentRules, parts, channel.settings, from, only, deps.mediaDir ?? null));
  // most posts (one part of text alone) are checked without waiting
  const quick = textOnlyProblem(contentRules, parts, channel.settings, checkFrom);
  const unfit = quick === undefined ? await contentFailure(checkFrom) : unfitContent(quick);
  if (unfit !== null) return unfit;
  const media = rules.media;

  // stopped before anything was sent: handed back, attempt not counted
  if (deps.signal.aborted) return { kind: 'released', ...base };

  let credentials: Record<string, unknown> | null = null;
  if (channel.credentials !== null) {
    try {
      credentials = deps.openCredentials(channel.credentials);
    } catch (e) {
      // a key problem of this installation, not of the post: it waits for the operator
      return waitForOperator(`channel ${channel.name}: ${errorMessage(e)}`, 'credentials');
    }
  }

  // A thread resumes after the parts already on record; each part replies to the one before.
  const count = parts.length;
  const done: PublishedPart[] = post.publishedParts.slice(0, count);
  /** the request of part `index` (its images are loaded just before it is sent) */
  const requestFor = (index: number): PublishRequest => {
    const root = done[0];
    const parent = done[index - 1];
    return {
      postId: post.id,
      attempt: post.attempt,
      text: parts[index]?.text ?? '',
      // the time it was scheduled for: what the platform is told, whatever retries did to run_at
      runAt: post.scheduledAt,
      idempotencyKey: index === 0 ? post.idempotencyKey : `${post.idempotencyKey}.${index}`,
      images: [],
      part: { index, count },
      replyTo: index === 0 || root === undefined || parent === undefined ? null : { root, parent },
      channel,
      credentials,
      saveCredentials: (fresh) => deps.saveCredentials(channel.id, fresh, channel.credentials),
      signal: deps.signal,
    };
  };
  /**
   * Puts a part that went out on record before the next one is sent (a thread only);
   * an outcome when the thread must stop, else null.
   */
  const keep = async (index: number, result: PublishedPart, label: string): Promise<Outcome | null> => {
    done.push(result);
    if (count === 1) return null;
    let kept = false;
    // the part is out: putting it on record is worth a few tries (else the next attempt
    // only knows it may be out, and a `hold` channel then holds the thread)
    for (let tryNo = 1; ; tryNo++) {
      try {
        kept = await deps.recordPart(post.id, post.token, index, result);
        break;
      } catch (e) {
        if (tryNo >= RECORD_PART_TRIES) {
          // out but not on record: the next attempt treats it as maybe delivered
          return retryOrGiveUp(`${label}published, but recording it failed: ${errorMessage(e)}`, null, true, 'other');
        }
        await sleep(RECORD_PART_RETRY_MS * tryNo);
      }
    }
    if (kept) return null;
    log.warn(`Post ${post.id}: ${label}published, but the claim is no longer this worker's: the rest is not sent`);
    return { kind: 'retry', ...base, error: `${label}published after the claim was lost`, delayMs: 0, unconfirmed: true, reason: 'lease-expired' };
  };

  const firstToSend = done.length;
  for (let index = firstToSend; index < count; index++) {
    const label = count > 1 ? `part ${index + 1} of ${count}: ` : '';
    // told to stop, or out of time, between two parts of a thread: the rest waits for the
    // next attempt (the parts sent are on record), rather than be cut off mid-send
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition
    if (index > firstToSend && (deps.signal.aborted || deps.mayStartPart?.() === false)) return { kind: 'released', ...base };
    const request = requestFor(index);
    // An earlier attempt of this part may have been delivered.
    if (mayBeOut && channel.onUnknown !== 'retry') {
      if (channel.onUnknown === 'hold' || publisher.lookup === undefined) {
        return holdUnknown(`${label}an earlier attempt may have been delivered and channel ${channel.name} cannot check (on_unknown=${channel.onUnknown})`, 'unconfirmed');
      }
      let found: PublishedPart | null;
      try {
        found = await publisher.lookup(request);
      } catch (e) {
        return retryOrGiveUp(`${label}looking up earlier attempt on ${channel.name} failed: ${errorMessage(e)}`, null, false, reasonOf(e));
      }
      mayBeOut = false;
      if (found !== null) {
        log.info(`Post ${post.id} ${label}was already published (found by lookup on ${channel.name}); not sent again`);
        const stop = await keep(index, found, label);
        if (stop !== null) return stop;
        continue;
      }
      // the signal may abort during the lookup, which the type checker cannot see
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition
      if (deps.signal.aborted) return { kind: 'released', ...base };
      // not out after all: it is sent, so it must fit
      const unfitPart = await contentFailure(index, index);
      if (unfitPart !== null) return unfitPart;
    }

    let images: LoadedImage[] = [];
    const wanted = parts[index]?.images ?? [];
    if (wanted.length > 0 && media !== null) {
      try {
        images = await Promise.all(wanted.map((image) => deps.loadImage(image, media, channel)));
      } catch (e) {
        // nothing of this part was sent: stopped meanwhile, it is handed back as it was
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition
        if (deps.signal.aborted) return { kind: 'released', ...base };
        if (e instanceof PermanentPublishError) return fail(`${label}${e.message}`, 'content');
        // an image host's answer (its 429, 403, 5xx) says nothing of the channel: content,
        // unless the image could not be reached at all (timeout, network)
        const reason = e instanceof RetryablePublishError && (e.reason === 'timeout' || e.reason === 'network') ? e.reason : 'content';
        return retryOrGiveUp(`${label}${errorMessage(e)}`, e instanceof RetryablePublishError ? e.retryAfterMs : null, false, reason);
      }
    }

    // ---- rate limits (src/ratelimits): one slot per send; a delay keeps the attempt ----
    let slot;
    try {
      slot = deps.rateGate === undefined ? null : await deps.rateGate.take(channel, `${post.id}.${post.token}.${index}`, deps.signal, credentials);
    } catch (e) {
      return retryOrGiveUp(`${label}taking a rate-limit slot for ${channel.name} failed: ${errorMessage(e)}`, null, false, 'other');
    }
    if (slot?.kind === 'invalid') return fail(slot.reason, 'channel');
    // the signal may abort during the wait, which the type checker cannot see
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition
    if (slot?.kind === 'wait') return deps.signal.aborted ? { kind: 'released', ...base } : rateDelayed(label + slot.reason, slot.waitMs, 'throttled');
    const settle = () => slot?.settle().catch((e: unknown) => log.warn(`Settling the rate-limit slot of post ${post.id} failed: ${errorMessage(e)}`));
    // ---- end rate limits ----
    // stopped while waiting: nothing sent, handed back as it was
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition
    if (deps.signal.aborted) {
      await settle();
      return { kind: 'released', ...base };
    }

    let result: PublishedPart;
    deps.sending?.();
    try {
      result = await sendPart(publisher, images.length === 0 ? request : { ...request, images }).finally(settle);
    } catch (e) {
      return sendFailed(e, label);
    }
    // a post of one part has nothing to put on record before its outcome
    if (count === 1) {
      done.push(result);
      continue;
    }
    const stop = await keep(index, result, label);
    if (stop !== null) return stop;
  }
  if (channel.attention !== null) await deps.setAttention(channel.id, null).catch(() => undefined);
  // a thread's address is its first part's
  const first = done[0];
  return { kind: 'published', ...base, externalId: first?.externalId ?? null, externalUrl: first?.externalUrl ?? null };

  /** What a failed send of a part leads to (`label` names the part of a thread). */
  function sendFailed(e: unknown, label: string): Outcome | Promise<Outcome> {
    if (channel === null) return fail('its channel no longer exists', 'channel');
    if (e instanceof PermanentPublishError || e instanceof SettingsError) return fail(label + e.message, reasonOf(e));
    if (e instanceof CredentialsRejectedError) return waitForOperator(`channel ${channel.name}: ${label}credentials rejected: ${e.message}`, 'auth');
    if (e instanceof RetryablePublishError && e.rateLimited) {
      // the network's own limit: every worker pauses the channel until the time it gave
      // (the usual backoff when it gave none); the post waits without using an attempt
      // never less than a second: a reset already past (clock skew) or `Retry-After: 0`
      // would otherwise send it again at once, uncounted, over and over
      const pauseMs = Math.min(Math.max(e.retryAfterMs ?? backoffDelay(used, config.retryBaseMs, config.retryMaxMs), MIN_RATE_PAUSE_MS), MAX_RETRY_AFTER_MS);
      const named = channel;
      return (deps.rateGate?.pause(named, pauseMs, e.message) ?? Promise.resolve())
        .catch((err: unknown) => log.warn(`Pausing channel ${named.name} failed: ${errorMessage(err)}`))
        .then(() => rateDelayed(label + e.message, pauseMs, 'rate-limited'));
    }
    // a publisher's unexpected error may come after it sent: treated as maybe delivered
    const maybeDelivered = e instanceof RetryablePublishError ? e.maybeDelivered : true;
    const reason = label + (e instanceof RetryablePublishError ? e.message : `${channel.platform} publisher error: ${errorMessage(e)}`);
    const why = reasonOf(e);
    if (maybeDelivered && channel.onUnknown === 'hold') return holdUnknown(reason, why);
    return retryOrGiveUp(reason, e instanceof RetryablePublishError ? e.retryAfterMs : null, maybeDelivered, why);
  }
}

/** Sends one part of a post: the one call to the platform. */
function sendPart(publisher: Publisher, request: PublishRequest): Promise<PublishedPart> {
  return publisher.publish(request);
}
