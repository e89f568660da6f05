import { measureCycle, rawRun, simulate, type CycleRun } from '../lib/cycle.ts';
import { freshDatabase, type Dialect } from '../lib/db.ts';
import { table } from '../lib/markdown.ts';
import { childEnv, mustRunCli } from '../lib/proc.ts';
import { startReceiver, type Receiver } from '../lib/receiver.ts';
import { errorText, failureList, progress, type BenchContext, type ScenarioResult } from '../lib/scenario.ts';
import { fmt, max, median, min } from '../lib/stats.ts';

/**
 * Rate limit: a webhook channel limited to N posts per window (`--rate-limit`), M posts
 * due, five workers; the receiver timestamps every request. Reported: the steady rate
 * after the first window's burst, (M - N) / (t[M-1] - t[N-1]), against the limit N/W
 * (target: within 10% of it), and the most requests seen in any window of W (must be
 * at most N).
 */
const N = 20;
const WINDOW_MS = 2_000;
const POSTS = 100;
const LIMIT_PER_S = N / (WINDOW_MS / 1000);
const ENV = { MIN_WORKERS: '5', MAX_WORKERS: '5', WORKER_CONCURRENCY: '5', BATCH_SIZE: '5', TIMEOUT_MS: '120000', WORKER_TIMEOUT_MS: '110000' };

/** The most arrivals in any window [t, t + windowMs). */
export function maxInWindow(sorted: readonly number[], windowMs: number): number {
  let best = 0;
  let j = 0;
  for (let i = 0; i < sorted.length; i++) {
    j = Math.max(j, i);
    while (j < sorted.length && (sorted[j] ?? 0) < (sorted[i] ?? 0) + windowMs) j++;
    best = Math.max(best, j - i);
  }
  return best;
}

interface Measured {
  readonly run: CycleRun;
  readonly rate: number;
  readonly maxSeen: number;
}

export async function ratelimitScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const reps = Math.min(ctx.reps, 3);
  const failures: string[] = [];
  const raw: Record<string, unknown>[] = [];
  const rows: string[][] = [];
  const receiver = await startReceiver(0);
  try {
    for (const dialect of ctx.dialects) {
      const good: Measured[] = [];
      for (let rep = 1; rep <= reps; rep++) {
        try {
          const m = await measureOne(dialect, receiver, rep, raw);
          if (m.problems.length === 0) good.push(m);
          else failures.push(...m.problems.map((p) => `ratelimit ${dialect} rep ${rep}: ${p}`));
        } catch (e) {
          failures.push(`ratelimit ${dialect} rep ${rep}: ${errorText(e)}`);
        }
      }
      if (good.length < reps) {
        rows.push([dialect, `${N}/${WINDOW_MS / 1000}s`, String(POSTS), '**FAILED**', '', '', '', '']);
        continue;
      }
      const rates = good.map((g) => g.rate);
      rows.push([
        dialect,
        `${N}/${WINDOW_MS / 1000}s`,
        String(POSTS),
        fmt(median(good.map((g) => g.run.wallMs)) / 1000, 2),
        fmt(median(rates), 2),
        `${fmt(min(rates), 2)}–${fmt(max(rates), 2)}`,
        `${fmt((median(rates) / LIMIT_PER_S) * 100, 1)}%`,
        `${max(good.map((g) => g.maxSeen))} (limit ${N})`,
      ]);
    }
  } finally {
    await receiver.close();
  }
  const markdown = [
    '## Rate limit',
    '',
    `A webhook channel with \`--rate-limit ${N}/${WINDOW_MS / 1000}s\` to a local receiver answering 200 at once; ${POSTS} posts due (inserted with \`simulate\`); ` +
      `one \`cron\` with MIN_WORKERS=MAX_WORKERS=5, WORKER_CONCURRENCY=5, BATCH_SIZE=5. The receiver timestamps every request. ` +
      `Steady rate = (M − N) / (t[M−1] − t[N−1]): the rate after the first window's burst, against the limit ${LIMIT_PER_S}/s (target: within 10%, never above). ` +
      `Max in a window = the most requests that arrived in any ${WINDOW_MS} ms. ${reps} repetitions, median. ${ctx.machine}`,
    '',
    table(['DB', 'limit', 'posts', 'cron wall median s', 'steady posts/s (median)', 'min–max', 'of the limit', 'max in any window (all runs)'], rows),
  ].join('\n');
  return { markdown: markdown + failureList(failures), raw, failures };
}

async function measureOne(dialect: Dialect, receiver: Receiver, rep: number, raw: Record<string, unknown>[]): Promise<Measured & { problems: string[] }> {
  const db = await freshDatabase(dialect);
  try {
    await mustRunCli(['channels', 'add', '--name', 'limited', '--platform', 'webhook', '--url', receiver.url, '--rate-limit', `${N}/${WINDOW_MS / 1000}s`], childEnv(db.url), 60_000);
    await simulate(db, 'limited', POSTS);
    receiver.reset();
    const run = await measureCycle({ db, env: ENV, expectPublished: POSTS, timeoutMs: 150_000 });
    const problems = [...run.problems];
    const t = [...receiver.stats.arrivals].sort((a, b) => a - b);
    if (receiver.stats.ids.size !== POSTS || t.length !== POSTS) problems.push(`receiver got ${t.length} requests for ${receiver.stats.ids.size} distinct posts, expected ${POSTS}`);
    const rate = (POSTS - N) / (((t[POSTS - 1] ?? 0) - (t[N - 1] ?? 0)) / 1000);
    const maxSeen = maxInWindow(t, WINDOW_MS);
    if (maxSeen > N) problems.push(`${maxSeen} requests arrived within ${WINDOW_MS} ms, above the limit of ${N}`);
    raw.push({ dialect, rep, limit: N, windowMs: WINDOW_MS, posts: POSTS, steadyPostsPerSecond: rate, maxInWindow: maxSeen, ...rawRun(run), problems });
    progress(`ratelimit ${dialect} rep ${rep}: ${rate.toFixed(2)} posts/s against ${LIMIT_PER_S}/s, at most ${maxSeen} in ${WINDOW_MS} ms${problems.length > 0 ? ' FAILED' : ''}`);
    return { run, rate, maxSeen, problems };
  } finally {
    await db.drop();
  }
}
