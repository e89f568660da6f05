import type { Channel } from '../types.ts';

/**
 * A publisher sends one post to its channel's platform. One module per platform
 * (src/publishers/<platform>.ts) exports a PublisherModule; the worker loads only
 * the modules of the platforms it meets.
 */
export interface PublishRequest {
  readonly postId: number;
  readonly attempt: number;
  readonly text: string;
  readonly runAt: Date;
  readonly idempotencyKey: string;
  readonly channel: Channel;
  /** aborted when the worker runs out of time or is told to stop */
  readonly signal: AbortSignal;
}

export interface PublishResult {
  readonly externalId: string | null;
  readonly externalUrl: string | null;
}

export interface Publisher {
  publish(request: PublishRequest): Promise<PublishResult>;
  close(): Promise<void>;
}

export interface PublisherOptions {
  /** one request's timeout */
  readonly timeoutMs: number;
  /** how many publishes may be in flight at once (sizes connection pools) */
  readonly concurrency: number;
}

export interface PublisherModule {
  readonly platform: string;
  /** validates a channel's settings; throws SettingsError naming the problem */
  parseSettings(settings: Record<string, unknown>): unknown;
  /** settings as they may be shown: secrets replaced */
  redactSettings(settings: Record<string, unknown>): Record<string, unknown>;
  createPublisher(options: PublisherOptions): Publisher;
}

/** The post can never be published as it is: do not retry. */
export class PermanentPublishError extends Error {
  override name = 'PermanentPublishError';
}

/** A failure that may pass: retry later, after `retryAfterMs` if the platform said so. */
export class RetryablePublishError extends Error {
  override name = 'RetryablePublishError';
  constructor(
    message: string,
    readonly retryAfterMs: number | null = null,
  ) {
    super(message);
  }
}

/** A channel's settings do not fit its platform. */
export class SettingsError extends Error {
  override name = 'SettingsError';
}
