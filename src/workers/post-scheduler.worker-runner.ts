/**
 * Ephemeral worker entry point, spawned by the dispatcher:
 *   node dist/workers/post-scheduler.worker-runner.js --worker-id worker-<ms>-<hex>-<n> --cycle-id <id> [--slot] [--share <posts>] [--resident]
 * `--resident` (daemon --precise): it waits for due times from its daemon, see resident.ts.
 * `--slot`: the dispatcher took a GLOBAL_MAX_WORKERS slot in this worker's name; the
 * worker renews it while it runs and gives it back when it ends.
 * `--share`: the worker claims at most this many posts until the dispatcher says (a
 * `shares-lifted` message) that every sibling has made its first claim; it tells the
 * dispatcher of its own first claim (a `first-claim` message).
 * Exits 0 (done), 1 (a database error, or outcomes refused because a lease ran out),
 * 2 (time budget ran out or stopped with work in flight).
 */
// first: in the bundle, the young generation is held from before any other module of the
// worker runs; the V8 flags come once what publishing needs is loaded (v8-settings.ts)
import { applyWorkerV8Flags } from './v8-settings.ts';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, requestedLogFormat } from '../config.ts';
import { createLogger, errorMessage, printError, reportUncaught, withFields } from '../log.ts';
import { guardOutput } from '../output.ts';
import { openStore } from '../store/open.ts';
import { EXIT } from '../types.ts';
import { SHARES_LIFTED, type FirstClaimMessage } from './messages.ts';
import { runWorker } from './post-scheduler.worker.ts';
import { runResident } from './resident.ts';

export interface WorkerMessage {
  readonly type: 'report';
  readonly claimed: number;
  readonly published: number;
  readonly retried: number;
  readonly failed: number;
  readonly unknown: number;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { 'worker-id': { type: 'string' }, 'cycle-id': { type: 'string' }, slot: { type: 'boolean' }, share: { type: 'string' }, resident: { type: 'boolean' } },
    strict: true,
  });
  const workerId = values['worker-id'] ?? `worker-${Date.now()}-${process.pid}`;
  const config = loadConfig();
  const cycleId = values['cycle-id'] === undefined ? null : Number(values['cycle-id']);
  const log = withFields(createLogger(`WORKER ${workerId}`, config), { workerId, cycleId });
  const resident = values.resident === true;
  log.info(resident ? 'Starting resident worker' : 'Starting ephemeral worker');

  // Hard stop: whatever happens, this process ends before the cycle's guard does
  // (a resident worker has one per batch, see resident.ts).
  if (!resident) setTimeout(() => process.exit(EXIT.timeout), config.workerTimeoutMs + config.killGraceMs).unref();

  const stop = new AbortController();
  const abort = new AbortController();
  const onSignal = (signal: string) => {
    if (stop.signal.aborted) {
      abort.abort(signal);
    } else {
      log.warn(`Received ${signal}: no more claims, finishing posts in flight`);
      stop.abort(signal);
    }
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  // The dispatcher is gone (even by SIGKILL): stop, so no worker outlives it.
  process.on('disconnect', () => onSignal('dispatcher gone'));

  const sharePosts = values.share === undefined ? null : Number(values.share);
  if (sharePosts !== null && !(Number.isInteger(sharePosts) && sharePosts > 0)) throw new Error(`--share must be a positive integer, got "${values.share ?? ''}"`);
  // without a dispatcher to lift it (or once it is gone), the share is lifted at once
  const lifted = new Promise<void>((resolve) => {
    if (process.send === undefined) resolve();
    process.on('message', (m: unknown) => {
      if (typeof m === 'object' && m !== null && (m as { type?: unknown }).type === SHARES_LIFTED) resolve();
    });
    process.on('disconnect', () => resolve());
  });

  let store;
  try {
    store = await openStore(config.database, { dbTimeoutMs: config.dbTimeoutMs });
  } catch (e) {
    log.error(`Cannot open the database: ${errorMessage(e)}`);
    return EXIT.error;
  }
  try {
    if (resident) return await runResident({ workerId, config, store, log, stop: stop.signal, abort: abort.signal, holdsSlot: values.slot === true, onWarm: applyWorkerV8Flags });
    const report = await runWorker({
      workerId,
      config,
      store,
      log,
      stop: stop.signal,
      abort: abort.signal,
      stopGraceMs: Math.floor(config.killGraceMs / 2),
      // the budget counts from the process start, as the hard stop above does
      // (process.uptime(), not performance.timeOrigin: that loads perf_hooks)
      startedAt: Date.now() - Math.round(process.uptime() * 1000),
      holdsSlot: values.slot === true,
      // after this turn of the event loop: the first request loads its HTTP agent's
      // modules (tls, https, dns) as it starts
      onPublishing: () => setImmediate(applyWorkerV8Flags),
      ...(sharePosts === null ? {} : { share: { posts: sharePosts, lifted } }),
      onFirstClaim: (claimed) => {
        const message: FirstClaimMessage = { type: 'first-claim', claimed };
        // a callback, so that a channel closing meanwhile is no uncaught error
        if (process.connected) process.send?.(message, undefined, {}, () => undefined);
      },
    });
    const message: WorkerMessage = {
      type: 'report',
      claimed: report.claimed,
      published: report.published,
      retried: report.retried,
      failed: report.failed,
      unknown: report.unknown,
    };
    if (process.send !== undefined && process.connected) {
      await new Promise<void>((resolve) => process.send?.(message, undefined, {}, () => resolve()));
    }
    // a database error, or outcomes fenced out after a lost lease: the cycle must show it
    if (report.error !== null || report.fencedOut > 0) return EXIT.error;
    return report.timedOut ? EXIT.timeout : EXIT.ok;
  } finally {
    // the slot is free for other hosts as soon as this worker is done (else at its expiry)
    if (values.slot === true) await store.releaseWorkerSlots([workerId]).catch(() => undefined);
    await store.close();
  }
}

reportUncaught(requestedLogFormat(), 'post-scheduler worker');
guardOutput(); // a closed stdout (EPIPE) must not kill a worker mid-publish: see src/output.ts
main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    const message = e instanceof ConfigError ? e.message : `worker crashed: ${errorMessage(e)}`;
    printError(message, requestedLogFormat(), {}, 'post-scheduler worker');
    process.exit(EXIT.error);
  },
);
