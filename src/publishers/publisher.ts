import * as v from 'valibot';
import type { AttemptReason } from '../reasons.ts';
import type { Channel, OnUnknown, PublishedPart } from '../types.ts';

/**
 * A publisher sends one post to its channel's platform. One module per platform
 * (src/publishers/<platform>.ts) exports a PublisherModule; the worker loads only
 * the modules of the platforms it meets.
 */
export interface PublishRequest {
  readonly postId: number;
  /** this attempt's number over the post's life (an operator's retry keeps counting) */
  readonly attempt: number;
  /** this part's text (a post of one part: the post's text) */
  readonly text: string;
  /**
   * this part's images, read and checked against the module's `media` limits (count,
   * bytes, type) before the call; empty for text only
   */
  readonly images: readonly LoadedImage[];
  /** which part of the post this request sends: index 0 of count 1 for a post of one part */
  readonly part: { readonly index: number; readonly count: number };
  /**
   * for a part after the first (a thread): the thread's first part and the part this one
   * replies to, as they were published; null for the first part
   */
  readonly replyTo: { readonly root: PublishedPart; readonly parent: PublishedPart } | null;
  /** the time the post was scheduled for (retries move its run_at, not this) */
  readonly runAt: Date;
  /**
   * this part's idempotency key, the same on every attempt: the post's key for the first
   * part, `<post key>.<index>` for a later one
   */
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

/** What the platform made of the part: its id and URL, and what a reply to it needs. */
export type PublishResult = PublishedPart;

/** An image as a publisher gets it: read, its type known from its first bytes. */
export interface LoadedImage {
  readonly bytes: Buffer;
  /** image/jpeg, image/png, image/gif or image/webp */
  readonly mimeType: string;
  readonly alt: string;
  /** a name for the file the platform may show or need (never a URL's query) */
  readonly filename: string;
}

/** The images a platform takes with one part of a post, as its documentation says. */
export interface MediaLimits {
  readonly maxImages: number;
  /** the most bytes of one image */
  readonly maxBytes: number;
  /** the most characters of one image's alt text */
  readonly maxAltLength: number;
  /** the MIME types it takes */
  readonly types: readonly string[];
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
  /**
   * why a part's text breaks the channel's limits (one line), or null: checked when
   * scheduling and before sending. `images`: how many images the part carries (a
   * network may take an empty text with images, or count a caption's limit instead).
   */
  checkText(text: string, settings: Record<string, unknown>, images?: number): string | null;
  /**
   * the images one part may carry; absent or null: text only (a post with images is
   * refused when it is scheduled)
   */
  readonly media?: MediaLimits | null;
  /** whether it publishes threads (parts replying to the one before); absent or false: posts of one part only */
  readonly threads?: boolean;
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
  /**
   * the network's documented limits for one channel (see src/ratelimits/): the defaults a
   * channel's `rate_limit` setting overrides; absent: no limit of its own
   */
  rateLimits?(settings: Record<string, unknown>, credentials?: Readonly<Record<string, unknown>> | null): RateLimits;
}

/** A limit on sends: at most `limit` in any `windowMs` (a sliding window). */
export interface RateLimit {
  readonly limit: number;
  readonly windowMs: number;
  /**
   * whose limit it is when it is not the channel's alone: an identity that several
   * channels may share (a Telegram bot's id, an X app's client id, never a secret);
   * channels of one platform with the same `per` count in one window. Absent: the channel's.
   */
  readonly per?: string;
}

/**
 * A network's limits for one channel. Every send takes one slot of each window at once:
 * `posts` (what the network allows an account to publish) and `requests` (the calls an
 * app or token may make); `concurrency`: sends of one channel in flight at once.
 */
export interface RateLimits {
  readonly posts?: RateLimit;
  readonly requests?: RateLimit;
  readonly concurrency?: number;
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
 * `rateLimited`: the network refused it for its rate limit (a 429, a flood-control
 * answer): the whole channel pauses until `retryAfterMs`, and the post keeps its attempts.
 * `reason`: why, when the thrower knows better than its class and message tell (see
 * src/reasons.ts: a request without an answer is `timeout` or `network`).
 */
export class RetryablePublishError extends Error {
  override name = 'RetryablePublishError';
  constructor(
    message: string,
    readonly retryAfterMs: number | null = null,
    readonly maybeDelivered = false,
    readonly rateLimited = false,
    readonly reason: AttemptReason | null = null,
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
