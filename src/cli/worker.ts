import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { configToEnv } from '../config.ts';
import { spawnWorker } from '../dispatcher/spawn.ts';
import { createLogger } from '../log.ts';
import { onSignals } from '../signals.ts';
import { EXIT } from '../types.ts';
import { configFrom, withStore, type GlobalFlags } from './context.ts';

interface WorkerFlags {
  batchSize?: string;
  workerTimeoutMs?: string;
  workerConcurrency?: string;
  maxAttempts?: string;
}

/**
 * One worker without a dispatcher: what a KEDA ScaledJob's Job runs (KEDA does the
 * counting and the spawning). It first gives back posts whose worker died (the
 * dispatcher's first step, which nobody else does here), then runs the same worker
 * process a cycle spawns, and exits with its code: 0 done, 1 error, 2 out of time.
 */
export function registerWorker(program: Command, globals: () => GlobalFlags): void {
  program
    .command('worker')
    .description('run one worker and exit 0 / 1 / 2 (for a KEDA ScaledJob: no dispatcher)')
    .option('--batch-size <n>', 'posts per claim (BATCH_SIZE)')
    .option('--worker-timeout-ms <ms>', "the worker's budget (WORKER_TIMEOUT_MS)")
    .option('--worker-concurrency <n>', 'posts published at once (WORKER_CONCURRENCY)')
    .option('--max-attempts <n>', 'MAX_ATTEMPTS')
    .action(async (flags: WorkerFlags) => {
      const config = configFrom(globals(), {
        BATCH_SIZE: flags.batchSize,
        WORKER_TIMEOUT_MS: flags.workerTimeoutMs,
        WORKER_CONCURRENCY: flags.workerConcurrency,
        MAX_ATTEMPTS: flags.maxAttempts,
      });
      const log = createLogger('WORKER', config.logFormat);
      const back = await withStore(config, (store) => store.recoverExpired(config.maxAttempts));
      if (back.length > 0) log.warn(`Recovered ${back.length} posts whose worker died (lease expired)`);
      const workerId = `worker-${Date.now()}-${randomBytes(3).toString('hex')}-1`;
      const worker = spawnWorker(workerId, 0, { ...process.env, ...configToEnv(config) });
      // first signal: the worker stops claiming and finishes posts in flight; second: it stops now
      onSignals(
        () => worker.process.kill('SIGTERM'),
        () => worker.process.kill('SIGTERM'),
      );
      const exit = await worker.exited;
      process.exitCode = exit.exitCode ?? EXIT.error;
    });
}
