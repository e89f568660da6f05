/**
 * Deadline-aware sizing (WORKER_SIZING=deadline): how many workers a cycle spawns, and
 * how many posts each keeps in flight, from the posts due on each channel and the
 * publish latency measured on it, so that the due backlog clears inside the worker
 * budget with the fewest processes. A pure function: the dispatcher gathers the figures
 * (Store.dueByChannel) and logs the answer's reason (describeSizing).
 *
 * In-flight posts are cheap (one more request on an open connection); processes are not
 * (start-up, 60-80 MB each). So one worker carries the whole in-flight allowance,
 * MAX_WORKERS x WORKER_CONCURRENCY, whenever that clears the backlog inside the budget.
 * When even that cannot (saturated), throughput matters most and the cycle takes the
 * seed's maximum shape (MAX_WORKERS workers of WORKER_CONCURRENCY, which drain faster
 * than one worker of the same total, measured in issue 10: 1.41x against 1.60x the ideal).
 * With GLOBAL_MAX_WORKERS set, each worker keeps WORKER_CONCURRENCY in flight (the
 * global bound is slots x WORKER_CONCURRENCY) and the sizing only saves processes.
 */

/** The posts due on one channel, as Store.dueByChannel reads them. */
export interface DueChannel {
  readonly channelId: number;
  readonly due: number;
  /** the median publish time (claim to outcome) of its recent attempts; null: no history */
  readonly latencyMs: number | null;
  /** its posts limit (`rate_limit` setting); null: none known to the dispatcher */
  readonly rate: { readonly limit: number; readonly windowMs: number } | null;
}

export interface DeadlineLimits {
  readonly maxWorkers: number;
  readonly minWorkers: number;
  readonly workerConcurrency: number;
  readonly globalMaxWorkers: number | null;
  readonly workerTimeoutMs: number;
  readonly publishTimeoutMs: number;
  /** the latency assumed on a channel without history */
  readonly defaultLatencyMs: number;
}

export interface DeadlineSizing {
  readonly workers: number;
  /** posts each worker keeps in flight (its WORKER_CONCURRENCY and most claimed at once) */
  readonly inFlight: number;
  readonly due: number;
  /** due posts that their channel's rate window lets go out inside the budget */
  readonly counted: number;
  /** estimated publishing time of the counted posts one after another */
  readonly publishMs: number;
  /** the time the backlog should clear in: a worker's claim window (claimWindowMs) less BUDGET_MARGIN */
  readonly budgetMs: number;
  /** estimated time to clear the counted posts with the chosen shape */
  readonly clearsInMs: number;
  /** even the whole in-flight allowance cannot clear the backlog inside the budget */
  readonly saturated: boolean;
  /** channels with due posts and no measured latency (the default was assumed) */
  readonly unmeasured: number;
}

/** The share of the claim window kept free of the estimate: start-up, the last outcomes, error. */
export const BUDGET_MARGIN = 0.1;

/**
 * How long after its start a worker still claims: a publish started later could not end
 * inside WORKER_TIMEOUT_MS (the worker stops claiming PUBLISH_TIMEOUT_MS before its end,
 * at most half its budget). What is not claimed by then waits for the next cycle.
 */
export function claimWindowMs(workerTimeoutMs: number, publishTimeoutMs: number): number {
  return workerTimeoutMs - Math.min(publishTimeoutMs, Math.floor(workerTimeoutMs / 2));
}

/** How many of `due` posts a window of `limit` per `windowMs` lets out within `budgetMs` (the window empty at the start). */
function rateAllows(due: number, rate: DueChannel['rate'], budgetMs: number): number {
  if (rate === null) return due;
  return Math.min(due, rate.limit * (Math.floor(budgetMs / rate.windowMs) + 1));
}

