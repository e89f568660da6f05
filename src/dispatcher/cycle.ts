import { randomBytes } from 'node:crypto';
import { configToEnv, type Config } from '../config.ts';
import { raiseAlerts } from '../alerts/raise.ts';
import { createLogger, errorMessage, withFields, type Logger } from '../log.ts';
import { openStore } from '../store/open.ts';
import type { Store } from '../store/store.ts';
import { EXIT, type CycleResult, type ExitCode, type WorkerRun } from '../types.ts';
import { readDueLoad, sizeCycle, sizedConfig, type DueLoad } from './sizing.ts';
import { liftSharesOnceAllClaimed, spawnWorker, stopWorkers, type WorkerExit, type WorkerHandle } from './spawn.ts';
import { cyclePosts, logSummary } from './summary.ts';

/**
 * One dispatch cycle: recover expired leases, count due posts, compute the worker
 * count, spawn that many worker processes in parallel, wait for all of them (at most
 * TIMEOUT_MS from the cycle's start), log and record the result.
 */
export interface CycleOptions {
  readonly config: Config;
  /** an open store to use; when absent one is opened and closed by the cycle */
  readonly store?: Store;
  /** aborting it stops the cycle: workers get SIGTERM, then SIGKILL after the grace */
  readonly signal?: AbortSignal;
  readonly log?: Logger;
  /** the worker entry point; the compiled runner beside this file by default */
  readonly workerEntry?: string;
}

const RULE = '========================================';
/** How long the dispatcher waits before trying again to record a cycle the database refused. */
const FINISH_RETRY_MS = 1_000;
/** The result of a cycle that ended before spawning anything. */
function earlyResult(started: number, exitCode: ExitCode, recovered = 0): CycleResult {
  return {
    cycleId: null,
    pending: 0,
    workersSpawned: 0,
    workersSucceeded: 0,
    workersFailed: 0,
    recovered,
    durationMs: Date.now() - started,
    exitCode,
    stopped: false,
    posts: { published: 0, retried: 0, failed: 0, held: 0 },
  };
}

/**
 * Worker ids: the seed's `worker-<epoch ms>-<n>`, with a random part that tells apart
 * the workers of hosts whose cycles start in the same millisecond.
 */
export function workerIds(count: number, now = Date.now()): string[] {
  const cycle = randomBytes(3).toString('hex');
  return Array.from({ length: count }, (_, i) => `worker-${now}-${cycle}-${i + 1}`);
}

export async function runCycle(options: CycleOptions): Promise<CycleResult> {
  const { config } = options;
  const log = options.log ?? createLogger('DISPATCHER', config);
  const started = Date.now();

  log.blank();
  log.info(RULE);
  log.info(`Dispatch cycle started at ${new Date(started).toISOString()}`);
  log.info(RULE);
  log.blank();

  let store = options.store;
  const ownStore = store === undefined;

  try {
    try {
      store ??= await openStore(config.database, { dbTimeoutMs: config.dbTimeoutMs });
      await store.migrate();
      await store.ping();
    } catch (e) {
      log.error(`✗ Database unreachable (${config.databaseLabel}): ${errorMessage(e)}`);
      return earlyResult(started, EXIT.error);
    }
    log.info(`✓ Database connection verified (${config.databaseLabel})`);
    if (store.created) log.warn(`Created a new, empty database: ${config.databaseLabel} (is DATABASE_URL or the working directory right?)`);

    // One cycle at a time per host: system cron fires every minute whatever happens.
    // The lock is a row that lives LEASE_MS unless renewed (see dispatch).
    let locked: boolean;
    try {
      locked = await store.tryLockCycle(config.host, config.leaseMs);
    } catch (e) {
      log.error(`✗ Database error while taking the cycle lock: ${errorMessage(e)}`);
      return earlyResult(started, EXIT.error);
    }
    if (!locked) {
      log.info(`Previous cycle still running on ${config.host}, exiting`);
      return earlyResult(started, EXIT.ok);
    }
    try {
      return await dispatch(store, options, log, started);
    } finally {
      await store.unlockCycle(config.host).catch(() => undefined);
    }
  } finally {
    if (ownStore && store !== undefined) await store.close();
  }
}

