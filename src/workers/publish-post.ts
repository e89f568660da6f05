import { backoffDelay } from '../backoff.ts';
import type { Config } from '../config.ts';
import { errorMessage, type Logger } from '../log.ts';
import {
  CredentialsRejectedError,
  PermanentPublishError,
  RetryablePublishError,
  SettingsError,
  type Publisher,
  type PublishRequest,
} from '../publishers/publisher.ts';
import type { RateGate } from '../ratelimits/gate.ts';
import type { ClaimedPost, Outcome } from '../types.ts';

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
  /** the platform's publisher; null for a platform nobody knows */
  publisherFor(platform: string): Promise<Publisher | null>;
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
  const { config, log } = deps;
  const base = { postId: post.id, token: post.token };
  // MAX_ATTEMPTS counts from the latest operator retry; `attempt` counts over the post's life
  const used = post.attempt - post.attemptsBase;

  const channel = post.channel;
  // An earlier attempt may have been delivered, until a lookup says it was not.
  let mayBeOut = post.unconfirmed;
  // On a `retry` channel a resend is safe by the channel's own declaration (the platform
  // honours the idempotency key), so such a post may be recorded failed and retried.
  const holdsMaybeOut = () => mayBeOut && channel?.onUnknown !== 'retry';
  const holdUnknown = (reason: string): Outcome => {
    log.warn(`Post ${post.id} outcome unknown, held for an operator: ${reason}`);
    return { kind: 'unknown', ...base, error: `outcome unknown: ${reason}` };
  };
  /** A post that may already be out is never recorded as failed: it is held instead. */
  const fail = (reason: string): Outcome => {
    if (holdsMaybeOut()) return holdUnknown(`an earlier attempt may have been delivered, and now: ${reason}`);
    log.warn(`Post ${post.id} failed: ${reason}`);
    return { kind: 'failed', ...base, error: reason };
  };
  /** `maybeSent`: this attempt may have been delivered. */
  const retryOrGiveUp = (reason: string, retryAfterMs: number | null, maybeSent: boolean): Outcome => {
    const unconfirmed = maybeSent || mayBeOut;
    if (used >= config.maxAttempts) {
      mayBeOut = unconfirmed;
      return fail(`gave up after ${used} attempts: ${reason}`);
    }
    // the server's Retry-After is honoured up to a day, so no post is parked for years
    let delayMs = Math.max(backoffDelay(used, config.retryBaseMs, config.retryMaxMs), Math.min(retryAfterMs ?? 0, MAX_RETRY_AFTER_MS));
    if (unconfirmed && channel?.onUnknown === 'retry') delayMs = Math.min(delayMs, MAYBE_OUT_RETRY_MAX_MS);
    log.warn(`Post ${post.id} will retry in ${Math.round(delayMs / 1000)}s (attempt ${used}/${config.maxAttempts}): ${reason}`);
    return { kind: 'retry', ...base, error: reason, delayMs, unconfirmed };
  };

  /**
   * The channel, not the post, must be fixed (credentials refused or unreadable): the
   * channel is marked for an operator, and the post waits without using up an attempt.
   */
  const waitForOperator = async (reason: string): Promise<Outcome> => {
    log.warn(`Post ${post.id} waits for an operator: ${reason}`);
    if (channel !== null) await deps.setAttention(channel.id, reason).catch(() => undefined);
    return { kind: 'retry', ...base, error: reason, delayMs: CREDENTIALS_RETRY_MS, unconfirmed: mayBeOut, uncounted: true };
  };

  if (channel === null) return fail('its channel no longer exists');
  if (!channel.enabled) return fail(`channel ${channel.name} is disabled`);
  if (post.text === null) return fail('its content (post_details row) is missing');
  let publisher: Publisher | null;
  try {
    publisher = await deps.publisherFor(channel.platform);
  } catch (e) {
    return retryOrGiveUp(`cannot load publisher for ${channel.platform}: ${errorMessage(e)}`, null, false);
  }
  if (publisher === null) return fail(`unknown platform "${channel.platform}" on channel ${channel.name}`);
  // stopped before anything was sent: handed back, attempt not counted
  if (deps.signal.aborted) return { kind: 'released', ...base };

  let credentials: Record<string, unknown> | null = null;
  if (channel.credentials !== null) {
    try {
      credentials = deps.openCredentials(channel.credentials);
    } catch (e) {
      // a key problem of this installation, not of the post: it waits for the operator
      return waitForOperator(`channel ${channel.name}: ${errorMessage(e)}`);
    }
  }
  const request: PublishRequest = {
    postId: post.id,
    attempt: post.attempt,
    text: post.text,
    // the time it was scheduled for: what the platform is told, whatever retries did to run_at
    runAt: post.scheduledAt,
    idempotencyKey: post.idempotencyKey,
    images: [],
    part: { index: 0, count: 1 },
    replyTo: null,
    channel,
    credentials,
    saveCredentials: (fresh) => deps.saveCredentials(channel.id, fresh, channel.credentials),
    signal: deps.signal,
  };

  // An earlier attempt may have been delivered.
  if (mayBeOut && channel.onUnknown !== 'retry') {
    if (channel.onUnknown === 'hold' || publisher.lookup === undefined) {
      return holdUnknown(`an earlier attempt may have been delivered and channel ${channel.name} cannot check (on_unknown=${channel.onUnknown})`);
    }
    try {
      const found = await publisher.lookup(request);
      if (found !== null) {
        log.info(`Post ${post.id} was already published (found by lookup on ${channel.name}); not sent again`);
        return { kind: 'published', ...base, externalId: found.externalId, externalUrl: found.externalUrl };
      }
      mayBeOut = false;
    } catch (e) {
      return retryOrGiveUp(`looking up earlier attempt on ${channel.name} failed: ${errorMessage(e)}`, null, false);
    }
    // the signal may abort during the lookup, which the type checker cannot see
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition
    if (deps.signal.aborted) return { kind: 'released', ...base };
  }

  // ---- rate limits (src/ratelimits): one slot per send; a delay keeps the attempt ----
  const rateDelayed = (reason: string, delayMs: number): Outcome => {
    log.info(`Post ${post.id} waits ${Math.ceil(delayMs / 1000)}s for its channel's rate limit: ${reason}`);
    return { kind: 'retry', ...base, error: reason, delayMs, unconfirmed: mayBeOut, uncounted: true };
  };
  let slot;
  try {
    slot = deps.rateGate === undefined ? null : await deps.rateGate.take(channel, `${post.id}.${post.token}`, deps.signal);
  } catch (e) {
    return retryOrGiveUp(`taking a rate-limit slot for ${channel.name} failed: ${errorMessage(e)}`, null, false);
  }
  if (slot?.kind === 'invalid') return fail(slot.reason);
  // the signal may abort during the wait, which the type checker cannot see
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition
  if (slot?.kind === 'wait') return deps.signal.aborted ? { kind: 'released', ...base } : rateDelayed(slot.reason, slot.waitMs);
  const settle = () => slot?.settle().catch((e: unknown) => log.warn(`Settling the rate-limit slot of post ${post.id} failed: ${errorMessage(e)}`));
  // ---- end rate limits ----

  try {
    const result = await publisher.publish(request).finally(settle);
    if (channel.attention !== null) await deps.setAttention(channel.id, null).catch(() => undefined);
    return { kind: 'published', ...base, externalId: result.externalId, externalUrl: result.externalUrl };
  } catch (e) {
    if (e instanceof PermanentPublishError || e instanceof SettingsError) return fail(e.message);
    if (e instanceof CredentialsRejectedError) return waitForOperator(`channel ${channel.name}: credentials rejected: ${e.message}`);
    if (e instanceof RetryablePublishError && e.rateLimited) {
      // the network's own limit: every worker pauses the channel until the time it gave
      // (the usual backoff when it gave none)
      const pauseMs = Math.min(e.retryAfterMs ?? backoffDelay(used, config.retryBaseMs, config.retryMaxMs), MAX_RETRY_AFTER_MS);
      await deps.rateGate?.pause(channel, pauseMs, e.message).catch((err: unknown) => log.warn(`Pausing channel ${channel.name} failed: ${errorMessage(err)}`));
      return rateDelayed(e.message, pauseMs);
    }
    // a publisher's unexpected error may come after it sent: treated as maybe delivered
    const maybeDelivered = e instanceof RetryablePublishError ? e.maybeDelivered : true;
    const reason = e instanceof RetryablePublishError ? e.message : `${channel.platform} publisher error: ${errorMessage(e)}`;
    if (maybeDelivered && channel.onUnknown === 'hold') return holdUnknown(reason);
    return retryOrGiveUp(reason, e instanceof RetryablePublishError ? e.retryAfterMs : null, maybeDelivered);
  }
}
