/**
 * Rate limits (src/ratelimits): windows and pauses shared by every worker.
 */
export interface RateStore {
  /**
   * Takes one slot of each window `keys` names for one send of channel `channelId`, all
   * or none, in one transaction on the database's clock: a window grants a slot while
   * fewer than `limit` of its slots were taken in the last `windowMs` (a sliding window),
   * and no window grants one while the channel is paused. Refused: how long until every
   * window could grant one (and the pause is over).
   */
  takeRateSlot(channelId: number, keys: readonly RateKey[]): Promise<RateGrant>;
  /**
   * After the send of a slot taken `at` (RateGrant.at): its time in each of `keys` becomes
   * the database's now. The network saw the request somewhere between the two, so the
   * windows count it at the latest moment it can have arrived: a send slow to leave (a
   * cold connection, a busy machine) never lets the network see N+1 in its window.
   */
  settleRateSlot(keys: readonly string[], at: number): Promise<void>;
  /**
   * The concurrency cap of a channel: takes one of the `cap` send slots of `key` for
   * `holder` (one send), expiring `ttlMs` from the database's now (a worker that dies
   * mid-send frees it then). False when all are held.
   */
  acquireSendSlot(key: string, cap: number, holder: string, ttlMs: number): Promise<boolean>;
  releaseSendSlot(key: string, holder: string): Promise<void>;
  /**
   * Pauses a channel for `delayMs` from the database's now (a network's 429): no slot is
   * taken for it until then. A pause never shortens a longer one.
   */
  pauseChannel(channelId: number, delayMs: number, reason: string): Promise<void>;
}

/** One sliding window of the database: at most `limit` slots taken in any `windowMs`. */
export interface RateKey {
  readonly key: string;
  readonly limit: number;
  readonly windowMs: number;
}

export type RateGrant =
  /** `at`: the slot's time (epoch ms on the database's clock), for settleRateSlot */
  | { readonly granted: true; readonly at: number }
  /** `paused`: the channel was paused (a 429), not only full */
  | { readonly granted: false; readonly waitMs: number; readonly paused: boolean };
