import { CredentialsRejectedError, PermanentPublishError, RetryablePublishError, SettingsError } from './publishers/publisher.ts';

/**
 * Why an attempt did not publish: a small closed set, recorded with each attempt
 * (post_attempts.reason), shown by `posts show`, counted by /metrics and read by `tune`.
 * A published attempt has none.
 */
export const ATTEMPT_REASONS = {
  /** the network refused it for its rate limit (a 429, a flood-control answer): the channel paused */
  'rate-limited': 'the network said too many requests (429); the channel paused',
  /** our own rate limit (the channel's rate_limit, the network's documented one, or a pause after a 429) held it: nothing was sent */
  throttled: "the channel's own rate limit made it wait; nothing was sent",
  /** no answer within PUBLISH_TIMEOUT_MS (or a 408) */
  timeout: 'no answer within PUBLISH_TIMEOUT_MS',
  /** the connection failed or broke (refused, reset, DNS), or the address was refused */
  network: 'the connection failed or broke',
  /** the network refused the channel's credentials (401, 403, a revoked token) */
  auth: "the network refused the channel's credentials (401/403)",
  /** our own key could not open the channel's sealed credentials */
  credentials: "the channel's sealed credentials could not be opened here",
  /** the network refused the post itself (another 4xx): it will not take it as it is */
  rejected: 'the network refused the post (4xx)',
  /** the network failed (5xx) */
  server: 'the network answered with a server error (5xx)',
  /** our own check: the content breaks the channel's limits, or an image cannot be used (its host refused it or failed: 4xx, 429, 5xx) */
  content: "the content breaks the channel's limits (our own check)",
  /** the channel is gone, disabled, of an unknown platform, or its settings do not fit */
  channel: 'the channel is gone, disabled or misconfigured',
  /** an earlier attempt may have been delivered and the channel cannot check (hold) */
  unconfirmed: 'an earlier attempt may have been delivered and the channel cannot check',
  /** the worker stopped without recording an outcome (recovered), or lost its claim mid-thread */
  'lease-expired': 'the lease ran out: the worker stopped or lost its claim',
  /** anything else (a database error while sending, a publisher that could not load) */
  other: 'anything else',
} as const;

export type AttemptReason = keyof typeof ATTEMPT_REASONS;
export const REASONS = Object.keys(ATTEMPT_REASONS) as AttemptReason[];

/**
 * The reason of an error a publisher (or an image load) threw: its own when it carries
 * one (sendFailure: timeout, network), else by its class, else by the HTTP status its
 * message names (every adapter writes `HTTP <status>`), else rejected (permanent) or other.
 */
export function reasonOf(e: unknown): AttemptReason {
  if (e instanceof CredentialsRejectedError) return 'auth';
  if (e instanceof SettingsError) return 'channel';
  if (e instanceof RetryablePublishError) {
    if (e.rateLimited) return 'rate-limited';
    if (e.reason !== null) return e.reason;
  }
  if (e instanceof PermanentPublishError && e.message.includes('(SSRF protection)')) return 'channel';
  const status = /\bHTTP (\d{3})\b/.exec(e instanceof Error ? e.message : '')?.[1];
  if (status !== undefined) return reasonOfStatus(Number(status));
  return e instanceof PermanentPublishError ? 'rejected' : 'other';
}

/** The reason an HTTP status that is not a success stands for. */
export function reasonOfStatus(status: number): AttemptReason {
  if (status === 429) return 'rate-limited';
  if (status === 408) return 'timeout';
  if (status === 401 || status === 403) return 'auth';
  if (status >= 500) return 'server';
  return 'rejected';
}
