import type { Config } from '../config.ts';
import { runCycle } from '../dispatcher/cycle.ts';
import { createLogger, errorMessage } from '../log.ts';
import { EXIT, type ExitCode } from '../types.ts';

/**
 * The cron trigger: one cycle, logged in the seed's [CRON] lines, under a hard guard
 * that ends the process if the cycle itself ever hangs past its timeout and grace.
 */
export async function runCronTrigger(config: Config, signal?: AbortSignal): Promise<ExitCode> {
  const log = createLogger('CRON', config);
  const started = Date.now();
  log.info(`Post scheduler cron started at ${new Date(started).toISOString()}`);
  log.info('Delegating to dispatcher for dynamic worker spawning...');

  const guard = setTimeout(() => {
    log.error(`Cycle still running ${config.timeoutMs + config.killGraceMs}ms after start, exiting with code 2`);
    process.exit(EXIT.timeout);
  }, config.timeoutMs + config.killGraceMs + 2_000);
  guard.unref();

  try {
    const result = await runCycle({ config, ...(signal === undefined ? {} : { signal }) });
    const ms = Date.now() - started;
    if (result.exitCode === EXIT.ok) {
      log.info(`Dispatcher completed successfully in ${ms}ms`);
      log.info(`Cron cycle completed successfully in ${ms}ms`);
    } else if (result.exitCode === EXIT.timeout && signal?.aborted === true) {
      // SIGTERM / SIGINT: the cycle was stopped, it did not run out of time
      log.warn(`Stopped by signal after ${ms}ms: workers were told to stop (exit code 2)`);
    } else if (result.exitCode === EXIT.timeout) {
      log.warn(`Dispatcher timed out after ${ms}ms (exit code 2)`);
    } else {
      log.error(`Dispatcher failed after ${ms}ms (exit code 1)`);
    }
    return result.exitCode;
  } catch (e) {
    log.error(`Cron cycle failed: ${errorMessage(e)}`);
    return EXIT.error;
  } finally {
    clearTimeout(guard);
  }
}
