import { configToEnv, type Config } from '../config.ts';
import { raiseAlerts } from '../alerts/raise.ts';
import { cycleExitCode, workerIds } from '../dispatcher/cycle.ts';
import { stopWorkers, type WorkerExit } from '../dispatcher/spawn.ts';
import { cyclePosts, logSummary } from '../dispatcher/summary.ts';
import { createLogger, errorMessage, withFields, type Logger } from '../log.ts';
import { workerCount } from '../scaling.ts';
import { openStore } from '../store/open.ts';
import type { DueWatch, Store } from '../store/store.ts';
import type { CycleResult, WorkerRun } from '../types.ts';
import { makeReadiness } from './readiness.ts';
import { makeResidents, type Resident } from './residents.ts';

/**
 * `daemon --precise`: the resident dispatcher. It knows the next due time (Store.nextDue)
 * and sleeps until just before it, woken early when posts change (Store.watchDue) and
 * every SAFETY_MS in any case. Then one batch, recorded as one cycle:
 *
 *   recover expired leases, raise alerts, count what is due by then and SOON_MS after,
 *   size with the seed's formula, take idle resident workers and spawn the rest (at most
 *   MAX_WORKERS live, each with a GLOBAL_MAX_WORKERS slot when that is set), hand them
 *   the due time: they claim at that moment and while posts are due, report, and stay
 *   WORKER_IDLE_MS for what comes next. The cycle ends when every worker of the batch
 *   has reported (or TIMEOUT_MS after the due time, when they are stopped).
 *
 * The host's cycle lock is held for the daemon's whole life (a `cron` on the same host
 * finds it taken and exits), renewed with the live workers' slots every third of
 * LEASE_MS. A database that fails is logged and re-checked every SAFETY_MS; the daemon
 * never exits for it. Times: run_at is on the database's clock, the sleep on this host's;
 * they are assumed to agree (NTP), as leases already do.
 */
export interface PreciseOptions {
  readonly config: Config;
  /** first signal: stop claiming, finish in flight within the grace, exit */
  readonly stop: AbortSignal;
  /** second signal: workers abort what is in flight */
  readonly abort: AbortSignal;
  readonly workerEntry?: string;
}

/** The safety re-check of the next due time (a lost notification), and the retry after a database error. */
export const SAFETY_MS = 3_000;
/** Posts falling due this soon after the batch's due time count when sizing it (they will be claimed by it). */
export const SOON_MS = 1_000;
const RULE = '========================================';

