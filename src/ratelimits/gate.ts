import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage } from '../log.ts';
import type { RateLimits } from '../publishers/publisher.ts';
import type { RateKey, Store } from '../store/store.ts';
import type { Channel } from '../types.ts';
import { rateKeys } from './limits.ts';

/**
 * The worker's side of rate limits: before each send, one slot of the channel's windows
 * (Store.takeRateSlot, shared by every worker on the database). A short wait is waited
 * here; a longer one sends the post back to pending until the slot frees, without using
 * up an attempt. A network's 429 pauses the channel for every worker.
 */
export interface RateGate {
  /**
   * takes what one send of `channel` needs, waiting while the wait is short: a send slot
   * under the channel's concurrency cap (held by `sender`, unique per send) and a slot of
   * each of its windows
   */
  take(channel: Channel, sender: string, signal: AbortSignal, credentials?: Readonly<Record<string, unknown>> | null): Promise<RateCheck>;
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
  readonly store: Pick<Store, 'takeRateSlot' | 'settleRateSlot' | 'acquireSendSlot' | 'releaseSendSlot' | 'pauseChannel'>;
  /** the channel's effective limits (throws when its rate_limit setting is unreadable) */
  limitsFor(channel: Channel, credentials: Readonly<Record<string, unknown>> | null): Promise<RateLimits>;
  /** the longest wait for a slot that a send waits inside the worker (it may wait again, up to `waitUntil`) */
  readonly maxWaitMs: number;
  /** no waiting past this (epoch ms): the worker's last moment to start a publish */
  readonly waitUntil: number;
  /** how long a send slot is held at most (a worker that dies mid-send frees it then) */
  readonly sendSlotTtlMs: number;
}

/** How often a send waiting for its channel's concurrency cap asks again. */
const SEND_SLOT_POLL_MS = 100;

/**
 * A send waits inside the worker for a slot that frees within this (again and again while
 * other workers take the freed slots first, up to the worker's last moment to start a
 * publish); a longer wait sends the post back to pending.
 */
export const RATE_WAIT_MS = 3_000;

/** What a send of a channel without limits gets (one for all: most sends of such channels). */
const UNLIMITED: RateCheck = { kind: 'go', settle: () => Promise.resolve() };

export function makeRateGate(options: RateGateOptions): RateGate {
  /**
   * Each channel object's limits and windows, read once for all its sends (those that
   * start together share the read). A claim brings one channel object for its posts of a
   * channel, with one set of settings and one sealed form of its credentials, so its
   * limits cannot differ from one send to the next; the next claim brings a new object.
   * An unreadable setting is not kept: each send fails on it alone.
   */
  const known = new WeakMap<Channel, Promise<{ readonly limits: RateLimits; readonly keys: readonly RateKey[] }>>();
  const readLimits = (channel: Channel, credentials: Readonly<Record<string, unknown>> | null) => {
    let read = known.get(channel);
    if (read === undefined) {
      read = options.limitsFor(channel, credentials).then((limits) => ({ limits, keys: rateKeys(channel, limits) }));
      known.set(channel, read);
      read.catch(() => known.delete(channel));
    }
    return read;
  };
  return {
    async take(channel, sender, signal, credentials = null) {
      let read;
      try {
        read = await readLimits(channel, credentials);
      } catch (e) {
        return { kind: 'invalid', reason: `channel ${channel.name}: ${errorMessage(e)}` };
      }
      const { limits, keys } = read;
      const cap = limits.concurrency;
      // a channel without limits (file, webhook): nothing to take or settle
      if (cap === undefined && keys.length === 0) return UNLIMITED;
      const slotKey = `channel:${channel.id}:sending`;
      if (cap !== undefined) {
        const waitedFrom = Date.now();
        while (!(await options.store.acquireSendSlot(slotKey, cap, sender, options.sendSlotTtlMs))) {
          const waitMs = SEND_SLOT_POLL_MS + Math.floor(Math.random() * SEND_SLOT_POLL_MS);
          if (Date.now() + waitMs - waitedFrom > options.maxWaitMs || Date.now() + waitMs > options.waitUntil || signal.aborted) {
            return { kind: 'wait', waitMs: options.maxWaitMs, reason: `channel ${channel.name}: ${cap} sends already in flight (its concurrency cap)` };
          }
          await sleep(waitMs, undefined, { signal }).catch(() => undefined);
        }
      }
      const release = async () => {
        if (cap !== undefined) await options.store.releaseSendSlot(slotKey, sender);
      };
      if (keys.length === 0) return { kind: 'go', settle: release };
      for (;;) {
        let grant;
        try {
          grant = await options.store.takeRateSlot(channel.id, keys);
        } catch (e) {
          await release().catch(() => undefined);
          throw e;
        }
        if (grant.granted) {
          const names = keys.map((k) => k.key);
          const at = grant.at;
          return { kind: 'go', settle: () => Promise.all([options.store.settleRateSlot(names, at), release()]).then(() => undefined) };
        }
        // waiters of one window wake a little apart, not all on the same millisecond
        const waitMs = grant.waitMs + Math.floor(Math.random() * 25);
        if (grant.paused || waitMs > options.maxWaitMs || Date.now() + waitMs > options.waitUntil || signal.aborted) {
          await release();
          const why = grant.paused ? 'paused by the network (rate limited)' : 'rate limit reached';
          return { kind: 'wait', waitMs, reason: `channel ${channel.name}: ${why}, next send in ${Math.ceil(grant.waitMs / 1000)}s` };
        }
        try {
          await sleep(waitMs, undefined, { signal });
        } catch {
          await release();
          return { kind: 'wait', waitMs: 0, reason: `channel ${channel.name}: stopped while waiting for its rate limit` };
        }
      }
    },
    async pause(channel, delayMs, reason) {
      await options.store.pauseChannel(channel.id, delayMs, reason);
    },
  };
}
