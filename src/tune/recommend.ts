import { formatRateLimit, parseRateLimit } from '../ratelimits/limits.ts';
import type { ChannelFigures, Figures } from './figures.ts';

/**
 * The seed's "Tuning Recommendations", computed from this installation's own history
 * (src/tune/figures.ts) rather than read off a table of loads. Each rule names the
 * setting to change, its value now and the value it should have, and the figures that
 * call for it; none fires when the history does not (then: nothing to change).
 */

/** The settings the rules read (src/config.ts) and the channels' rate_limit settings. */
export interface TuneSettings {
  readonly timeoutMs: number;
  readonly workerTimeoutMs: number;
  readonly batchSize: number;
  readonly minWorkers: number;
  readonly maxWorkers: number;
  readonly globalMaxWorkers: number | null;
  readonly workerConcurrency: number;
  readonly publishTimeoutMs: number;
  readonly maxAttempts: number;
  /** each channel's rate_limit setting as stored ("20/60s"), null when it has none */
  readonly rateLimits: Readonly<Record<string, string | null>>;
}

export interface Recommendation {
  /** a config variable (WORKER_CONCURRENCY), or a channel's setting (rate_limit, with `channel`) */
  readonly setting: string;
  readonly channel?: string;
  /** the value now and the value recommended, as they are written */
  readonly from: string;
  readonly to: string;
  /** by how much: x2, +2, -40% */
  readonly by: string;
  /** the figures behind it, in words */
  readonly because: string;
}

/** A rule fires only over at least this many cycles or worker runs (fewer say little). */
export const MIN_SAMPLES = 3;
/** ... when at least this share of the finished cycles fell short (hit the guard or left posts due) */
export const GUARD_HIT_SHARE = 0.1;
/** ... when at least this share of worker runs handled no post */
export const IDLE_SHARE = 0.25;
/** ... when at least this share of a channel's attempts timed out */
export const TIMEOUT_SHARE = 0.05;
/** A capacity change is at least x1.5 and at most x4 at once (then look again). */
const MIN_FACTOR = 1.5;
const MAX_FACTOR = 4;
/** A rate limit is set this far below what the network took before it said 429. */
const RATE_MARGIN = 0.8;

export function recommend(f: Figures, s: TuneSettings): Recommendation[] {
  const out: Recommendation[] = [];
  const capacity = guardRule(f, s);
  if (capacity !== null) out.push(capacity);
  else {
    const idle = idleRule(f, s);
    if (idle !== null) out.push(idle);
  }
  const timeout = timeoutRule(f, s);
  if (timeout !== null) out.push(timeout);
  const retries = retryRule(f, s);
  if (retries !== null) out.push(retries);
  for (const c of f.channels) {
    const rate = rateRule(c, s);
    if (rate !== null) out.push(rate);
  }
  return out;
}

const ms = (n: number | null) => (n === null ? '-' : `${Math.round(n)} ms`);
const pct = (part: number, whole: number) => `${Math.round((100 * part) / Math.max(1, whole))}%`;
/** a factor rounded up to a half (x1.5, x2, x2.5 ...), within MIN_FACTOR..MAX_FACTOR */
const factorOf = (x: number) => Math.min(MAX_FACTOR, Math.max(MIN_FACTOR, Math.ceil(x * 2) / 2));

/**
 * Cycles that fell short (hit the guard, TIMEOUT_MS, or ended with posts still due: their
 * workers' budget, WORKER_TIMEOUT_MS, ran out) had more to do than their workers could:
 * more workers when they were capped at MAX_WORKERS, else more sends at once per worker.
 * By how much: the due posts over the posts handled in those cycles, and at least enough
 * to bring the slowest cycles (p90) to half the guard.
 */
function guardRule(f: Figures, s: TuneSettings): Recommendation | null {
  const c = f.cycles;
  if (c.finished < MIN_SAMPLES || c.short === 0 || c.short / c.finished < GUARD_HIT_SHARE) return null;
  const backlog = c.shortHandled === 0 ? MAX_FACTOR : c.shortPending / c.shortHandled;
  const slow = c.durationP90Ms === null ? 1 : c.durationP90Ms / (0.5 * s.timeoutMs);
  const factor = factorOf(Math.max(backlog, slow));
  const figures =
    `${c.short} of ${c.finished} cycles (${pct(c.short, c.finished)}) fell short: ${c.guardHits} hit the guard (TIMEOUT_MS ${s.timeoutMs} ms; cycle p90 ${ms(c.durationP90Ms)}, max ${ms(c.durationMaxMs)}), ` +
    `${c.leftDue} ended with posts due (WORKER_TIMEOUT_MS ${s.workerTimeoutMs} ms); they had ${c.shortPending} due posts and handled ${c.shortHandled}`;
  const capped = c.shortCapped * 2 >= c.short;
  if (capped) {
    const cap = s.globalMaxWorkers ?? Number.MAX_SAFE_INTEGER;
    const to = Math.min(1000, Math.ceil(s.maxWorkers * factor));
    if (to > s.maxWorkers) {
      const over = to > cap ? `; raise GLOBAL_MAX_WORKERS (${cap}) with it` : '';
      return { setting: 'MAX_WORKERS', from: String(s.maxWorkers), to: String(to), by: `x${factor}`, because: `${figures}; ${c.shortCapped} of them spawned MAX_WORKERS${over}` };
    }
  }
  const to = Math.min(10_000, Math.ceil(s.workerConcurrency * factor));
  if (to <= s.workerConcurrency) return null;
  const why = capped ? 'MAX_WORKERS is at its most' : `they spawned fewer than MAX_WORKERS (${s.maxWorkers}) workers, whose sends were slow`;
  return { setting: 'WORKER_CONCURRENCY', from: String(s.workerConcurrency), to: String(to), by: `x${factor}`, because: `${figures}; ${why}` };
}