export async function runPrecise(options: PreciseOptions): Promise<void> {
  const { config, stop } = options;
  const cron = createLogger('CRON', config);
  const log = createLogger('DISPATCHER', config);
  const readiness = makeReadiness();

  // ---- sleeping: until a time, a change of the due posts, or a stop
  let wakeSleep: (() => void) | null = null;
  let changed = false;
  const wake = () => {
    const w = wakeSleep;
    wakeSleep = null;
    w?.();
  };
  stop.addEventListener('abort', wake, { once: true });
  const sleepUntil = (at: number): Promise<void> => {
    if (stop.aborted || changed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => wake(), Math.max(0, at - Date.now()));
      wakeSleep = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  };

  cron.info(
    `Precise scheduler started at ${new Date().toISOString()} on ${config.host}: each post at its run_at, ` +
      `workers started ahead and kept ${config.workerIdleMs}ms (WORKER_IDLE_MS) after their last post`,
  );

  // ---- the database: opened (and re-opened) until it answers
  let store: Store | null = null;
  // set in callbacks too: the checker must not narrow it
  let dbDown = false as boolean;
  const down = (e: unknown, doing: string) => {
    if (!dbDown) cron.error(`✗ Database error while ${doing} (${config.databaseLabel}): ${errorMessage(e)}; re-checking every ${SAFETY_MS}ms`);
    dbDown = true;
  };
  while (store === null && !stop.aborted) {
    try {
      store = await openStore(config.database, { dbTimeoutMs: config.dbTimeoutMs });
      await store.migrate();
    } catch (e) {
      await store?.close().catch(() => undefined);
      store = null;
      down(e, 'connecting');
      await sleepUntil(Date.now() + SAFETY_MS);
    }
  }
  if (store === null) return;
  const db: Store = store;

  // ---- resident workers, and the coordination rows they and this daemon hold
  const env = { ...process.env, ...configToEnv(config) };
  const global = config.globalMaxWorkers !== null;
  const residents = makeResidents({
    env,
    ...(options.workerEntry === undefined ? {} : { entry: options.workerEntry }),
    log,
    readiness,
    onExit: (r, exit) => {
      if (r.queued === 0) {
        const how = exit.signal !== null ? `killed by ${exit.signal}` : `exited with code ${String(exit.exitCode)}`;
        const line = `Worker ${r.workerId} ${how} (${exit.durationMs}ms resident)`;
        if (exit.exitCode === 0) log.info(line, { workerId: r.workerId });
        else log.warn(line, { workerId: r.workerId });
      }
      if (global) void db.releaseWorkerSlots([r.workerId]).catch(() => undefined);
      wake();
    },
  });
  let locked = false;
  let renewing = false;
  const coordination = setInterval(() => {
    if (renewing || !locked) return;
    renewing = true;
    const workers = global ? residents.live().map((r) => r.workerId) : [];
    Promise.all([
      db.renewCycleLock(config.host, config.leaseMs).then((ours) => {
        if (ours || !locked) return;
        locked = false;
        cron.error(`✗ Cycle lock of ${config.host} lost (it expired and another dispatcher may hold it): no new batch until it is taken again`);
      }),
      db.renewWorkerSlots(workers, config.leaseMs),
    ])
      .catch((e: unknown) => cron.warn(`Renewing the cycle lock and worker slots failed: ${errorMessage(e)}`))
      .finally(() => (renewing = false));
  }, Math.max(20, Math.floor(config.leaseMs / 3)));

  /**
   * Housekeeping, every SAFETY_MS rather than per batch (keeps a batch to a few round
   * trips): leases that expired go back (a worker died), alerts are raised.
   */
  let housekeptAt = 0;
  let recoveredSince = 0;
  const housekeep = async (): Promise<void> => {
    if (Date.now() - housekeptAt < SAFETY_MS) return;
    housekeptAt = Date.now();
    const back = await db.recoverExpired(config.maxAttempts);
    recoveredSince += back.length;
    if (back.length > 0) {
      const held = back.filter((r) => r.status === 'unknown').length;
      log.warn(`Recovered ${back.length} posts whose worker died (lease expired): ${back.length - held} back to pending` + (held === 0 ? '' : `, ${held} held as unknown (see status)`));
    }
    await raiseAlerts(db, config, log).catch((e: unknown) => log.error(`✗ Alerts not scheduled: ${errorMessage(e)}`));
  };
  let watch: DueWatch | null = null;
  let lockWaitLogged = false;
  let lastLogged: number | null | undefined = undefined;
  /** after a batch that claimed nothing for a due time, wait before trying it again */
  let emptyAt = null as number | null;
  let emptyBackoff = 0;
  /** batches handed out and not yet reported (each finishes its cycle record) */
  const inflight = new Set<Promise<void>>();
  /** the latest due time handed out while batches are in flight: the next one is looked for after it */
  let handedUpTo = null as number | null;
  /** workers told to stop (SIGTERM once: a second one aborts their publishes) */
  const signalled = new WeakSet<Resident>();
  const terminate = (list: readonly Resident[]) => {
    const fresh = list.filter((r) => !signalled.has(r));
    for (const r of fresh) signalled.add(r);
    return stopWorkers(
      fresh.map((r) => r.handle),
      config.killGraceMs,
    );
  };
  // a second signal: every worker aborts what it has in flight
  options.abort.addEventListener(
    'abort',
    () => {
      for (const r of residents.live()) r.handle.process.kill('SIGTERM');
    },
    { once: true },
  );

  try {
    while (!stop.aborted) {
      changed = false;
      try {
        if (watch === null) {
          watch = await db.watchDue(() => {
            changed = true;
            wake();
          });
        }
        if (!locked) {
          locked = await db.tryLockCycle(config.host, config.leaseMs);
          if (!locked) {
            if (!lockWaitLogged) cron.info(`Cycle lock of ${config.host} held (a cron cycle or another daemon): waiting for it`);
            lockWaitLogged = true;
            if (dbDown) cron.info('✓ Database answers again');
            dbDown = false;
            await sleepUntil(Date.now() + SAFETY_MS);
            continue;
          }
          lockWaitLogged = false;
        }
        await housekeep();
        const next = await db.nextDue(handedUpTo === null ? undefined : new Date(handedUpTo));
        if (dbDown) cron.info('✓ Database answers again');
        dbDown = false;
        const now = Date.now();
        const lead = readiness.leadMs();
        const at = next?.getTime() ?? null;
        // idle workers leave after WORKER_IDLE_MS unless work is about to come
        let idleCheck = Infinity;
        for (const r of residents.idle()) {
          const until = r.idleSince + config.workerIdleMs;
          if (until <= now && (at === null || at - now > lead)) residents.retire(r);
          else idleCheck = Math.min(idleCheck, Math.max(until, now + 50));
        }
        if (at === null || at - now > lead) {
          if (at !== lastLogged && inflight.size === 0) {
            cron.info(at === null ? 'No post pending: sleeping' : `Next post due at ${new Date(at).toISOString()} (in ${at - now}ms)`);
            lastLogged = at;
          }
          await sleepUntil(Math.min(at === null ? Infinity : at - lead, now + SAFETY_MS, idleCheck));
          continue;
        }
        lastLogged = undefined;
        if (at === emptyAt && now < at + emptyBackoff) {
          await sleepUntil(Math.min(at + emptyBackoff, now + SAFETY_MS));
          continue;
        }
        const handed = await batch(at);
        if (handed === null) {
          // claimed meanwhile: look again shortly
          await sleepUntil(Date.now() + 10);
          continue;
        }
        const completion = handed.completion;
        handedUpTo = Math.max(handedUpTo ?? at, at);
        const tracked: Promise<void> = completion.then((claimed) => {
          inflight.delete(tracked);
          if (inflight.size === 0) handedUpTo = null;
          if (claimed === 0) {
            emptyBackoff = emptyAt === at ? Math.min(SAFETY_MS, emptyBackoff * 2) : 100;
            emptyAt = at;
          } else if (emptyAt === at) emptyAt = null;
          wake();
        });
        inflight.add(tracked);
      } catch (e) {
        // the watch is opened again once the database answers
        await watch?.close().catch(() => undefined);
        watch = null;
        down(e, 'looking for due posts');
        await sleepUntil(Date.now() + SAFETY_MS);
      }
    }
  } finally {
    clearInterval(coordination);
    const live = residents.live();
    const busy = live.filter((r) => r.queued > 0).length;
    if (busy > 0) log.warn(`Stop requested, stopping ${busy} workers (SIGTERM, SIGKILL after ${config.killGraceMs}ms)`);
    else if (live.length > 0) cron.info(`Stopping ${live.length} idle workers`);
    await terminate(live).catch(() => undefined);
    await Promise.all(inflight);
    await watch?.close().catch(() => undefined);
    if (locked) await db.unlockCycle(config.host).catch(() => undefined);
    await db.close().catch(() => undefined);
    cron.info('Precise scheduler stopped');
  }

  /**
   * Hands the posts due at `at` to workers, as one cycle: idle resident workers, new
   * ones spawned now (ahead of `at`), and, when the seed's number is not reached within
   * MAX_WORKERS, busy ones (they take it after their batch). Resolves, once handed out,
   * with the batch's completion (the posts its workers claimed); null when nothing is due.
   */
  async function batch(at: number): Promise<{ completion: Promise<number> } | null> {
    const started = Date.now();
    const pending = await db.countDue(Math.max(0, at - Date.now()) + SOON_MS);
    // nothing: claimed meanwhile (by another host, or by a worker still claiming)
    if (pending === 0) return null;
    const recovered = recoveredSince;
    recoveredSince = 0;
    const cycleId = await db.startCycle(config.host);
    const clog = withFields(log, { cycleId });
    clog.blank();
    clog.info(RULE);
    clog.info(`Dispatch cycle started at ${new Date(started).toISOString()} (precise: posts due at ${new Date(at).toISOString()})`);
    clog.info(RULE);
    clog.blank();
    clog.info(`Pending posts: ${pending} (due by then or within ${SOON_MS}ms after)`);
    const wanted = workerCount(pending, config);
    clog.info(`Calculated worker count: ${wanted} (pending=${pending}, batch=${config.batchSize}, max=${config.maxWorkers})`);

    const taking: Resident[] = residents.idle().slice(0, wanted);
    const room = Math.min(wanted - taking.length, config.maxWorkers - residents.live().length);
    let ids = workerIds(Math.max(0, room));
    if (global && ids.length > 0) {
      const asked = ids.length;
      try {
        ids = await db.acquireWorkerSlots(config.host, ids, config.globalMaxWorkers, config.leaseMs);
      } catch (e) {
        clog.error(`✗ Database error while taking worker slots: ${errorMessage(e)}`);
        ids = [];
      }
      if (ids.length < asked) clog.warn(`Global worker cap ${config.globalMaxWorkers}: ${ids.length} of ${asked} slots free (other hosts hold the rest)`);
    }
    for (const r of taking) clog.info(`Resident worker ${r.workerId} takes part`, { workerId: r.workerId });
    if (ids.length > 0) clog.info(`Spawning ${ids.length} workers...`);
    for (const id of ids) {
      clog.info(`Spawning worker: ${id}`, { workerId: id });
      taking.push(residents.spawn(id, cycleId, global));
    }
    // short of the number: busy workers take it after what they have
    for (const r of residents.busy()) {
      if (taking.length >= wanted) break;
      if (!taking.includes(r)) {
        clog.info(`Resident worker ${r.workerId} takes part after its batch`, { workerId: r.workerId });
        taking.push(r);
      }
    }
    clog.blank();
    if (taking.length === 0) {
      clog.warn('No worker available (the worker caps are reached); the posts wait for a worker to be free');
      await db.finishCycle(cycleId, emptyResult(cycleId, pending, recovered, started), []).catch(() => undefined);
      return { completion: Promise.resolve(0) };
    }
    const reported = Promise.all(taking.map((r) => residents.dispatch(r, at, cycleId)));
    return { completion: finish(at, cycleId, clog, started, pending, recovered, taking, reported) };
  }

  /** Waits for a batch's workers (stopping them at the cycle's guard, TIMEOUT_MS after the due time), then records its cycle. */
  async function finish(
    at: number,
    cycleId: number,
    clog: Logger,
    started: number,
    pending: number,
    recovered: number,
    taking: readonly Resident[],
    reported: Promise<WorkerExit[]>,
  ): Promise<number> {
    let timer: NodeJS.Timeout | undefined;
    const ended = await Promise.race([
      reported.then(() => 'done' as const),
      new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), Math.max(0, at + config.timeoutMs - Date.now())))),
    ]);
    clearTimeout(timer);
    if (ended === 'timeout') {
      const busy = taking.filter((r) => r.handle.process.exitCode === null && r.handle.process.signalCode === null);
      clog.error(`Exceeded ${config.timeoutMs}ms timeout, stopping ${busy.length} workers (SIGTERM, SIGKILL after ${config.killGraceMs}ms)`);
      await terminate(busy);
    }
    const exits = await reported;
    for (const exit of exits) logBatch(clog, exit);
    const succeeded = exits.filter((e) => e.exitCode === 0).length;
    const result: CycleResult = {
      cycleId,
      pending,
      workersSpawned: exits.length,
      workersSucceeded: succeeded,
      workersFailed: exits.length - succeeded,
      recovered,
      durationMs: Date.now() - started,
      exitCode: cycleExitCode(exits, ended === 'timeout'),
      stopped: stop.aborted,
      posts: cyclePosts(exits),
    };
    logSummary(clog, result, exits);
    const runs: WorkerRun[] = exits.map((r) => ({
      workerId: r.workerId,
      startedAt: r.startedAt,
      finishedAt: r.finishedAt,
      exitCode: r.exitCode,
      signal: r.signal,
      published: r.report?.published ?? 0,
      retried: r.report?.retried ?? 0,
      failed: r.report?.failed ?? 0,
    }));
    await db.finishCycle(cycleId, result, runs).catch((e: unknown) => clog.error(`✗ Cycle not recorded: ${errorMessage(e)}`));
    return exits.reduce((n, e) => n + (e.report?.claimed ?? 0), 0);
  }
}

function emptyResult(cycleId: number, pending: number, recovered: number, started: number): CycleResult {
  return {
    cycleId,
    pending,
    workersSpawned: 0,
    workersSucceeded: 0,
    workersFailed: 0,
    recovered,
    durationMs: Date.now() - started,
    exitCode: 0,
    stopped: false,
    posts: { published: 0, retried: 0, failed: 0, held: 0 },
  };
}

function logBatch(log: Logger, exit: WorkerExit): void {
  const fields = { workerId: exit.workerId, exitCode: exit.exitCode, signal: exit.signal, durationMs: exit.durationMs };
  if (exit.exitCode === 0) log.info(`Worker ${exit.workerId} completed successfully (${exit.durationMs}ms)`, fields);
  else if (exit.signal !== null) log.error(`Worker ${exit.workerId} was killed by ${exit.signal} (${exit.durationMs}ms)`, fields);
  else log.warn(`Worker ${exit.workerId} ended its batch with code ${String(exit.exitCode)} (${exit.durationMs}ms)`, fields);
}
