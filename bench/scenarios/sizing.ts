import { addWebhookChannel, checkCounts, measureCycle, rawRun, simulate, statusCounts, type CycleRun } from '../lib/cycle.ts';
import { freshDatabase } from '../lib/db.ts';
import { table } from '../lib/markdown.ts';
import { startReceiver } from '../lib/receiver.ts';
import { errorText, failureList, progress, type BenchContext, type ScenarioResult } from '../lib/scenario.ts';
import { fmt, max, median, min } from '../lib/stats.ts';

/**
 * The seed table (5, 10, 25, 50 posts due) against a webhook that answers after 2 s,
 * under WORKER_SIZING=seed and WORKER_SIZING=deadline, default config otherwise: workers
 * spawned, wall time of the whole `cron` process, and the peak RSS of the dispatcher and
 * of each worker summed (each process's own peak, so an upper bound of what was held at
 * once). Each database first runs one unmeasured cycle of 5 posts, so that deadline
 * sizing has the channel's publish time measured (the seed's formula ignores it).
 */
const DELAY_MS = 2_000;
const HISTORY_POSTS = 5;
const CRON_TIMEOUT_MS = 70_000;
const MODES = ['seed', 'deadline'] as const;

interface Point {
  readonly workers: string;
  readonly walls: number[];
  readonly rss: number[];
}

export async function sizingScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const ns = [5, 10, 25, 50];
  const failures: string[] = [];
  const raw: Record<string, unknown>[] = [];
  const points = new Map<string, Point>();
  const receiver = await startReceiver(DELAY_MS);
  try {
    for (const dialect of ctx.dialects) {
      for (const n of ns) {
        for (const mode of MODES) {
          const label = `sizing ${dialect} N=${n} ${mode}`;
          const runs: CycleRun[] = [];
          const pointFailures: string[] = [];
          const db = await freshDatabase(dialect);
          const env = { WORKER_SIZING: mode };
          try {
            await addWebhookChannel(db, 'hook', receiver.url);
            await simulate(db, 'hook', HISTORY_POSTS);
            const history = await measureCycle({ db, env, expectPublished: HISTORY_POSTS, timeoutMs: CRON_TIMEOUT_MS });
            for (const p of history.problems) pointFailures.push(`${label} history cycle: ${p}`);
            for (let rep = 1; rep <= ctx.reps; rep++) {
              await simulate(db, 'hook', n);
              receiver.reset();
              const run = await measureCycle({ db, env, expectPublished: n, timeoutMs: CRON_TIMEOUT_MS });
              const problems = [...run.problems];
              if (receiver.stats.ids.size !== n) problems.push(`receiver got ${receiver.stats.ids.size} distinct posts, expected ${n}`);
              if (receiver.stats.requests !== receiver.stats.ids.size) problems.push(`receiver got ${receiver.stats.requests} requests for ${receiver.stats.ids.size} posts`);
              for (const p of problems) pointFailures.push(`${label} rep ${rep}: ${p}`);
              runs.push(run);
              raw.push({ dialect, n, mode, rep, summedPeakRssMb: summedRss(run), ...rawRun(run), problems });
              progress(`${label} rep ${rep}: ${Math.round(run.wallMs)} ms, ${run.log.summary?.workersSpawned ?? '?'} workers, ${fmt(summedRss(run), 0)} MB${problems.length > 0 ? ' FAILED' : ''}`);
            }
            const counts = await statusCounts(db);
            for (const p of checkCounts(counts, { published: HISTORY_POSTS + n * ctx.reps, duePending: 0, processing: 0, failed: 0 })) pointFailures.push(`${label}: ${p}`);
          } catch (e) {
            pointFailures.push(`${label}: ${errorText(e)}`);
          } finally {
            await db.drop();
          }
          failures.push(...pointFailures);
          if (pointFailures.length === 0 && runs.length === ctx.reps) {
            points.set(`${dialect}/${n}/${mode}`, {
              workers: [...new Set(runs.map((r) => r.log.summary?.workersSpawned ?? -1))].join('/'),
              walls: runs.map((r) => r.wallMs),
              rss: runs.map(summedRss),
            });
          }
        }
      }
    }
  } finally {
    await receiver.close();
  }
  const rows: string[][] = [];
  for (const dialect of ctx.dialects) {
    for (const n of ns) {
      const seed = points.get(`${dialect}/${n}/seed`);
      const deadline = points.get(`${dialect}/${n}/deadline`);
      const cells = (p: Point | undefined) =>
        p === undefined ? ['**FAILED**', '', ''] : [p.workers, `${fmt(median(p.walls))} (${fmt(min(p.walls))}–${fmt(max(p.walls))})`, fmt(median(p.rss), 0)];
      const ratio = (pick: (p: Point) => number[]) => (seed === undefined || deadline === undefined ? '' : fmt(median(pick(deadline)) / median(pick(seed)), 2));
      rows.push([dialect, String(n), ...cells(seed), ...cells(deadline), ratio((p) => p.walls), ratio((p) => p.rss)]);
    }
  }
  const markdown = [
    '## Deadline-aware sizing on the seed table',
    '',
    `Posts due: N; default config (MAX_WORKERS=5, WORKER_CONCURRENCY=5, WORKER_TIMEOUT_MS=50000: a 45 s budget); webhook channel to a local receiver answering 200 after ${DELAY_MS} ms. ` +
      `\`WORKER_SIZING=seed\` (the seed's formula) against \`WORKER_SIZING=deadline\` on a fresh database each, after one unmeasured cycle of ${HISTORY_POSTS} posts (the channel's history). ` +
      'Wall = whole `node dist/cli.cjs cron` process, spawn to exit, median (min–max). Summed peak RSS = dispatcher + every worker, each its own peak (maxRSS), median. ' +
      `${ctx.reps} repetitions per row. ${ctx.machine}`,
    '',
    table(
      ['DB', 'N', 'seed workers', 'seed wall ms', 'seed summed peak RSS MB', 'deadline workers', 'deadline wall ms', 'deadline summed peak RSS MB', 'wall deadline/seed', 'RSS deadline/seed'],
      rows,
    ),
  ].join('\n');
  return { markdown: markdown + failureList(failures), raw, failures };
}

/** The dispatcher's peak RSS and its workers', summed (NaN when a figure is missing). */
function summedRss(run: CycleRun): number {
  const dispatcher = run.log.summary?.maxRssMb ?? Number.NaN;
  return run.log.workers.reduce((sum, w) => sum + (w.maxRssMb ?? Number.NaN), dispatcher);
}