/**
 * Renews the cycle lock and the worker slots of the workers still running, every third
 * of LEASE_MS, for as long as the cycle runs. A renewal that finds the lock taken (it
 * expired while this process was frozen or cut off) stops any further spawning.
 */
function keepCoordination(store: Store, config: Config, log: Logger, running: ReadonlySet<string>) {
  const state = { lockLost: false };
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    const workers = config.globalMaxWorkers === null ? [] : [...running];
    Promise.all([
      store.renewCycleLock(config.host, config.leaseMs).then((ours) => {
        if (!ours && !state.lockLost) {
          state.lockLost = true;
          log.error(`✗ Cycle lock of ${config.host} lost (it expired and another dispatcher may hold it): no more workers will be spawned`);
        }
      }),
      store.renewWorkerSlots(workers, config.leaseMs).then((kept) => {
        const still = new Set(kept);
        for (const w of workers) if (!still.has(w) && running.has(w)) log.warn(`Worker slot of ${w} lost (expired); the worker stops claiming`);
      }),
    ])
      .catch((e: unknown) => log.warn(`Renewing the cycle lock and worker slots failed: ${errorMessage(e)}`))
      .finally(() => (busy = false));
  }, Math.max(20, Math.floor(config.leaseMs / 3)));
  return { state, stop: () => clearInterval(timer) };
}

/**
 * Settings the server cannot honour: every worker holds a connection, so a cap above
 * what the server has free makes workers fail to connect. One warning line.
 */
async function warnAboutConnections(store: Store, config: Config, log: Logger): Promise<void> {
  const limit = await store.connections().catch(() => null);
  if (limit === null) return;
  const workers = config.globalMaxWorkers ?? config.maxWorkers;
  const free = limit.max - limit.used;
  if (workers + 1 > free) {
    const what = config.globalMaxWorkers === null ? `MAX_WORKERS (${config.maxWorkers}, per host)` : `GLOBAL_MAX_WORKERS (${config.globalMaxWorkers})`;
    log.warn(
      `${what} workers and this dispatcher need more connections than PostgreSQL has free (${free} of max_connections less reserved, ${limit.max}): lower it or raise max_connections`,
    );
  }
}

/** The cycle proper, under the host's cycle lock. */
async function dispatch(store: Store, options: CycleOptions, log: Logger, started: number): Promise<CycleResult> {
  const running = new Set<string>();
  const coordination = keepCoordination(store, options.config, log, running);
  try {
    return await dispatchLocked(store, options, log, started, running, coordination.state);
  } finally {
    coordination.stop();
  }
}

