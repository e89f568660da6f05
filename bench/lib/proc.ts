import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { watchGroupMemory, type GroupMemory } from './memory.ts';

/**
 * Child processes of the benchmark. Each one is started in its own process group
 * (detached), so that the group — the CLI and the workers it forks — can be killed
 * by the child's own id when it overruns its timeout or when the run is cleaned up.
 */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = path.join(ROOT, 'dist', 'cli.cjs');
export const CRON_ENTRY = path.join(ROOT, 'dist', 'cron', 'post-scheduler.cron.js');

/** Every variable the program reads: removed from the inherited environment so that only the bench sets them. */
const PROGRAM_ENV = [
  'DATABASE_URL',
  'BATCH_SIZE',
  'MAX_WORKERS',
  'MIN_WORKERS',
  'TIMEOUT_MS',
  'WORKER_TIMEOUT_MS',
  'WORKER_CONCURRENCY',
  'MAX_ATTEMPTS',
  'RETRY_BASE_MS',
  'RETRY_MAX_MS',
  'PUBLISH_TIMEOUT_MS',
  'LEASE_MS',
  'KILL_GRACE_MS',
  'LOG_FORMAT',
  'ALLOW_PRIVATE_NETWORK',
  'NODE_OPTIONS',
];

/**
 * Where the program's processes get their environment. `cron` (the default): what system
 * cron gives a job (deploy/crontab: SHELL, PATH, HOME, LOGNAME, and LANG where the system
 * sets one; deploy/systemd's service gives as little), plus the program's settings, as a
 * deployed cycle runs. `shell`: the bench's own environment, whatever this shell exports.
 * A shell's environment can weigh on every process start: these machines export
 * NODE_EXTRA_CA_CERTS, which Node 20 reads and parses at each start-up (BENCHMARKS.md;
 * the Run section of each report measures it).
 */
export type EnvKind = 'cron' | 'shell';
export const ENV_KIND: EnvKind = process.env['BENCH_ENV'] === 'shell' ? 'shell' : 'cron';
const CRON_ENV = ['PATH', 'HOME', 'LOGNAME', 'LANG'];

/** The environment of the cron job, from this shell's values of the few variables cron sets. */
export function baseEnv(kind: EnvKind = ENV_KIND): NodeJS.ProcessEnv {
  if (kind === 'shell') return { ...process.env };
  const env: NodeJS.ProcessEnv = { SHELL: '/bin/sh' };
  for (const name of CRON_ENV) if (process.env[name] !== undefined) env[name] = process.env[name];
  return env;
}

export function childEnv(databaseUrl: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = baseEnv();
  for (const name of PROGRAM_ENV) delete env[name];
  // the bench's receivers listen on 127.0.0.1, which the SSRF guard refuses by default;
  // a webhook's URL is a credential, sealed with a key (a fixed one: nothing secret here)
  return {
    ...env,
    DATABASE_URL: databaseUrl,
    LOG_FORMAT: 'json',
    ALLOW_PRIVATE_NETWORK: 'true',
    POST_SCHEDULER_SECRET_KEY: Buffer.alloc(32, 9).toString('hex'),
    ...extra,
  };
}

/**
 * CPU of a bare Node start-up (`node -e 0`, user + system as the process counts it at its
 * exit), median of `runs`, in each environment: what the shell's environment costs every
 * process of a cycle before its first line.
 */
export function startupCpuMs(runs = 9): { readonly cron: number; readonly shell: number } {
  const measure = (env: NodeJS.ProcessEnv): number => {
    const ms: number[] = [];
    for (let i = 0; i < runs; i++) {
      const out = execFileSync(process.execPath, ['-e', "process.on('exit', () => { const u = process.cpuUsage(); process.stdout.write(String((u.user + u.system) / 1000)); })"], {
        env,
        encoding: 'utf8',
        timeout: 10_000,
      });
      ms.push(Number(out));
    }
    ms.sort((a, b) => a - b);
    return ms[Math.floor(ms.length / 2)] ?? Number.NaN;
  };
  return { cron: measure(baseEnv('cron')), shell: measure(baseEnv('shell')) };
}

export interface RunResult {
  readonly command: string;
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** from just before spawn() to the process's 'exit' event */
  readonly wallMs: number;
  readonly timedOut: boolean;
  /** processes of its group still alive after it exited (killed by the bench) */
  readonly leftovers: boolean;
  /** with `sampleMemory`: what the process group held at its peak */
  readonly memory: GroupMemory | null;
}

const live = new Set<ChildProcess>();
/** process-group ids of every child started, for the final leftover check */
export const startedGroups = new Set<number>();

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** Runs `node <file> <args>` and waits for it; kills its whole process group past `timeoutMs`. */
export function runNode(file: string, args: readonly string[], env: NodeJS.ProcessEnv, timeoutMs: number, { sampleMemory = false }: { readonly sampleMemory?: boolean } = {}): Promise<RunResult> {
  const command = `node ${path.relative(ROOT, file)} ${args.join(' ')}`;
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, [file, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    live.add(child);
    if (child.pid !== undefined) startedGroups.add(child.pid);
    // the whole group (the CLI and its workers), sampled from outside while it runs
    const memory = sampleMemory && child.pid !== undefined ? watchGroupMemory(child.pid) : null;
    let groupMemory: GroupMemory | null = null;
    let stdout = '';
    let stderr = '';
    let wallMs: number | null = null;
    let exitCode: number | null = null;
    let exitSignal: NodeJS.Signals | null = null;
    let timedOut = false;
    let settled = false;
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));

    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid);
    }, timeoutMs);
    let closeTimer: NodeJS.Timeout | undefined;

    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearTimeout(closeTimer);
      live.delete(child);
      const leftovers = child.pid !== undefined && groupAlive(child.pid);
      if (leftovers) killGroup(child.pid);
      groupMemory ??= memory?.stop() ?? null;
      resolve({ command, code: exitCode, signal: exitSignal, stdout, stderr, wallMs: wallMs ?? performance.now() - started, timedOut, leftovers, memory: groupMemory });
    };

    child.once('error', (e) => {
      clearTimeout(timer);
      memory?.stop();
      live.delete(child);
      if (!settled) {
        settled = true;
        reject(new Error(`${command}: ${e.message}`));
      }
    });
    child.once('exit', (code, signal) => {
      wallMs = performance.now() - started;
      groupMemory = memory?.stop() ?? null;
      exitCode = code;
      exitSignal = signal;
      // Output pipes close when every process holding them is gone; a worker that
      // outlived the CLI would keep them open: wait a little, then finish anyway.
      closeTimer = setTimeout(finish, 5_000);
    });
    child.once('close', finish);
  });
}

export function runCli(args: readonly string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<RunResult> {
  return runNode(CLI, args, env, timeoutMs);
}

/** Like runCli, but throws unless the command exited 0 (for set-up steps that are not measured). */
export async function mustRunCli(args: readonly string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<RunResult> {
  const r = await runCli(args, env, timeoutMs);
  if (r.code !== 0 || r.timedOut) {
    const why = r.timedOut ? `timed out after ${timeoutMs}ms` : `exit ${String(r.code)}${r.signal === null ? '' : ` (${r.signal})`}`;
    throw new Error(`${r.command}: ${why}: ${clip((r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | '))}`);
  }
  return r;
}

/** Shortens a message for a report line. */
export function clip(text: string, max = 300): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length - max} more characters)`;
}

/** Kills every process group the bench started that is still running. */
export function killAllChildren(): void {
  for (const child of live) killGroup(child.pid);
  live.clear();
}
