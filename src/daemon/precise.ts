import { configToEnv, type Config } from '../config.ts';
import { raiseAlerts } from '../alerts/raise.ts';
import { cycleExitCode, workerIds } from '../dispatcher/cycle.ts';
import { readDueLoad, sizeCycle } from '../dispatcher/sizing.ts';
import { stopWorkers, type WorkerExit } from '../dispatcher/spawn.ts';
import { cyclePosts, logSummary, workerRuns } from '../dispatcher/summary.ts';
import { createLogger, errorMessage, withFields, type Logger } from '../log.ts';
import { openStore } from '../store/open.ts';
import type { DueWatch, Store } from '../store/store.ts';
import type { CycleResult } from '../types.ts';
import { makeReadiness } from './readiness.ts';
import { makeResidents, type Resident } from './residents.ts';

/**
 * `daemon --precise`: the resident dispatcher. It knows the next due time (Store.nextDue)
 * and sleeps until just before it, woken early when posts change (Store.watchDue) and
 * every SAFETY_MS in any case. Then one batch, recorded as one cycle:
 *
 *   recover expired leases, raise alerts, count what is due by then and SOON_MS after,
 *   size as a cron cycle does (WORKER_SIZING: the seed's formula, or deadline-aware, with
 *   the same function and log line, src/dispatcher/sizing.ts), take idle resident
 *   workers and spawn the rest (at most MAX_WORKERS live, each with a GLOBAL_MAX_WORKERS
 *   slot when that is set), hand them the due time and the posts each keeps in flight:
 *   they claim at that moment and while posts are due, report, and stay WORKER_IDLE_MS
 *   for what comes next. The cycle ends when every worker of the batch
 *   has reported (or TIMEOUT_MS after the due time, when they are stopped).
 *
 * The host's cycle lock is held for the daemon's whole life (a `cron` on the same host
 * finds it taken and exits), renewed every third of LEASE_MS, and the live workers'
 * slots with it whatever the lock's state. A worker whose slot was not renewed (it
 * expired and may be another's) is told to exit. When the lock is lost, or not renewed
 * for half of LEASE_MS (it may lapse, and a cron on this host take it), the idle
 * workers are told to exit and no batch is handed out until the lock is held again:
 * the host never runs more than MAX_WORKERS. A database that fails is logged and
 * re-checked every SAFETY_MS; the daemon never exits for it. Times: run_at is on the
 * database's clock; nextDue gives its distance from the database's now, and the daemon
 * and its workers keep to this host's clock with that offset (measured at each nextDue).
 *
 * A post that becomes pending with a run_at earlier than the due
 * times already handed out (a retry while batches are in flight) is found by the full
 * look every SAFETY_MS: it waits at most about twice SAFETY_MS.
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
    maxHeapMb: config.workerMaxHeapMb,
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
  /** when (this host's clock) the last take or renewal of the lock that succeeded was sent */
  let lockRenewedAt = 0;
  /**
   * the lock is ours and renewed within half of LEASE_MS: the other half is left for
   * idle workers to exit before it could lapse and a cron on this host take it
   */
  const lockHeld = () => locked && Date.now() - lockRenewedAt < config.leaseMs / 2;
  let staleLogged = false;
  const retireIdle = () => {
    for (const r of residents.idle()) residents.retire(r);
  };
  let renewing = false;
  let renewSentAt = 0;
  // renewals every third of LEASE_MS; the lock's age checked twice as often
  const tickMs = Math.max(20, Math.floor(config.leaseMs / 6));
  const coordination = setInterval(() => {
    // the lock may lapse: a cron on this host could take it and spawn MAX_WORKERS of its own
    if (!lockHeld()) {
      if (locked && !staleLogged) cron.warn(`Cycle lock of ${config.host} not renewed for ${Date.now() - lockRenewedAt}ms: idle workers told to exit, no new batch until it is`);
      staleLogged = true;
      retireIdle();
    } else staleLogged = false;
    if (renewing || Date.now() - renewSentAt < config.leaseMs / 3 - tickMs / 2) return;
    renewing = true;
    const sentAt = Date.now();
    renewSentAt = sentAt;
    const workers = global ? residents.live().map((r) => r.workerId) : [];
    Promise.all([
      !locked
        ? undefined
        : db.renewCycleLock(config.host, config.leaseMs).then((ours) => {
            if (ours) lockRenewedAt = Math.max(lockRenewedAt, sentAt);
            if (ours || !locked) return;
            locked = false;
            cron.error(`✗ Cycle lock of ${config.host} lost (it expired and another dispatcher may hold it): idle workers told to exit, no new batch until it is taken again`);
            retireIdle();
          }),
      // whatever the lock's state: a slot not renewed has expired and may be another host's
      db.renewWorkerSlots(workers, config.leaseMs).then((kept) => {
        const ok = new Set(kept);
        for (const r of residents.live()) {
          if (!workers.includes(r.workerId) || ok.has(r.workerId) || r.retiring) continue;
          log.warn(`Worker ${r.workerId}: its slot (GLOBAL_MAX_WORKERS) expired and may be taken`, { workerId: r.workerId });
          residents.retire(r);
        }
      }),
    ])
      .catch((e: unknown) => cron.warn(`Renewing the cycle lock and worker slots failed: ${errorMessage(e)}`))
      .finally(() => (renewing = false));
  }, tickMs);

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
  /** the latest due time (run_at, the database's clock) handed out while batches are in flight: the next one is looked for after it */
  let handedUpTo = null as number | null;
  /** when the last look for the next due time without `after` was (every SAFETY_MS at least) */
  let fullLookAt = 0;
  /** the next due time on this host's clock, as last read (idle workers stay for it) */
  let dueAt = null as number | null;
  /** idle workers past WORKER_IDLE_MS are told to exit, unless the lock is held and work is due within the lead; returns when to look again */
  const retireIdleAfter = (now: number): number => {
    let check = Infinity;
    const soon = lockHeld() && !dbDown && dueAt !== null && dueAt - now <= readiness.leadMs();
    for (const r of residents.idle()) {
      const until = r.idleSince + config.workerIdleMs;
      if (until <= now && !soon) residents.retire(r);
      else check = Math.min(check, Math.max(until, now + 50));
    }
    return check;
  };
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
      // idle workers leave after WORKER_IDLE_MS unless work is about to come (as last
      // read), before any database call: a database that does not answer keeps none
      let idleCheck = retireIdleAfter(Date.now());
      try {
        if (watch === null) {
          watch = await db.watchDue(() => {
            changed = true;
            wake();
          });
        }
        if (!locked) {
          retireIdle();
          const sentAt = Date.now();
          locked = await db.tryLockCycle(config.host, config.leaseMs);
          if (locked) lockRenewedAt = sentAt;
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
        // after the due times handed out, but every SAFETY_MS from the start: a post that
        // became pending with an earlier run_at (a retry, a release) meanwhile is found
        const full = handedUpTo === null || Date.now() - fullLookAt >= SAFETY_MS;
        let asked = Date.now();
        let next = await db.nextDue(full ? undefined : new Date(handedUpTo ?? 0));
        if (full) fullLookAt = Date.now();
        // a due time already handed out, due for less than SAFETY_MS: its batch is still
        // claiming it, so the next after it (due for longer: it was skipped, a batch for it)
        if (full && next !== null && handedUpTo !== null && next.runAt.getTime() <= handedUpTo && next.inMs > -SAFETY_MS) {
          asked = Date.now();
          next = await db.nextDue(new Date(handedUpTo));
        }
        const now = Date.now();
        if (dbDown) cron.info('✓ Database answers again');
        dbDown = false;
        const lead = readiness.leadMs();
        // run_at on the database's clock; `due` the same moment on this host's, never
        // compared with run_at (the database's now is run_at - inMs, read between asked and now)
        const at = next?.runAt.getTime() ?? null;
        const due = next === null ? null : Math.round((asked + now) / 2) + next.inMs;
        dueAt = due;
        idleCheck = retireIdleAfter(now);
        if (due === null || at === null || due - now > lead) {
          if (at !== lastLogged && inflight.size === 0) {
            cron.info(at === null || due === null ? 'No post pending: sleeping' : `Next post due at ${new Date(at).toISOString()} (in ${due - now}ms)`);
            lastLogged = at;
          }
          await sleepUntil(Math.min(due === null ? Infinity : due - lead, now + SAFETY_MS, idleCheck));
          continue;
        }
        lastLogged = undefined;
        if (at === emptyAt && now < due + emptyBackoff) {
          await sleepUntil(Math.min(due + emptyBackoff, now + SAFETY_MS));
          continue;
        }
        // the lock not renewed lately: no batch until it is (the idle workers have gone)
        if (!lockHeld()) {
          await sleepUntil(now + Math.max(20, Math.floor(config.leaseMs / 6)));
          continue;
        }
        // the latest the due time can be on this host's clock (the database read its now no
        // later than `now`; inMs is rounded, and run_at cut to the millisecond here): a
        // worker holding a post claimed early sends it no sooner than this, never before run_at
        const handed = await batch(at, due, now + (next?.inMs ?? 0) + 2 - at);
        if (handed === null) {
          // claimed meanwhile: look again shortly
          await sleepUntil(Date.now() + 10);
          continue;
        }
        if (handed === 'retiring') {
          // a worker's exit wakes this sleep
          await sleepUntil(Date.now() + SAFETY_MS);
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
   * Hands the posts due at `at` (run_at; `due` the same moment on this host's clock) to
   * workers, as one cycle: idle resident workers, new ones spawned now (ahead of it), and,
   * when the seed's number is not reached within MAX_WORKERS, busy ones (they take it
   * after their batch). Resolves, once handed out, with the batch's completion (the posts
   * its workers claimed); null when nothing is due; 'retiring' when workers told to exit
   * hold every place (wait for their exit).
   */
  async function batch(at: number, due: number, clockOffsetMs: number): Promise<{ completion: Promise<number> } | null | 'retiring'> {
    const started = Date.now();
    const load = await readDueLoad(db, config, Math.max(0, due - Date.now()) + SOON_MS);
    const pending = load.pending;
    // nothing: claimed meanwhile (by another host, or by a worker still claiming)
    if (pending === 0) return null;
    // every place held, by workers told to exit among them (idle, or over
    // WORKER_MAX_HEAP_MB) and none free to take part: their exit wakes the loop, and a
    // worker is spawned then, rather than a cycle recorded that no worker could take
    const live = residents.live();
    if (live.length >= config.maxWorkers && live.some((r) => r.retiring) && residents.idle().length === 0 && residents.busy().length === 0) return 'retiring';
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
    const sizing = sizeCycle(load, config);
    const wanted = sizing.workers;
    clog.info(sizing.reason, { sizing: config.workerSizing, workers: wanted, inFlight: sizing.inFlight ?? config.workerConcurrency });

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
    const runs = taking.map((r): BatchRun => {
      let onStart: () => void = () => undefined;
      const run: BatchRun = { resident: r, startedAt: null, started: new Promise<void>((resolve) => (onStart = resolve)), result: Promise.resolve(null) };
      run.result = residents.dispatch(r, { at: due, cycleId, inFlight: sizing.inFlight, clockOffsetMs }, (t) => {
        run.startedAt = t;
        onStart();
      });
      return run;
    });
    return { completion: finish({ due, cycleId, clog, started, pending, recovered, spawned: ids.length, runs }) };
  }

  /**
   * Stops one worker's batch if it runs past TIMEOUT_MS from its own start (from the due
   * time until it starts, unless it is still on an earlier batch: that batch's limit
   * covers it). A batch queued behind another is never stopped within its own budget.
   * Resolves true when it stopped the worker.
   */
  async function limit(run: BatchRun, cycleId: number, due: number): Promise<boolean> {
    const done = run.result.then(() => 'done' as const);
    const started = run.started.then(() => 'started' as const);
    for (;;) {
      if (run.startedAt === null && run.resident.cycles[0] !== cycleId) {
        // still on an earlier batch (or this one is over): that batch's limit covers it
        if ((await Promise.race([done, started])) === 'done') return false;
        continue;
      }
      const wait = (run.startedAt ?? due) + config.timeoutMs - Date.now();
      if (wait <= 0) {
        await terminate([run.resident]);
        return true;
      }
      let timer: NodeJS.Timeout | undefined;
      const time = new Promise<'time'>((resolve) => (timer = setTimeout(() => resolve('time'), wait)));
      // until it starts, its start moves the limit
      const ended = await Promise.race(run.startedAt === null ? [done, started, time] : [done, time]);
      clearTimeout(timer);
      if (ended === 'done') return false;
    }
  }

  /** Waits for a batch's workers (each stopped at its own limit), then records its cycle. */
  async function finish(b: {
    due: number;
    cycleId: number;
    clog: Logger;
    started: number;
    pending: number;
    recovered: number;
    spawned: number;
    runs: readonly BatchRun[];
  }): Promise<number> {
    const { cycleId, clog, started, pending, recovered } = b;
    const stopped = await Promise.all(b.runs.map((run) => limit(run, cycleId, b.due)));
    const timedOut = stopped.some((x) => x);
    if (timedOut) clog.error(`Exceeded ${config.timeoutMs}ms timeout, stopped ${stopped.filter((x) => x).length} workers (SIGTERM, SIGKILL after ${config.killGraceMs}ms)`);
    // a worker that ended before reaching this batch took no part in it
    const exits = (await Promise.all(b.runs.map((run) => run.result))).filter((e): e is WorkerExit => e !== null);
    for (const exit of exits) logBatch(clog, exit);
    const succeeded = exits.filter((e) => e.exitCode === 0).length;
    const reused = Math.max(0, exits.length - b.spawned);
    if (reused > 0) clog.info(`Resident workers reused: ${reused}`);
    const result: CycleResult = {
      cycleId,
      pending,
      // processes spawned for this batch; the resident ones reused are in the log line above
      workersSpawned: b.spawned,
      workersSucceeded: succeeded,
      workersFailed: exits.length - succeeded,
      recovered,
      durationMs: Date.now() - started,
      exitCode: cycleExitCode(exits, timedOut),
      stopped: stop.aborted,
      posts: cyclePosts(exits),
    };
    logSummary(clog, result, exits);
    const runs = workerRuns(exits);
    await db.finishCycle(cycleId, result, runs).catch((e: unknown) => clog.error(`✗ Cycle not recorded: ${errorMessage(e)}`));
    return exits.reduce((n, e) => n + (e.report?.claimed ?? 0), 0);
  }
}

/** One worker's part in a batch: when it started it (this host's clock), and its result. */
interface BatchRun {
  readonly resident: Resident;
  startedAt: number | null;
  readonly started: Promise<void>;
  result: Promise<WorkerExit | null>;
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
