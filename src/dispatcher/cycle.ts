import { configToEnv, type Config } from '../config.ts';
import { createLogger, errorMessage, type Logger } from '../log.ts';
import { workerCount } from '../scaling.ts';
import { openStore } from '../store/open.ts';
import type { Store } from '../store/store.ts';
import { EXIT, type CycleResult, type ExitCode, type WorkerRun } from '../types.ts';
import { spawnWorker, stopWorkers, type WorkerExit, type WorkerHandle } from './spawn.ts';
import { logSummary } from './summary.ts';

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
/** A cycle lock outlives the cycle's guard and kill grace by this much at most. */
const LOCK_MARGIN_MS = 5_000;

/** The result of a cycle that ended before spawning anything. */
function earlyResult(started: number, exitCode: ExitCode, recovered = 0): CycleResult {
  return { pending: 0, workersSpawned: 0, workersSucceeded: 0, workersFailed: 0, recovered, durationMs: Date.now() - started, exitCode };
}

export async function runCycle(options: CycleOptions): Promise<CycleResult> {
  const { config } = options;
  const log = options.log ?? createLogger('DISPATCHER', config.logFormat);
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
      store ??= await openStore(config.database);
      await store.migrate();
      await store.ping();
    } catch (e) {
      log.error(`✗ Database unreachable (${config.databaseLabel}): ${errorMessage(e)}`);
      return earlyResult(started, EXIT.error);
    }
    log.info('✓ Database connection verified');

    // One cycle at a time per host: system cron fires every minute whatever happens.
    let locked: boolean;
    try {
      locked = await store.tryLockCycle(config.host, config.timeoutMs + config.killGraceMs + LOCK_MARGIN_MS);
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

/** The cycle proper, under the host's cycle lock. */
async function dispatch(store: Store, options: CycleOptions, log: Logger, started: number): Promise<CycleResult> {
  const { config } = options;
  let pending: number;
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
        log.warn(`  post ${r.id} from ${r.workerId ?? '(unknown worker)'} after attempt ${r.attempts} -> ${r.status}`);
      }
      if (back.length > 20) log.warn(`  ... and ${back.length - 20} more`);
    }
    pending = await store.countDue();
    cycleId = await store.startCycle(new Date(started), config.host);
  } catch (e) {
    log.error(`✗ Database error before spawning workers: ${errorMessage(e)}`);
    return earlyResult(started, EXIT.error);
  }

  log.info(`Pending posts: ${pending}`);
  const wanted = workerCount(pending, config);
  let count = wanted;
  if (wanted === 0) {
    log.info('No pending posts, skipping worker spawn');
  } else {
    log.info(`Calculated worker count: ${wanted} (pending=${pending}, batch=${config.batchSize}, max=${config.maxWorkers})`);
    if (config.globalMaxWorkers !== null) {
      try {
        count = await store.acquireWorkerSlots(config.host, wanted, config.globalMaxWorkers, config.timeoutMs + config.killGraceMs + LOCK_MARGIN_MS);
      } catch (e) {
        log.error(`✗ Database error while taking worker slots: ${errorMessage(e)}`);
        count = 0;
      }
      if (count < wanted) {
        log.warn(
          `Global worker cap ${config.globalMaxWorkers}: ${count} of ${wanted} slots free (other hosts hold the rest)` +
            (count === 0 ? '; due posts wait for the next cycle' : ''),
        );
      }
    }
    if (count > 0) {
      log.info(`Spawning ${count} workers...`);
      log.blank();
    }
  }

  let exits: { results: WorkerExit[]; timedOut: boolean } = { results: [], timedOut: false };
  try {
    if (count > 0) exits = await runWorkers(count, cycleId, options, log, started);
  } finally {
    if (config.globalMaxWorkers !== null && count > 0) await store.releaseWorkerSlots().catch(() => undefined);
  }

  const succeeded = exits.results.filter((r) => r.exitCode === 0).length;
  const durationMs = Date.now() - started;
  const exitCode = cycleExitCode(exits.results, exits.timedOut);
  const result: CycleResult = {
    pending,
    workersSpawned: count,
    workersSucceeded: succeeded,
    workersFailed: count - succeeded,
    recovered,
    durationMs,
    exitCode,
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
  count: number,
  cycleId: number,
  options: CycleOptions,
  log: Logger,
  started: number,
): Promise<{ results: WorkerExit[]; timedOut: boolean }> {
  const { config } = options;
  const env = { ...process.env, ...configToEnv(config) };
  const stamp = Date.now();
  const workers: WorkerHandle[] = [];
  for (let n = 1; n <= count; n++) {
    const workerId = `worker-${stamp}-${n}`;
    log.info(`Spawning worker: ${workerId}`);
    workers.push(spawnWorker(workerId, cycleId, env, options.workerEntry));
  }
  log.blank();

  const results: WorkerExit[] = [];
  const reported = Promise.all(
    workers.map(async (w) => {
      const exit = await w.exited;
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
  return { results, timedOut: first === 'timeout' };
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
