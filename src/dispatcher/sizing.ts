import type { Config } from '../config.ts';
import { parseRateLimit, RATE_LIMIT_SETTING } from '../ratelimits/limits.ts';
import { workerCount } from '../scaling.ts';
import { deadlineSizing, describeSizing, type DueChannel } from '../sizing/deadline.ts';
import type { DueChannelLoad, Store } from '../store/store.ts';

/**
 * How a cycle sizes its workers (WORKER_SIZING): what it reads before deciding, and the
 * decision with the line that explains it.
 */

/** The published attempts per channel its latency is measured over (Store.dueByChannel). */
export const LATENCY_SAMPLES = 50;

/** What is due, as the cycle reads it: per channel in deadline mode, a count in seed mode. */
export interface DueLoad {
  readonly pending: number;
  /** deadline mode: the due posts by channel, with their latency and posts limit */
  readonly channels: readonly DueChannel[] | null;
}

export interface CycleSizing {
  readonly workers: number;
  /** the in-flight posts each worker is given (its WORKER_CONCURRENCY); null: the configured one */
  readonly inFlight: number | null;
  /** the dispatcher's log line */
  readonly reason: string;
}

/**
 * What is due now, or by `aheadMs` after the database's now (`daemon --precise` sizes a
 * batch before its due time, counting what falls due with it).
 */
export async function readDueLoad(store: Store, config: Config, aheadMs = 0): Promise<DueLoad> {
  if (config.workerSizing === 'seed') return { pending: await store.countDue(aheadMs), channels: null };
  const loads = await store.dueByChannel(LATENCY_SAMPLES, aheadMs);
  const rates = loads.length === 0 ? new Map<number, DueChannel['rate']>() : await postsLimits(store);
  return {
    pending: loads.reduce((n, l) => n + l.due, 0),
    channels: loads.map((l: DueChannelLoad) => ({ channelId: l.channelId, due: l.due, latencyMs: l.latencyMs, rate: rates.get(l.channelId) ?? null })),
  };
}

/**
 * Each channel's `rate_limit` setting. A network's own default limits are known only to
 * its publisher module, which the dispatcher does not load: they are not counted.
 */
async function postsLimits(store: Store): Promise<Map<number, DueChannel['rate']>> {
  const limits = new Map<number, DueChannel['rate']>();
  for (const c of await store.listChannels()) {
    const setting = c.settings[RATE_LIMIT_SETTING];
    if (typeof setting !== 'string') continue;
    try {
      limits.set(c.id, parseRateLimit(setting));
    } catch {
      // an unreadable setting: its worker says so when it publishes
    }
  }
  return limits;
}

/** The latency assumed on a channel without history: a quarter of a publish's timeout. */
export function defaultLatencyMs(config: Config): number {
  return Math.max(1, Math.round(config.publishTimeoutMs / 4));
}

/**
 * A worker's config for a sizing's in-flight posts: WORKER_CONCURRENCY set to them, and
 * BATCH_SIZE raised to them (it claims that many at once); the configured one for null.
 */
export function sizedConfig(config: Config, inFlight: number | null): Config {
  return inFlight === null ? config : { ...config, workerConcurrency: inFlight, batchSize: Math.max(config.batchSize, inFlight) };
}

/**
 * The most posts a worker may be given to keep in flight: deadline sizing hands one
 * worker up to MAX_WORKERS x WORKER_CONCURRENCY. A resident worker sizes its connection
 * pools for it, as they outlive a batch.
 */
export function mostInFlight(config: Config): number {
  return config.workerSizing === 'deadline' ? config.maxWorkers * config.workerConcurrency : config.workerConcurrency;
}

export function sizeCycle(load: DueLoad, config: Config): CycleSizing {
  if (load.channels === null) {
    const workers = workerCount(load.pending, config);
    return { workers, inFlight: null, reason: `Calculated worker count: ${workers} (pending=${load.pending}, batch=${config.batchSize}, max=${config.maxWorkers})` };
  }
  const fallback = defaultLatencyMs(config);
  const s = deadlineSizing(load.channels, { ...config, defaultLatencyMs: fallback });
  return { workers: s.workers, inFlight: s.inFlight, reason: `Sizing (deadline): ${describeSizing(s, fallback)}` };
}
