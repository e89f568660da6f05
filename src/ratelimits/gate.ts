import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage } from '../log.ts';
import type { RateLimits } from '../publishers/publisher.ts';
import type { Store } from '../store/store.ts';
import type { Channel } from '../types.ts';
import { rateKeys } from './limits.ts';

/**
 * The worker's side of rate limits: before each send, one slot of the channel's windows
 * (Store.takeRateSlot, shared by every worker on the database). A short wait is waited
 * here; a longer one sends the post back to pending until the slot frees, without using
 * up an attempt. A network's 429 pauses the channel for every worker.
 */
export interface RateGate {
  /** takes a slot for one send of `channel`, waiting up to the gate's short wait for it */
  take(channel: Channel, signal: AbortSignal): Promise<RateCheck>;
  /** the network said to wait `delayMs` (a 429): the channel pauses for every worker */
  pause(channel: Channel, delayMs: number, reason: string): Promise<void>;
}

export type RateCheck =
  /** send now, then `settle()` (whatever the send's outcome): the windows count it at its end */
  | { readonly kind: 'go'; settle(): Promise<void> }
  /** no slot soon: the post should come back in `waitMs` (attempt not counted) */
  | { readonly kind: 'wait'; readonly waitMs: number; readonly reason: string }
  /** the channel's limits cannot be read (a bad rate_limit setting): the post fails */
  | { readonly kind: 'invalid'; readonly reason: string };

export interface RateGateOptions {
  readonly store: Pick<Store, 'takeRateSlot' | 'settleRateSlot' | 'pauseChannel'>;
  /** the channel's effective limits (throws when its rate_limit setting is unreadable) */
  limitsFor(channel: Channel): Promise<RateLimits>;
  /** the longest wait for a slot that a send waits inside the worker (it may wait again, up to `waitUntil`) */
  readonly maxWaitMs: number;
  /** no waiting past this (epoch ms): the worker's last moment to start a publish */
  readonly waitUntil: number;
}

/**
 * A send waits inside the worker for a slot that frees within this (again and again while
 * other workers take the freed slots first, up to the worker's last moment to start a
 * publish); a longer wait sends the post back to pending.
 */
export const RATE_WAIT_MS = 3_000;

/** A 429 without a time to wait: the channel pauses this long. */
export const DEFAULT_PAUSE_MS = 60_000;

export function makeRateGate(options: RateGateOptions): RateGate {
  return {
    async take(channel, signal) {
      let limits: RateLimits;
      try {
        limits = await options.limitsFor(channel);
      } catch (e) {
        return { kind: 'invalid', reason: `channel ${channel.name}: ${errorMessage(e)}` };
      }
      const keys = rateKeys(channel.id, limits);
      if (keys.length === 0) return { kind: 'go', settle: async () => undefined };
      for (;;) {
        const grant = await options.store.takeRateSlot(channel.id, keys);
        if (grant.granted) {
          const names = keys.map((k) => k.key);
          return { kind: 'go', settle: () => options.store.settleRateSlot(names, grant.at) };
        }
        // waiters of one window wake a little apart, not all on the same millisecond
        const waitMs = grant.waitMs + Math.floor(Math.random() * 25);
        if (grant.paused || waitMs > options.maxWaitMs || Date.now() + waitMs > options.waitUntil || signal.aborted) {
          const why = grant.paused ? 'paused by the network (rate limited)' : 'rate limit reached';
          return { kind: 'wait', waitMs, reason: `channel ${channel.name}: ${why}, next send in ${Math.ceil(grant.waitMs / 1000)}s` };
        }
        try {
          await sleep(waitMs, undefined, { signal });
        } catch {
          return { kind: 'wait', waitMs: 0, reason: `channel ${channel.name}: stopped while waiting for its rate limit` };
        }
      }
    },
    async pause(channel, delayMs, reason) {
      await options.store.pauseChannel(channel.id, delayMs, reason);
    },
  };
}
