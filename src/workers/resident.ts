import type { Config } from '../config.ts';
import { makeVault } from '../credentials/vault.ts';
import { mostInFlight, sizedConfig } from '../dispatcher/sizing.ts';
import type { Logger } from '../log.ts';
import type { Store } from '../store/store.ts';
import { EXIT, type ExitCode } from '../types.ts';
import { runWorker, type WorkerReport } from './post-scheduler.worker.ts';
import { makePublisherCache } from './publishers.ts';
import { warmPublishing } from './warm.ts';

/**
 * A resident worker (`daemon --precise`): started ahead of the due time, it connects and
 * says it is ready, then waits. Each `due` message from its daemon names a time: at that
 * moment it claims and keeps claiming while posts are due (one runWorker, under its own
 * WORKER_TIMEOUT_MS budget), then reports the batch and waits again. It exits when the
 * daemon says `exit` (after WORKER_IDLE_MS without work, or after the batches it has when
 * its report showed more heap than WORKER_MAX_HEAP_MB; decided by the daemon so that a
 * `due` and an exit never cross), on SIGTERM, or when the daemon is gone.
 *
 * Its publishers (their keep-alive connections, sessions, opened credentials) outlive a
 * batch: built once, kept for the next batches until their channel changes or the worker
 * exits (publishers.ts). Each batch keeps as many posts in flight as its daemon sized it
 * for (`inFlight`, deadline sizing), so the connection pools are sized for the most it may.
 */
export interface DueMessage {
  readonly type: 'due';
  /** the due time on this host's clock (the daemon converts run_at with the database's measured offset) */
  readonly at: number;
  readonly cycleId: number;
  /** the posts to keep in flight in this batch (deadline sizing); null: WORKER_CONCURRENCY */
  readonly inFlight: number | null;
  /** this host's clock less the database's, as the daemon measured it, at its latest: a run_at plus this is on `at`'s clock, never before it */
  readonly clockOffsetMs: number;
}

export type DaemonMessage = DueMessage | { readonly type: 'exit' };

export type ResidentMessage =
  | { readonly type: 'ready' }
  /** a batch starts (its budget, and the daemon's limit on it, run from here) */
  | { readonly type: 'start'; readonly cycleId: number; readonly startedAt: number }
  | {
      readonly type: 'batch';
      readonly cycleId: number;
      readonly startedAt: number;
      readonly finishedAt: number;
      readonly exitCode: ExitCode;
      readonly claimed: number;
      readonly published: number;
      readonly retried: number;
      readonly failed: number;
      readonly unknown: number;
      /** the worker's V8 heap in use after the batch, MB */
      readonly heapMb: number;
    };

export interface ResidentOptions {
  readonly workerId: string;
  readonly config: Config;
  readonly store: Store;
  readonly log: Logger;
  readonly stop: AbortSignal;
  readonly abort: AbortSignal;
  readonly holdsSlot: boolean;
  /** called once when the worker has warmed up, before it says it is ready (the runner applies its V8 flags then) */
  readonly onWarm?: () => void;
}

/**
 * How long before a due time a resident claims. At the due time itself, in a burst of
 * 200 posts for five residents on two cores (PostgreSQL), they woke 0-8 ms late, their five
 * claims at once took 4-12 ms, and the first request left 5-10 ms after its claim: the
 * first post went out 18-22 ms late. Claimed this much earlier, each post is held in its
 * worker until its run_at. Those posts show as processing for these milliseconds.
 */
export const CLAIM_EARLY_MS = 25;

/** The exit code of one batch, as an ephemeral worker's process would have it. */
function batchExit(report: WorkerReport): ExitCode {
  if (report.error !== null || report.fencedOut > 0) return EXIT.error;
  return report.timedOut ? EXIT.timeout : EXIT.ok;
}

export async function runResident(options: ResidentOptions): Promise<ExitCode> {
  const { config, store, log, stop } = options;
  const send = (m: ResidentMessage) =>
    new Promise<void>((resolve) => {
      if (process.send === undefined || !process.connected) resolve();
      else process.send(m, undefined, {}, () => resolve());
    });
  const inbox: DaemonMessage[] = [];
  let wake: (() => void) | null = null;
  const poke = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  process.on('message', (m: DaemonMessage) => {
    inbox.push(m);
    poke();
  });
  stop.addEventListener('abort', poke, { once: true });

  const vault = makeVault(config.secretKey, config.oldSecretKey === null ? [] : [config.oldSecretKey]);
  const publishers = makePublisherCache({ config, concurrency: mostInFlight(config), log, open: (sealed) => vault.open(sealed) });

  // connected, and the publishing of the channels in use warmed up (warm.ts): ready. The
  // daemon measures spawn to here. The warm-up is a batch of the publisher cache's own.
  await warmPublishing(config, await store.listChannels(), publishers).catch(() => undefined);
  await publishers.settle();
  options.onWarm?.();
  // An exchange that records and claims nothing: the claim statement prepared on this
  // connection and the server's caches of its tables filled now, not at the due time
  // (five fresh PostgreSQL connections claiming at once took 18-49 ms each, against
  // 8-21 ms warmed ahead).
  await store.exchange(options.workerId, [], 0, config.leaseMs).catch(() => undefined);
  await send({ type: 'ready' });
  log.info('Ready, waiting for the due time');

  let worst: ExitCode = EXIT.ok;
  try {
    for (;;) {
      while (inbox.length === 0 && !stop.aborted) await new Promise<void>((resolve) => (wake = resolve));
      const message = inbox.shift();
      if (stop.aborted || message === undefined || message.type === 'exit') break;
      // sleep until just before the due time (a stop ends the wait): the batch's claims take
      // what falls due within CLAIM_EARLY_MS, and each post is sent at its run_at
      const waitMs = message.at - CLAIM_EARLY_MS - Date.now();
      if (waitMs > 0) {
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            stop.removeEventListener('abort', done);
            resolve();
          };
          const timer = setTimeout(done, waitMs);
          stop.addEventListener('abort', done, { once: true });
        });
      }
      // a stop may have come during the wait (the checker cannot see it)
      if ((stop.aborted as boolean)) break;
      const startedAt = Date.now();
      await send({ type: 'start', cycleId: message.cycleId, startedAt });
      // a batch's hard stop, as an ephemeral worker's process has it from its start
      const hardStop = setTimeout(() => process.exit(EXIT.timeout), config.workerTimeoutMs + config.killGraceMs);
      let report: WorkerReport;
      try {
        report = await runWorker({
          workerId: options.workerId,
          config: sizedConfig(config, message.inFlight),
          store,
          publishers,
          log,
          stop,
          abort: options.abort,
          stopGraceMs: Math.floor(config.killGraceMs / 2),
          startedAt,
          holdsSlot: options.holdsSlot,
          claimAhead: true,
          early: { aheadMs: CLAIM_EARLY_MS, clockOffsetMs: message.clockOffsetMs },
        });
      } finally {
        clearTimeout(hardStop);
      }
      const exitCode = batchExit(report);
      if (exitCode > worst) worst = exitCode;
      await send({
        type: 'batch',
        cycleId: message.cycleId,
        startedAt,
        finishedAt: Date.now(),
        exitCode,
        claimed: report.claimed,
        published: report.published,
        retried: report.retried,
        failed: report.failed,
        unknown: report.unknown,
        heapMb: Math.round(process.memoryUsage().heapUsed / 1048576),
      });
      // a database error or a lost lease: a fresh process next time
      if (exitCode === EXIT.error) break;
    }
  } finally {
    // the worker exits: its connections close with its publishers
    await publishers.close();
  }
  return worst;
}
