import { spawn, execFile, execFileSync, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Runs the built CLI (dist/cli.js) as a real process; every process is bounded and reaped. */
export const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = path.join(ROOT, 'dist', 'cli.js');

export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface Running {
  readonly child: ChildProcess;
  readonly done: Promise<RunResult>;
  output(): string;
}

const live = new Set<ChildProcess>();

/**
 * Environment for a test run: quiet defaults that keep cycles short. The tests' webhook
 * receivers listen on 127.0.0.1, which the SSRF guard refuses unless
 * ALLOW_PRIVATE_NETWORK=true: set here (pass `ALLOW_PRIVATE_NETWORK: 'false'` to test the guard).
 * Credentials are sealed with TEST_SECRET_KEY, as an operator's key would (pass
 * `POST_SCHEDULER_SECRET_KEY: ''` to test without one).
 */
export const TEST_SECRET_KEY = Buffer.alloc(32, 7).toString('hex');

export function testEnv(databaseUrl: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DATABASE_URL: databaseUrl,
    ALLOW_PRIVATE_NETWORK: 'true',
    POST_SCHEDULER_SECRET_KEY: TEST_SECRET_KEY,
    ...extra,
  };
  delete env['NODE_OPTIONS'];
  delete env['NODE_TEST_CONTEXT'];
  return env;
}

/** `input`: written to the process's standard input, which is then closed (empty when not given). */
export function start(args: readonly string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000, file = CLI, cwd = ROOT, input = ''): Running {
  const child = spawn(process.execPath, [file, ...args], { env, cwd, stdio: ['pipe', 'pipe', 'pipe'] });
  live.add(child);
  // a process that exits before reading all of it must not fail the test with EPIPE
  child.stdin.on('error', () => undefined);
  child.stdin.end(input);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<RunResult>((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
  return { child, done, output: () => stdout };
}

export function run(args: readonly string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<RunResult> {
  return start(args, env, timeoutMs).done;
}

export function runWithInput(args: readonly string[], env: NodeJS.ProcessEnv, input: string, timeoutMs = 60_000): Promise<RunResult> {
  return start(args, env, timeoutMs, CLI, ROOT, input).done;
}

/** Kills every process this test file started that is still running. */
export function killAll(): void {
  for (const child of live) child.kill('SIGKILL');
}

/** Command lines of all processes on the machine whose arguments contain `needle`. */
export function processesMatching(needle: string): string[] {
  const out = execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter((line) => line.includes(needle) && !line.includes('ps -eo'));
}

/** One row of the process table. */
export interface ProcessRow {
  readonly pid: number;
  readonly ppid: number;
  /** ps STAT: R/S/D running or sleeping, T stopped (SIGSTOP), Z zombie (exited, not yet reaped) */
  readonly stat: string;
  readonly args: string;
}

/**
 * The processes on the machine whose arguments contain `needle`, read with one `ps`
 * run without blocking the event loop (a sampler calling it every 50 ms leaves a
 * receiver in the same process free to answer).
 */
export function processTable(needle: string): Promise<ProcessRow[]> {
  return new Promise((resolve) => {
    execFile('ps', ['-eo', 'pid=,ppid=,stat=,args='], { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 }, (error, out) => {
      if (error !== null) {
        resolve([]);
        return;
      }
      const rows: ProcessRow[] = [];
      for (const line of out.split('\n')) {
        const m = /^\s*(\d+)\s+(\d+)\s+(\S+)\s+(.*)$/.exec(line);
        if (m === null || !(m[4] ?? '').includes(needle)) continue;
        rows.push({ pid: Number(m[1]), ppid: Number(m[2]), stat: m[3] ?? '', args: m[4] ?? '' });
      }
      resolve(rows);
    });
  });
}

/** Pids of the direct children of `pid`. */
export function childPids(pid: number): number[] {
  try {
    return execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .map((s) => Number(s.trim()))
      .filter((n) => n > 0);
  } catch {
    return [];
  }
}

/** Polls `check` every 25 ms until it returns true, or throws after `timeoutMs`. */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
}
