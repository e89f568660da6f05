import { Cron } from 'croner';
import { loadConfig, type Config } from '../config.ts';
import { runCycle } from '../dispatcher/cycle.ts';
import { createLogger, errorMessage } from '../log.ts';
import type { CycleResult } from '../types.ts';

/**
 * The in-process scheduler (the seed's init-scheduler.ts, Option 2): runs a dispatch
 * cycle on a cron expression, never starting one while the last still runs.
 *
 *   const scheduler = await initScheduler({ cronExpression: '* * * * *', timezone: 'UTC', runImmediately: true });
 *   ...
 *   await scheduler.stop(); // waits for a running cycle to finish
 */
export interface SchedulerOptions {
  /** default every minute */
  readonly cronExpression?: string;
  /** an IANA zone such as UTC or Europe/Paris; default UTC */
  readonly timezone?: string;
  /** run a cycle at once, then on the schedule */
  readonly runImmediately?: boolean;
  /** default: read from the environment */
  readonly config?: Config;
  /** called after each cycle */
  readonly onCycle?: (result: CycleResult) => void;
}

export interface Scheduler {
  /** the next time a cycle is due to start, or null */
  nextRun(): Date | null;
  /** true while a cycle runs */
  busy(): boolean;
  /** stops scheduling; stops a running cycle's workers when `abortRunning`, and waits for it */
  stop(options?: { abortRunning?: boolean }): Promise<void>;
}

export class SchedulerError extends Error {
  override name = 'SchedulerError';
}

/**
 * The shortest interval between the next runs of a cron expression (the next ten),
 * in ms; null when it runs fewer than twice. Throws SchedulerError for a bad one.
 */
export function scheduleIntervalMs(expression: string, timezone = 'UTC'): number | null {
  let runs: Date[];
  try {
    const job = new Cron(expression, { timezone, paused: true });
    runs = job.nextRuns(10);
    job.stop();
  } catch (e) {
    throw new SchedulerError(`invalid schedule "${expression}" in time zone "${timezone}": ${errorMessage(e)}`);
  }
  let shortest: number | null = null;
  for (let i = 1; i < runs.length; i++) {
    const gap = (runs[i]?.getTime() ?? 0) - (runs[i - 1]?.getTime() ?? 0);
    if (shortest === null || gap < shortest) shortest = gap;
  }
  return shortest;
}

export async function initScheduler(options: SchedulerOptions = {}): Promise<Scheduler> {
  const config = options.config ?? loadConfig();
  const expression = options.cronExpression ?? '* * * * *';
  const timezone = options.timezone ?? 'UTC';
  const log = createLogger('CRON', config);

  let job: Cron;
  try {
    job = new Cron(expression, { timezone, paused: true });
    job.nextRun();
  } catch (e) {
    throw new SchedulerError(`invalid schedule "${expression}" in time zone "${timezone}": ${errorMessage(e)}`);
  }
  job.stop();

  let running: Promise<void> | null = null;
  const abort = new AbortController();

  const tick = (): void => {
    if (running !== null) {
      log.warn('Previous cycle still running, skipping this trigger');
      return;
    }
    running = (async () => {
      const started = Date.now();
      log.info(`Post scheduler cron started at ${new Date(started).toISOString()}`);
      log.info('Delegating to dispatcher for dynamic worker spawning...');
      try {
        const result = await runCycle({ config, signal: abort.signal });
        log.info(`Cron cycle completed with exit code ${result.exitCode} in ${Date.now() - started}ms`);
        options.onCycle?.(result);
      } catch (e) {
        log.error(`Cron cycle failed: ${errorMessage(e)}`);
      } finally {
        running = null;
      }
    })();
  };

  const scheduled = new Cron(expression, { timezone, protect: true }, tick);
  log.info(`Scheduler started: "${expression}" (${timezone}), next cycle at ${scheduled.nextRun()?.toISOString() ?? 'never'}`);
  if (options.runImmediately === true) tick();

  return {
    nextRun: () => scheduled.nextRun(),
    busy: () => running !== null,
    async stop(stopOptions = {}) {
      scheduled.stop();
      if (stopOptions.abortRunning === true) abort.abort('scheduler stopped');
      await running;
      log.info('Scheduler stopped');
    },
  };
}
