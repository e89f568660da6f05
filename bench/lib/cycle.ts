import type { BenchDatabase } from './db.ts';
import type { GroupMemory } from './memory.ts';
import { parseCycle, type CycleLog } from './logs.ts';
import { childEnv, clip, CLI, CRON_ENTRY, mustRunCli, runNode } from './proc.ts';

/**
 * One measured dispatch cycle: the whole `node dist/cli.cjs cron` process (or the
 * seed's entry point) from spawn to exit, its JSON log, and the checks that make
 * its figure trustworthy.
 */
export type Entry = 'cli' | 'cron-entry';

export interface CycleRun {
  readonly entry: Entry;
  readonly wallMs: number;
  readonly code: number | null;
  readonly signal: string | null;
  readonly timedOut: boolean;
  readonly log: CycleLog;
  /** anything that makes this run a failure; empty when it is good */
  readonly problems: string[];
  readonly stderr: string;
  /** with `sampleMemory`: the cycle's processes together at their peak (memory.ts) */
  readonly memory: GroupMemory | null;
}

export interface CycleOptions {
  readonly db: BenchDatabase;
  readonly env?: Record<string, string>;
  readonly expectPublished: number;
  readonly timeoutMs: number;
  readonly entry?: Entry;
  /** sample the summed RSS and PSS of the cycle's processes while it runs (costs a little CPU) */
  readonly sampleMemory?: boolean;
}

export async function measureCycle(o: CycleOptions): Promise<CycleRun> {
  const entry = o.entry ?? 'cli';
  const env = childEnv(o.db.url, o.env);
  const sample = { sampleMemory: o.sampleMemory === true };
  const r = entry === 'cli' ? await runNode(CLI, ['cron'], env, o.timeoutMs, sample) : await runNode(CRON_ENTRY, [], env, o.timeoutMs, sample);
  const log = parseCycle(r.stdout);
  const problems: string[] = [];
  if (r.timedOut) problems.push(`killed by the bench after ${o.timeoutMs}ms`);
  if (r.code !== 0) problems.push(`exit code ${String(r.code)}${r.signal === null ? '' : ` (signal ${r.signal})`}`);
  if (r.leftovers) problems.push('processes of its group were still running after it exited (killed)');
  const s = log.summary;
  if (s === null) {
    problems.push('no summary line in its log');
  } else {
    if (s.published !== o.expectPublished) problems.push(`published ${s.published} of ${o.expectPublished}`);
    if (s.retried !== 0 || s.failed !== 0) problems.push(`retried ${s.retried}, failed ${s.failed}`);
    if (s.exitCode !== 0) problems.push(`summary exitCode ${s.exitCode}`);
  }
  for (const w of log.workers) {
    if (w.exitCode !== 0) problems.push(`worker ${w.id} exit code ${String(w.exitCode)}`);
  }
  if (log.warnings.length > 0) problems.push(...log.warnings.slice(0, 5).map((m) => `log: ${m}`));
  if (log.unparsed > 0) problems.push(`${log.unparsed} stdout lines were not JSON`);
  const stderr = r.stderr.trim();
  if (stderr !== '' && r.code !== 0) problems.push(`stderr: ${clip(stderr.split('\n').slice(-3).join(' | '))}`);
  return { entry, wallMs: r.wallMs, code: r.code, signal: r.signal, timedOut: r.timedOut, log, problems: problems.map((p) => clip(p)), stderr, memory: r.memory };
}

/** The raw record of a run kept in latest.json. */
export function rawRun(run: CycleRun): Record<string, unknown> {
  return {
    entry: run.entry,
    wallMs: Math.round(run.wallMs * 10) / 10,
    exitCode: run.code,
    signal: run.signal,
    summary: run.log.summary,
    workers: run.log.workers.map((w) => ({
      id: w.id,
      spawnToFirstClaimMs: w.spawnedAt !== null && w.firstClaimAt !== null ? w.firstClaimAt - w.spawnedAt : null,
      msSinceProcessStart: w.msSinceProcessStart,
      firstClaimed: w.firstClaimed,
      published: w.published,
      durationMs: w.durationMs,
      maxRssMb: w.maxRssMb,
      exitCode: w.exitCode,
    })),
    problems: run.problems,
    ...(run.memory === null ? {} : { groupMemory: run.memory }),
    ...(run.stderr === '' ? {} : { stderr: run.stderr.slice(0, 2000) }),
  };
}

// ---- set-up steps (not measured) ----

const SETUP_TIMEOUT_MS = 180_000;

export async function addFileChannel(db: BenchDatabase, name: string, file: string): Promise<void> {
  await mustRunCli(['channels', 'add', '--name', name, '--platform', 'file', '--path', file], childEnv(db.url), SETUP_TIMEOUT_MS);
}

export async function addWebhookChannel(db: BenchDatabase, name: string, url: string): Promise<void> {
  await mustRunCli(['channels', 'add', '--name', name, '--platform', 'webhook', '--url', url], childEnv(db.url), SETUP_TIMEOUT_MS);
}

export async function simulate(db: BenchDatabase, channel: string, posts: number, at?: string): Promise<void> {
  const args = ['simulate', '--posts', String(posts), '--channel', channel, ...(at === undefined ? [] : ['--at', at])];
  await mustRunCli(args, childEnv(db.url), SETUP_TIMEOUT_MS);
}

export interface StatusCounts {
  duePending: number;
  scheduledLater: number;
  processing: number;
  published: number;
  failed: number;
  cancelled: number;
}

export async function statusCounts(db: BenchDatabase): Promise<StatusCounts> {
  const r = await mustRunCli(['status', '--json'], childEnv(db.url), SETUP_TIMEOUT_MS);
  const parsed = JSON.parse(r.stdout) as { counts?: StatusCounts };
  if (parsed.counts === undefined) throw new Error('status --json printed no counts');
  return parsed.counts;
}

/** Problems with the database's final state, compared to what should be there. */
export function checkCounts(c: StatusCounts, expect: Partial<StatusCounts>): string[] {
  const problems: string[] = [];
  for (const key of Object.keys(expect) as (keyof StatusCounts)[]) {
    if (c[key] !== expect[key]) problems.push(`status --json: ${key} is ${c[key]}, expected ${String(expect[key])}`);
  }
  return problems;
}
