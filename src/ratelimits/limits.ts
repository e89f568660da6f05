import { createHash } from 'node:crypto';
import type { PublisherModule, RateLimit, RateLimits } from '../publishers/publisher.ts';
import type { RateKey } from '../store/store.ts';
import type { Channel } from '../types.ts';

/**
 * Rate limits: what a channel may send, in any sliding window, across every worker
 * process and host (the windows live in the database: Store.takeRateSlot).
 *
 * - A network's documented limits are its module's defaults (PublisherModule.rateLimits).
 * - A channel's `rate_limit` setting ("N/WINDOW", e.g. "20/60s", "300/3h") replaces the
 *   posts limit; it is validated here and nowhere else.
 * - Each send takes one slot of the channel's posts window and of its requests window
 *   at once (both or neither).
 */

/** The setting that overrides a channel's posts limit. */
export const RATE_LIMIT_SETTING = 'rate_limit';

/** The most sends one window may count: its row keeps one time per send. */
export const MAX_LIMIT = 10_000;
const MIN_WINDOW_MS = 100;
const MAX_WINDOW_MS = 7 * 24 * 60 * 60 * 1000;

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "N/WINDOW" as a RateLimit; throws an Error whose message is one line naming the problem. */
export function parseRateLimit(text: string): RateLimit {
  const m = /^\s*(\d+)\s*\/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h|d)\s*$/.exec(text);
  const usage = `rate limit "${text.slice(0, 40)}" must be N/WINDOW, e.g. 20/60s, 300/3h, 5/2s (units ms, s, m, h, d)`;
  if (m === null) throw new Error(usage);
  const limit = Number(m[1]);
  const windowMs = Math.round(Number(m[2] ?? '1') * (UNITS[m[3] ?? ''] ?? NaN));
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_LIMIT) throw new Error(`${usage}: N from 1 to ${MAX_LIMIT}`);
  if (!Number.isFinite(windowMs) || windowMs < MIN_WINDOW_MS || windowMs > MAX_WINDOW_MS) throw new Error(`${usage}: a window from 100ms to 7d`);
  return { limit, windowMs };
}

/** A RateLimit as a person writes it ("20/60s"); parseRateLimit reads it back. */
export function formatRateLimit(limit: RateLimit): string {
  const w = limit.windowMs;
  const unit = w % 86_400_000 === 0 ? 'd' : w % 3_600_000 === 0 ? 'h' : w % 60_000 === 0 ? 'm' : w % 1000 === 0 ? 's' : 'ms';
  return `${limit.limit}/${w / (UNITS[unit] ?? 1)}${unit}`;
}

/**
 * A channel's limits: its platform's defaults, with the posts limit replaced by its
 * `rate_limit` setting. An unreadable setting (stored before it was checked) is an Error.
 */
export function effectiveLimits(
  channel: Pick<Channel, 'settings'>,
  module: Pick<PublisherModule, 'rateLimits'> | null,
  credentials: Readonly<Record<string, unknown>> | null = null,
): RateLimits {
  const defaults = module?.rateLimits?.(channel.settings, credentials) ?? {};
  const override = channel.settings[RATE_LIMIT_SETTING];
  if (override === undefined || override === null) return defaults;
  if (typeof override !== 'string') throw new Error(`setting ${RATE_LIMIT_SETTING} must be text such as "20/60s"`);
  return { ...defaults, posts: parseRateLimit(override) };
}

/** How `channels list` shows a channel's limits ("-" for none). */
export function describeLimits(limits: RateLimits): string {
  const parts: string[] = [];
  if (limits.posts !== undefined) parts.push(`${formatRateLimit(limits.posts)} posts`);
  if (limits.requests !== undefined) parts.push(`${formatRateLimit(limits.requests)} requests`);
  if (limits.concurrency !== undefined) parts.push(`${limits.concurrency} at once`);
  return parts.length === 0 ? '-' : parts.join(', ');
}

/**
 * The margin a window is widened by when a slot is taken: a request leaves a few
 * milliseconds after its slot is stamped, and arrives with some jitter, so the network
 * must not see N+1 sends in its window. 50 ms, or 1% of a long window.
 */
export function safetyMarginMs(windowMs: number): number {
  return Math.max(50, Math.ceil(windowMs / 100));
}


/**
 * The windows one send of a channel takes a slot of, each widened by its margin (empty:
 * the channel is not limited): `channel:<id>:<kind>`, or for a limit shared by the
 * channels of one bot or app `<platform>:<digest of its identity>:<kind>`.
 */
export function rateKeys(channel: Pick<Channel, 'id' | 'platform'>, limits: RateLimits): RateKey[] {
  const keys: RateKey[] = [];
  for (const kind of ['posts', 'requests'] as const) {
    const l = limits[kind];
    if (l === undefined) continue;
    const owner = l.per === undefined ? `channel:${channel.id}` : `${channel.platform}:${createHash('sha256').update(l.per).digest('hex').slice(0, 24)}`;
    keys.push({ key: `${owner}:${kind}`, limit: l.limit, windowMs: l.windowMs + safetyMarginMs(l.windowMs) });
  }
  return keys;
}