/**
 * Workers that handled nothing were spawned for posts that other workers took first:
 * a larger BATCH_SIZE spawns fewer for the same due posts, by the share of runs that
 * did something.
 */
function idleRule(f: Figures, s: TuneSettings): Recommendation | null {
  const w = f.workers;
  if (w.runs < MIN_SAMPLES || w.idle / w.runs < IDLE_SHARE) return null;
  const busy = w.runs - w.idle;
  const factor = busy === 0 ? 2 : Math.min(MAX_FACTOR, w.runs / busy);
  const to = Math.min(10_000, Math.ceil(s.batchSize * factor));
  if (to <= s.batchSize) return null;
  return {
    setting: 'BATCH_SIZE',
    from: String(s.batchSize),
    to: String(to),
    by: `+${to - s.batchSize}`,
    because: `${w.idle} of ${w.runs} worker runs (${pct(w.idle, w.runs)}) handled no post (${w.postsPerRun.toFixed(1)} posts a run on average); no cycle was short of workers`,
  };
}

/**
 * Attempts that timed out on a channel whose other answers came: PUBLISH_TIMEOUT_MS
 * up to twice the slowest answers it got (p90), or twice what it is, within WORKER_TIMEOUT_MS.
 */
function timeoutRule(f: Figures, s: TuneSettings): Recommendation | null {
  const slow = f.channels
    .map((c) => ({ c, timeouts: c.reasons.timeout ?? 0 }))
    // a channel none of whose attempts published is down, not slow: a longer wait would not help
    .filter(({ c, timeouts }) => timeouts > 0 && timeouts / c.attempts >= TIMEOUT_SHARE && c.publishP90Ms !== null)
    .sort((a, b) => b.timeouts / b.c.attempts - a.timeouts / a.c.attempts);
  const worst = slow[0];
  if (worst === undefined) return null;
  const wanted = Math.max(2 * s.publishTimeoutMs, 2 * (worst.c.publishP90Ms ?? 0));
  const to = Math.min(s.workerTimeoutMs, Math.ceil(wanted / 1000) * 1000);
  if (to <= s.publishTimeoutMs) return null;
  return {
    setting: 'PUBLISH_TIMEOUT_MS',
    from: String(s.publishTimeoutMs),
    to: String(to),
    by: `+${to - s.publishTimeoutMs} ms`,
    because:
      `${worst.timeouts} of ${worst.c.attempts} attempts on channel ${worst.c.channel ?? '(none)'} (${pct(worst.timeouts, worst.c.attempts)}) got no answer within ${s.publishTimeoutMs} ms; ` +
      `its answers took p90 ${ms(worst.c.publishP90Ms)}, max ${ms(worst.c.publishMaxMs)}` +
      (slow.length > 1 ? `; ${slow.length - 1} more channel(s) timed out too` : ''),
  };
}

/** Posts that failed for good on errors that pass (5xx, the network, timeouts): more attempts. */
function retryRule(f: Figures, s: TuneSettings): Recommendation | null {
  // a transient reason on a failed attempt means MAX_ATTEMPTS ran out (it is retried otherwise)
  const gaveUp = f.channels.reduce((n, c) => n + c.gaveUp, 0);
  if (gaveUp === 0 || gaveUp / Math.max(1, f.publishedPosts + gaveUp) < 0.02) return null;
  const to = Math.min(1000, s.maxAttempts + 2);
  return {
    setting: 'MAX_ATTEMPTS',
    from: String(s.maxAttempts),
    to: String(to),
    by: '+2',
    because: `${gaveUp} posts failed after MAX_ATTEMPTS (${s.maxAttempts}) on errors that pass (5xx, network, timeout), against ${f.publishedPosts} published`,
  };
}

/**
 * A channel the network answered 429 (or paused): a rate limit of its own, a margin below
 * what the network took in its busiest minute, or below its current limit when it has one.
 */
function rateRule(c: ChannelFigures, s: TuneSettings): Recommendation | null {
  const limited = c.reasons['rate-limited'] ?? 0;
  if (c.channel === null || (limited === 0 && c.pausedUntil === null)) return null;
  const current = s.rateLimits[c.channel] ?? null;
  let to: string;
  let basis: string;
  if (current !== null) {
    const limit = parseRateLimit(current);
    const lower = Math.max(1, Math.floor(limit.limit * RATE_MARGIN));
    if (lower >= limit.limit) return null;
    to = formatRateLimit({ limit: lower, windowMs: limit.windowMs });
    basis = `its rate_limit ${current} still met them`;
  } else {
    to = formatRateLimit({ limit: Math.max(1, Math.floor(c.peakPerMinute * RATE_MARGIN)), windowMs: 60_000 });
    basis = c.peakPerMinute === 0 ? 'none of its sends went through in the window' : `the network took at most ${c.peakPerMinute} sends in a minute`;
  }
  const paused = c.pausedUntil === null ? '' : `; paused by the network until ${c.pausedUntil.toISOString()}`;
  return {
    setting: 'rate_limit',
    channel: c.channel,
    from: current ?? 'default',
    to,
    by: `${Math.round(RATE_MARGIN * 100)}% of what the network took`,
    because: `${limited} answers of channel ${c.channel} were 429 (rate-limited)${paused}; ${basis}`,
  };
}
