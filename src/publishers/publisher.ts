import * as v from 'valibot';
import type { Channel, OnUnknown } from '../types.ts';

/**
 * A publisher sends one post to its channel's platform. One module per platform
 * (src/publishers/<platform>.ts) exports a PublisherModule; the worker loads only
 * the modules of the platforms it meets.
 */
export interface PublishRequest {
  readonly postId: number;
  /** this attempt's number over the post's life (an operator's retry keeps counting) */
  readonly attempt: number;
  readonly text: string;
  /** the time the post was scheduled for (retries move its run_at, not this) */
  readonly runAt: Date;
  readonly idempotencyKey: string;
  readonly channel: Channel;
  /**
   * the channel's credentials (tokens, passwords), opened from their sealed form; null
   * when it has none. Never logged, never put in an error message.
   */
  readonly credentials: Readonly<Record<string, unknown>> | null;
  /**
   * stores refreshed credentials (a new access or refresh token), sealed, so that later
   * posts and other workers use them
   */
  saveCredentials(credentials: Record<string, unknown>): Promise<void>;
  /** aborted when the worker runs out of time or is told to stop */
  readonly signal: AbortSignal;
}

export interface PublishResult {
  readonly externalId: string | null;
  readonly externalUrl: string | null;
}

export interface Publisher {
  publish(request: PublishRequest): Promise<PublishResult>;
  /**
   * Whether the platform already has this post (by its idempotency key): what it
   * published, or null when it has not. Only on platforms that can tell (see
   * PublisherModule.canLookUp); used before re-sending a post whose earlier attempt
   * has an unknown outcome, under the channel policy `check`.
   */
  lookup?(request: PublishRequest): Promise<PublishResult | null>;
  close(): Promise<void>;
}

export interface PublisherOptions {
  /** one request's timeout */
  readonly timeoutMs: number;
  /** how many publishes may be in flight at once (sizes connection pools) */
  readonly concurrency: number;
  /**
   * may connect to loopback, private, link-local and unspecified addresses for every
   * channel (config ALLOW_PRIVATE_NETWORK); default false: only public addresses,
   * unless a channel opts in alone (SSRF protection)
   */
  readonly allowPrivateNetwork?: boolean;
  /**
   * the folder `module` channels may load their code from (config MODULE_DIR); absent
   * or null: module channels are refused
   */
  readonly moduleDir?: string | null;
}

export interface PublisherModule {
  readonly platform: string;
  /** validates a channel's settings; throws SettingsError naming the problem */
  parseSettings(settings: Record<string, unknown>): unknown;
  /**
   * validates a channel's credentials when it is added; throws SettingsError naming the
   * missing or malformed field, never its value. Absent: the platform takes none.
   */
  parseCredentials?(credentials: Record<string, unknown>): unknown;
  /**
   * one cheap authenticated call that proves the credentials work (`channels add`
   * without --no-verify): the account they belong to, as it may be shown. Throws
   * CredentialsRejectedError when the network refuses them.
   */
  verify?(settings: Record<string, unknown>, credentials: Record<string, unknown> | null, options: PublisherOptions): Promise<{ account: string }>;
  /** why a text breaks the channel's limits (one line), or null: checked when scheduling and before sending */
  checkText(text: string, settings: Record<string, unknown>): string | null;
  /** settings as they may be shown: secrets replaced */
  redactSettings(settings: Record<string, unknown>): Record<string, unknown>;
  createPublisher(options: PublisherOptions): Publisher;
  /** whether its publishers implement lookup (the channel policy `check` needs it) */
  readonly canLookUp: boolean;
  /**
   * the policy of a new channel of this platform when none is given: the safe one for
   * what the platform guarantees (never `retry` unless it honours idempotency keys)
   */
  readonly defaultOnUnknown: OnUnknown;
}

/** The post can never be published as it is: do not retry. */
export class PermanentPublishError extends Error {
  override name = 'PermanentPublishError';
}

/**
 * A failure that may pass: retry later, after `retryAfterMs` if the platform said so.
 * `maybeDelivered`: the request may have reached the platform (it was sent and then
 * timed out, was cut, or was interrupted): the outcome is unknown, and the channel's
 * policy decides whether the post is sent again.
 */
export class RetryablePublishError extends Error {
  override name = 'RetryablePublishError';
  constructor(
    message: string,
    readonly retryAfterMs: number | null = null,
    readonly maybeDelivered = false,
  ) {
    super(message);
  }
}

/**
 * The network refused the channel's credentials (revoked, expired beyond refresh, wrong
 * scope): nothing a retry of this post can fix until an operator gives the channel new
 * credentials.
 */
export class CredentialsRejectedError extends Error {
  override name = 'CredentialsRejectedError';
}

/** A channel's settings do not fit its platform. */
export class SettingsError extends Error {
  override name = 'SettingsError';
}

/**
 * A channel's settings or credentials through a platform's schema: the value, or a
 * SettingsError with the schema's first message (which names a field, never its value).
 */
export function parseWith<S extends v.GenericSchema>(schema: S, value: unknown): v.InferOutput<S> {
  const parsed = v.safeParse(schema, value);
  if (!parsed.success) throw new SettingsError(parsed.issues[0].message);
  return parsed.output;
}
