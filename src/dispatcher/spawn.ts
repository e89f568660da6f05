import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { buildFile, FROM_SOURCES } from '../paths.ts';
import { SHARES_LIFTED } from '../workers/messages.ts';
import type { WorkerMessage } from '../workers/post-scheduler.worker-runner.ts';

/**
 * Starting and stopping worker processes. Workers are forked with an IPC channel:
 * it carries their report back, and its closing tells a worker its dispatcher is
 * gone, even when the dispatcher was killed with SIGKILL.
 */
export interface WorkerExit {
  readonly workerId: string;
  readonly startedAt: Date;
  readonly finishedAt: Date;
  readonly durationMs: number;
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly report: WorkerMessage | null;
}

export interface WorkerHandle {
  readonly workerId: string;
  readonly process: ChildProcess;
  readonly exited: Promise<WorkerExit>;
  /** resolves once the worker has made its first claim, or has exited */
  readonly firstClaim: Promise<void>;
}

/**
 * The worker entry point of this build: the one-file CommonJS bundle when compiled
 * (scripts/bundle.mjs), the .ts source under a loader (tsx).
 */
const source = buildFile('workers/post-scheduler.worker-runner.ts');
const bundle = source.replace(/\.js$/, '.cjs');
export const WORKER_ENTRY = !FROM_SOURCES && fs.existsSync(bundle) ? bundle : source;

/**
 * Node flags for the worker: none when compiled; when running from TypeScript sources,
 * the parent's loader flags (tsx). Its V8 settings are not flags: any flag costs Node's
 * built-ins their code cache, so the worker applies them itself (workers/v8-settings.ts).
 */
function workerExecArgv(entry: string): string[] {
  const keep: string[] = [];
  if (entry.endsWith('.js') || entry.endsWith('.cjs')) return keep;
  const args = process.execArgv;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? '';
    if (/^--(import|require|loader|experimental-loader)$/.test(a)) {
      keep.push(a, args[i + 1] ?? '');
      i++;
    } else if (/^--(import|require|loader|experimental-loader)=/.test(a) || a === '--enable-source-maps') {
      keep.push(a);
    }
  }
  return keep;
}

/**
 * `slot`: the worker holds a GLOBAL_MAX_WORKERS slot in its name (it renews and frees it).
 * `share`: the most posts it claims until its shares are lifted (see liftSharesOnceAllClaimed).
 * `resident`: a worker of `daemon --precise` (src/workers/resident.ts).
 */
export function spawnWorker(
  workerId: string,
  cycleId: number,
  env: NodeJS.ProcessEnv,
  entry = WORKER_ENTRY,
  slot = false,
  { share = null, resident = false }: { readonly share?: number | null; readonly resident?: boolean } = {},
): WorkerHandle {
  const startedAt = new Date();
  const args = ['--worker-id', workerId, '--cycle-id', String(cycleId), ...(slot ? ['--slot'] : []), ...(share === null ? [] : ['--share', String(share)]), ...(resident ? ['--resident'] : [])];
  const child = fork(entry, args, {
    env,
    execArgv: workerExecArgv(entry),
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    serialization: 'json',
  });
  let report: WorkerMessage | null = null;
  let claimed: () => void = () => undefined;
  const firstClaim = new Promise<void>((resolve) => (claimed = resolve));
  child.on('message', (m: unknown) => {
    const type = typeof m === 'object' && m !== null ? (m as { type?: unknown }).type : undefined;
    if (type === 'report') report = m as WorkerMessage;
    else if (type === 'first-claim') claimed();
  });
  const exited = new Promise<WorkerExit>((resolve) => {
    let spawnError: Error | null = null;
    child.once('error', (e) => {
      spawnError = e;
    });
    child.once('exit', (code, signal) => {
      claimed();
      const finishedAt = new Date();
      resolve({
        workerId,
        startedAt,
        finishedAt,
        durationMs: finishedAt.getTime() - startedAt.getTime(),
        exitCode: spawnError !== null && code === null && signal === null ? 1 : code,
        signal,
        report,
      });
    });
  });
  return { workerId, process: child, exited, firstClaim };
}

/**
 * Once every worker of a cycle has made its first claim (or exited), tells those still
 * running that their shares are lifted: from then on each claims whatever it has room for.
 */
export function liftSharesOnceAllClaimed(workers: readonly WorkerHandle[]): void {
  void Promise.all(workers.map((w) => w.firstClaim)).then(() => {
    for (const w of workers) {
      if (w.process.connected) w.process.send({ type: SHARES_LIFTED }, () => undefined);
    }
  });
}

/** SIGTERM now, SIGKILL after `graceMs` to those still running; resolves when all have exited. */
export async function stopWorkers(workers: readonly WorkerHandle[], graceMs: number): Promise<void> {
  const running = workers.filter((w) => w.process.exitCode === null && w.process.signalCode === null);
  for (const w of running) w.process.kill('SIGTERM');
  const killTimer = setTimeout(() => {
    for (const w of running) {
      if (w.process.exitCode === null && w.process.signalCode === null) w.process.kill('SIGKILL');
    }
  }, graceMs);
  await Promise.all(running.map((w) => w.exited));
  clearTimeout(killTimer);
}