async function dispatchLocked(
  store: Store,
  options: CycleOptions,
  log: Logger,
  started: number,
  running: Set<string>,
  coordination: { readonly lockLost: boolean },
): Promise<CycleResult> {
  const { config } = options;
  let pending: number;
  let load: DueLoad;
  let recovered: number;
  let cycleId: number;
  try {
    const back = await store.recoverExpired(config.maxAttempts);
    recovered = back.length;
    if (back.length > 0) {
      const held = back.filter((r) => r.status === 'unknown').length;
      const heldNote = held === 0 ? '' : `, ${held} held as unknown (see status)`;
      log.warn(`Recovered ${back.length} posts whose worker died (lease expired): ${back.length - held} back to pending${heldNote}`);
      for (const r of back.slice(0, 20)) {
        log.warn(`  post ${r.id} from ${r.workerId ?? '(unknown worker)'} after attempt ${r.attempts} -> ${r.status}`, {
          postId: r.id,
          workerId: r.workerId,
          attempt: r.attempts,
          outcome: r.status,
        });
      }
      if (back.length > 20) log.warn(`  ... and ${back.length - 20} more`);
    }
    // ALERT_CHANNEL: failed and unknown posts reported, before the count so they go out now
    await raiseAlerts(store, config, log).catch((e: unknown) => log.error(`✗ Alerts not scheduled: ${errorMessage(e)}`));
    load = await readDueLoad(store, config);
    pending = load.pending;
    cycleId = await store.startCycle(config.host);
  } catch (e) {
    log.error(`✗ Database error before spawning workers: ${errorMessage(e)}`);
    return earlyResult(started, EXIT.error);
  }
  // every later line of this cycle carries its id (a JSON key; the text is unchanged)
  log = withFields(log, { cycleId });

  await warnAboutConnections(store, config, log);
  log.info(`Pending posts: ${pending}`);
  const sizing = sizeCycle(load, config);
  const wanted = sizing.workers;
  let ids = workerIds(wanted);
  if (wanted === 0) {
    log.info('No pending posts, skipping worker spawn');
  } else {
    log.info(sizing.reason, { sizing: config.workerSizing, workers: wanted, inFlight: sizing.inFlight ?? config.workerConcurrency });
    if (config.globalMaxWorkers !== null) {
      try {
        ids = await store.acquireWorkerSlots(config.host, ids, config.globalMaxWorkers, config.leaseMs);
      } catch (e) {
        log.error(`✗ Database error while taking worker slots: ${errorMessage(e)}`);
        ids = [];
      }
      if (ids.length < wanted) {
        log.warn(
          `Global worker cap ${config.globalMaxWorkers}: ${ids.length} of ${wanted} slots free (other hosts hold the rest)` +
            (ids.length === 0 ? '; due posts wait for the next cycle' : ''),
        );
      }
    }
    if (coordination.lockLost && ids.length > 0) {
      log.error('✗ Not spawning: the cycle lock was lost');
      await store.releaseWorkerSlots(ids).catch(() => undefined);
      ids = [];
    }
    if (ids.length > 0) {
      log.info(`Spawning ${ids.length} workers...`);
      log.blank();
    }
  }
  const count = ids.length;

  let exits: { results: WorkerExit[]; timedOut: boolean; stopped: boolean } = { results: [], timedOut: false, stopped: false };
  try {
    if (count > 0) exits = await runWorkers(ids, cycleId, options, log, started, running, sizing.inFlight, pending);
  } finally {
    if (config.globalMaxWorkers !== null && count > 0) await store.releaseWorkerSlots(ids).catch(() => undefined);
  }

  const succeeded = exits.results.filter((r) => r.exitCode === 0).length;
  const durationMs = Date.now() - started;
  const exitCode = cycleExitCode(exits.results, exits.timedOut);
  const result: CycleResult = {
    cycleId,
    pending,
    workersSpawned: count,
    workersSucceeded: succeeded,
    workersFailed: count - succeeded,
    recovered,
    durationMs,
    exitCode,
    stopped: exits.stopped,
    posts: cyclePosts(exits.results),
  };
  logSummary(log, result, exits.results);

  const runs: WorkerRun[] = exits.results.map((r) => ({
    workerId: r.workerId,
    startedAt: r.startedAt,
    finishedAt: r.finishedAt,
    exitCode: r.exitCode,
    signal: r.signal,
    published: r.report?.published ?? 0,
    retried: r.report?.retried ?? 0,
    failed: r.report?.failed ?? 0,
  }));
  try {
    await store.finishCycle(cycleId, result, runs);
  } catch (e) {
    // The database failed during the cycle (a restart, say): try once more, a little
    // later, so the cycle's record is not lost; the cycle still exits 1.
    log.error(`✗ Database error while recording the cycle: ${errorMessage(e)}`);
    const failed = { ...result, exitCode: result.exitCode === EXIT.ok ? EXIT.error : result.exitCode };
    await new Promise((resolve) => setTimeout(resolve, FINISH_RETRY_MS));
    await store.finishCycle(cycleId, failed, runs).then(
      () => log.info('Cycle recorded on the second try'),
      (again: unknown) => log.error(`✗ Cycle not recorded: ${errorMessage(again)}`),
    );
    return failed;
  }
  return result;
}