export function deadlineSizing(channels: readonly DueChannel[], limits: DeadlineLimits): DeadlineSizing {
  const budgetMs = Math.floor(claimWindowMs(limits.workerTimeoutMs, limits.publishTimeoutMs) * (1 - BUDGET_MARGIN));
  const maxInFlight = limits.maxWorkers * limits.workerConcurrency;
  const processCap = Math.min(limits.maxWorkers, limits.globalMaxWorkers ?? limits.maxWorkers);
  let due = 0;
  let counted = 0;
  let publishMs = 0;
  let unmeasured = 0;
  // no shape clears faster than a channel's slowest single post, nor than its rate window lets it
  let floorMs = 0;
  for (const c of channels) {
    if (c.due <= 0) continue;
    const latency = c.latencyMs ?? limits.defaultLatencyMs;
    if (c.latencyMs === null) unmeasured++;
    const n = rateAllows(c.due, c.rate, budgetMs);
    due += c.due;
    counted += n;
    publishMs += n * latency;
    const windows = c.rate === null ? 0 : Math.ceil(n / c.rate.limit) - 1;
    floorMs = Math.max(floorMs, windows * (c.rate?.windowMs ?? 0) + latency);
  }
  const base = { due, counted, publishMs, budgetMs, unmeasured };
  if (due === 0) return { ...base, workers: 0, inFlight: 0, clearsInMs: 0, saturated: false };

  const total = Math.max(1, Math.min(counted, maxInFlight));
  const clears = (inFlight: number) => Math.max(publishMs / inFlight, floorMs);
  if (limits.globalMaxWorkers !== null) {
    // GLOBAL_MAX_WORKERS bounds the posts in flight across hosts as slots x
    // WORKER_CONCURRENCY: a worker may not carry more (nor more when fewer slots are
    // granted). The shape only saves processes: the fewest at WORKER_CONCURRENCY that clear.
    const perWorker = limits.workerConcurrency;
    const needed = Math.ceil(publishMs / budgetMs / perWorker);
    const over = needed > processCap;
    const workers = Math.max(1, Math.min(Math.max(needed, limits.minWorkers), processCap));
    return { ...base, workers, inFlight: perWorker, clearsInMs: clears(workers * perWorker), saturated: over };
  }
  // throughput alone decides: a rate window or a slow single post is not helped by processes
  const saturated = publishMs / total > budgetMs;
  const wanted = saturated ? limits.maxWorkers : 1;
  const workers = Math.max(1, Math.min(Math.max(wanted, limits.minWorkers), processCap));
  const inFlight = saturated ? Math.max(1, Math.floor(maxInFlight / workers)) : Math.max(1, Math.floor(total / workers));
  return { ...base, workers, inFlight, clearsInMs: clears(workers * inFlight), saturated };
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/**
 * The reason, as the dispatcher logs it:
 * `200 due, est. 40.0 s of publishing at 200 ms/post -> 1 worker x 25 in flight (clears in ~1.6 s of the 36 s budget)`.
 */
export function describeSizing(s: DeadlineSizing, defaultLatencyMs: number): string {
  if (s.due === 0) return '0 due -> no workers';
  const perPost = Math.round(s.publishMs / Math.max(1, s.counted));
  const notes: string[] = [];
  if (s.counted < s.due) notes.push(`${s.due - s.counted} held back by rate limits`);
  if (s.unmeasured > 0) notes.push(`${s.unmeasured} channel${s.unmeasured === 1 ? '' : 's'} without history taken at ${defaultLatencyMs} ms/post`);
  const shape = `${s.workers} worker${s.workers === 1 ? '' : 's'} x ${s.inFlight} in flight`;
  const budget = `${Math.round(s.budgetMs / 1000)} s budget`;
  const outcome = s.saturated ? `does not clear: ~${seconds(s.clearsInMs)} against the ${budget}, the maximum` : `clears in ~${seconds(s.clearsInMs)} of the ${budget}`;
  return `${s.due} due, est. ${seconds(s.publishMs)} of publishing at ${perPost} ms/post${notes.length > 0 ? ` (${notes.join(', ')})` : ''} -> ${shape} (${outcome})`;
}
