import type { Command } from 'commander';
import { ConfigError, cronIntervalWarning, scheduleIntervalProblem, type Config, type ConfigInput } from '../config.ts';
import { initScheduler, scheduleIntervalMs, SchedulerError } from '../cron/init-scheduler.ts';
import { runCronTrigger } from '../cron/run-cron.ts';
import { runPrecise } from '../daemon/precise.ts';
import { createLogger, printWarning } from '../log.ts';
import { onSignals } from '../signals.ts';
import { prepareDatabaseFile } from '../store/sqlite/database-file.ts';
import { CliError, configFrom, type GlobalFlags } from './context.ts';

interface CycleFlags {
  batchSize?: string;
  maxWorkers?: string;
  minWorkers?: string;
  timeoutMs?: string;
  workerTimeoutMs?: string;
  workerConcurrency?: string;
  maxAttempts?: string;
}

function withCycleFlags(command: Command): Command {
  return command
    .option('--batch-size <n>', 'posts per worker (BATCH_SIZE)')
    .option('--max-workers <n>', 'MAX_WORKERS')
    .option('--min-workers <n>', 'MIN_WORKERS')
    .option('--timeout-ms <ms>', "the cycle's guard (TIMEOUT_MS)")
    .option('--worker-timeout-ms <ms>', "a worker's budget (WORKER_TIMEOUT_MS)")
    .option('--worker-concurrency <n>', 'posts one worker publishes at once (WORKER_CONCURRENCY)')
    .option('--max-attempts <n>', 'MAX_ATTEMPTS');
}

function overrides(flags: CycleFlags): ConfigInput {
  return {
    BATCH_SIZE: flags.batchSize,
    MAX_WORKERS: flags.maxWorkers,
    MIN_WORKERS: flags.minWorkers,
    TIMEOUT_MS: flags.timeoutMs,
    WORKER_TIMEOUT_MS: flags.workerTimeoutMs,
    WORKER_CONCURRENCY: flags.workerConcurrency,
    MAX_ATTEMPTS: flags.maxAttempts,
  };
}

/**
 * A SQLite file that cannot be created stops `cron` and `daemon` with one line on
 * stderr before any cycle starts (the cycle would report it on every run otherwise).
 */
function preflight(config: Config): void {
  if (config.database.dialect === 'sqlite') prepareDatabaseFile(config.database.path);
}

/** `daemon --precise`: the resident dispatcher (src/daemon/precise.ts) until a signal. */
async function preciseDaemon(config: Config): Promise<void> {
  const log = createLogger('CRON', config);
  const stop = new AbortController();
  const abort = new AbortController();
  onSignals(
    () => {
      log.info('Stopping: no more claims, finishing posts in flight');
      stop.abort('signal');
    },
    () => {
      log.warn('Second signal: aborting posts in flight');
      abort.abort('signal');
    },
  );
  await runPrecise({ config, stop: stop.signal, abort: abort.signal });
  // Stopped, its store closed: exit even if a database connection left open after a long
  // outage keeps the event loop alive (seen once in eleven runs after a frozen network;
  // unref'd, so a clean stop exits at once as before).
  setTimeout(() => process.exit(process.exitCode ?? 0), EXIT_AFTER_STOP_MS).unref();
}

/** How long a stopped `daemon --precise`, or a `cron` whose cycle is over, waits for its last handles before it exits anyway. */
const EXIT_AFTER_STOP_MS = 2_000;

export function registerCycle(program: Command, globals: () => GlobalFlags): void {
  withCycleFlags(program.command('cron').description('run one dispatch cycle, then exit 0 / 1 / 2 (for system cron)')).action(
    async (flags: CycleFlags) => {
      const config = configFrom(globals(), overrides(flags));
      preflight(config);
      const warning = cronIntervalWarning(config);
      if (warning !== null) printWarning(warning, config.logFormat);
      const stop = new AbortController();
      onSignals(() => stop.abort('signal'));
      process.exitCode = await runCronTrigger(config, stop.signal);
      // The cycle is over and its store closed: exit even if a handle still keeps the event
      // loop alive (a database socket after an outage), since system cron starts the next
      // cycle every minute whatever this one does. Unref'd: a clean cycle exits at once.
      setTimeout(() => process.exit(process.exitCode ?? 0), EXIT_AFTER_STOP_MS).unref();
    },
  );

  withCycleFlags(
    program
      .command('daemon')
      .description('in-process scheduler: a cycle on a cron expression, never two at once')
      .option('--cron <expr>', 'cron expression', '* * * * *')
      .option('--timezone <tz>', 'IANA time zone of the expression', 'UTC')
      .option('--run-immediately', 'run a cycle at start too')
      .option('--precise', 'no schedule: each post at its run_at, workers started ahead and kept WORKER_IDLE_MS (see README, Precise mode)'),
  ).action(async (flags: CycleFlags & { cron: string; timezone: string; runImmediately?: boolean; precise?: boolean }) => {
    const config = configFrom(globals(), overrides(flags));
    if (flags.precise === true) {
      preflight(config);
      await preciseDaemon(config);
      return;
    }
    let intervalMs: number | null;
    try {
      intervalMs = scheduleIntervalMs(flags.cron, flags.timezone);
    } catch (e) {
      throw new CliError(e instanceof SchedulerError ? e.message : String(e));
    }
    const problem = intervalMs === null ? null : scheduleIntervalProblem(config, intervalMs, `--cron "${flags.cron}"`);
    if (problem !== null) throw new ConfigError(problem);
    preflight(config);
    const log = createLogger('CRON', config);
    let scheduler;
    try {
      scheduler = await initScheduler({
        config,
        cronExpression: flags.cron,
        timezone: flags.timezone,
        runImmediately: flags.runImmediately === true,
      });
    } catch (e) {
      throw new CliError(e instanceof SchedulerError ? e.message : String(e));
    }
    const stopped = new Promise<void>((resolve) => {
      onSignals(
        () => {
          log.info(scheduler.busy() ? 'Stopping: finishing the running cycle first' : 'Stopping');
          void scheduler.stop().then(resolve);
        },
        () => {
          log.warn('Second signal: stopping the running cycle now');
          void scheduler.stop({ abortRunning: true }).then(resolve);
        },
      );
    });
    await stopped;
  });
}