async function runWorkers(
  ids: readonly string[],
  cycleId: number,
  options: CycleOptions,
  log: Logger,
  started: number,
  running: Set<string>,
  inFlight: number | null,
  pending: number,
): Promise<{ results: WorkerExit[]; timedOut: boolean; stopped: boolean }> {
  const { config } = options;
  // deadline sizing: each worker keeps `inFlight` posts in flight and claims up to that many at once
  const env = { ...process.env, ...configToEnv(sizedConfig(config, inFlight)) };
  // Each worker's first claims are limited to its share of what is due, until all have
  // claimed: a worker that starts first does not take the posts of those still starting.
  const share = ids.length > 1 ? Math.max(1, Math.ceil(pending / ids.length)) : null;
  const workers: WorkerHandle[] = [];
  for (const workerId of ids) {
    log.info(`Spawning worker: ${workerId}`, { workerId });
    running.add(workerId);
    workers.push(spawnWorker(workerId, cycleId, env, options.workerEntry, config.globalMaxWorkers !== null, { share }));
  }
  if (share !== null) liftSharesOnceAllClaimed(workers);
  log.blank();

  const results: WorkerExit[] = [];
  const reported = Promise.all(
    workers.map(async (w) => {
      const exit = await w.exited;
      running.delete(w.workerId);
      results.push(exit);
      logWorkerExit(log, exit);
      return exit;
    }),
  );

  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const stop = new Promise<'timeout' | 'signal'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), Math.max(0, config.timeoutMs - (Date.now() - started)));
    onAbort = () => resolve('signal');
    if (options.signal?.aborted === true) onAbort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
  });
  const first = await Promise.race([reported.then(() => 'done' as const), stop]);
  clearTimeout(timer);
  if (onAbort !== undefined) options.signal?.removeEventListener('abort', onAbort);

  if (first !== 'done') {
    const running = workers.filter((w) => w.process.exitCode === null && w.process.signalCode === null);
    if (first === 'timeout') {
      log.error(`Exceeded ${config.timeoutMs}ms timeout, stopping ${running.length} workers (SIGTERM, SIGKILL after ${config.killGraceMs}ms)`);
    } else {
      log.warn(`Stop requested, stopping ${running.length} workers (SIGTERM, SIGKILL after ${config.killGraceMs}ms)`);
    }
    await stopWorkers(running, config.killGraceMs);
    await reported;
  }
  const order = new Map(workers.map((w, i) => [w.workerId, i]));
  results.sort((a, b) => (order.get(a.workerId) ?? 0) - (order.get(b.workerId) ?? 0));
  return { results, timedOut: first === 'timeout', stopped: first === 'signal' };
}

function logWorkerExit(log: Logger, exit: WorkerExit): void {
  const fields = { workerId: exit.workerId, exitCode: exit.exitCode, signal: exit.signal, durationMs: exit.durationMs };
  if (exit.exitCode === 0) {
    log.info(`Worker ${exit.workerId} completed successfully (${exit.durationMs}ms)`, fields);
  } else if (exit.signal !== null) {
    log.error(`Worker ${exit.workerId} was killed by ${exit.signal} (${exit.durationMs}ms)`, fields);
  } else if (exit.exitCode === EXIT.timeout) {
    log.warn(`Worker ${exit.workerId} timed out with code 2 (${exit.durationMs}ms)`, fields);
  } else {
    log.error(`Worker ${exit.workerId} failed with code ${String(exit.exitCode)} (${exit.durationMs}ms)`, fields);
  }
}

/** 2 when the cycle's guard fired or a worker timed out, 1 when a worker failed, else 0. */
export function cycleExitCode(results: readonly WorkerExit[], timedOut: boolean): ExitCode {
  if (timedOut) return EXIT.timeout;
  if (results.some((r) => r.signal !== null || (r.exitCode !== 0 && r.exitCode !== EXIT.timeout))) return EXIT.error;
  if (results.some((r) => r.exitCode === EXIT.timeout)) return EXIT.timeout;
  return EXIT.ok;
}
