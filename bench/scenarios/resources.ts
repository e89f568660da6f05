import { addWebhookChannel, checkCounts, measureCycle, rawRun, simulate, statusCounts, type CycleRun, type Entry } from '../lib/cycle.ts';
import { freshDatabase } from '../lib/db.ts';
import { bareNodeMemory } from '../lib/memory.ts';
import { table } from '../lib/markdown.ts';
import { baseEnv } from '../lib/proc.ts';
import { startReceiver } from '../lib/receiver.ts';
import { errorText, failureList, progress, type BenchContext, type ScenarioResult } from '../lib/scenario.ts';
import { fmt, max, median, min } from '../lib/stats.ts';

/**
 * Resources, from the JSON logs: worker spawn-to-first-claim (worker's first-claim
 * line time minus the dispatcher's `Spawning worker: <id>` line time, and the
 * worker's own msSinceProcessStart), worker maxRssMb, dispatcher maxRssMb, for 1 and
 * 23 posts due, and the whole cycle's peak summed RSS and PSS (bench/lib/memory.ts). Each
 * repetition runs `node dist/cli.cjs cron` and then, on fresh posts,
 * `node dist/cron/post-scheduler.cron.js` (the seed's entry point) for comparison.
 */
const DELAY_MS = 200;
const CRON_TIMEOUT_MS = 70_000;

const spread = (xs: readonly number[], digits = 0) => (xs.length === 0 ? 'n/a' : `${fmt(median(xs), digits)} (${fmt(min(xs), digits)}–${fmt(max(xs), digits)})`);

export async function resourcesScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const failures: string[] = [];
  const raw: Record<string, unknown>[] = [];
  const rows: string[][] = [];
  const receiver = await startReceiver(DELAY_MS);
  try {
    for (const dialect of ctx.dialects) {
      for (const n of [1, 23]) {
        const runs: Record<Entry, CycleRun[]> = { cli: [], 'cron-entry': [] };
        const pointFailures: string[] = [];
        const db = await freshDatabase(dialect);
        try {
          await addWebhookChannel(db, 'hook', receiver.url);
          for (let rep = 1; rep <= ctx.reps; rep++) {
            for (const entry of ['cli', 'cron-entry'] as const) {
              await simulate(db, 'hook', n);
              receiver.reset();
              const run = await measureCycle({ db, entry, expectPublished: n, timeoutMs: CRON_TIMEOUT_MS, sampleMemory: entry === 'cli' });
              const problems = [...run.problems];
              if (receiver.stats.ids.size !== n) problems.push(`receiver got ${receiver.stats.ids.size} distinct posts, expected ${n}`);
              for (const w of run.log.workers) {
                if (w.spawnedAt === null || w.firstClaimAt === null || w.maxRssMb === null) problems.push(`worker ${w.id}: spawn, first-claim or last line missing from the log`);
              }
              for (const p of problems) pointFailures.push(`resources ${dialect} ${n} due ${entry} rep ${rep}: ${p}`);
              runs[entry].push(run);
              raw.push({ dialect, postsDue: n, rep, ...rawRun(run), problems });
              progress(`resources ${dialect} ${n} due ${entry} rep ${rep}: ${Math.round(run.wallMs)} ms, dispatcher ${run.log.summary?.maxRssMb ?? '?'} MB${problems.length > 0 ? ' FAILED' : ''}`);
            }
          }
          const counts = await statusCounts(db);
          for (const p of checkCounts(counts, { published: 2 * n * ctx.reps, duePending: 0, processing: 0, failed: 0 })) pointFailures.push(`resources ${dialect} ${n} due: ${p}`);
        } catch (e) {
          pointFailures.push(`resources ${dialect} ${n} due: ${errorText(e)}`);
        } finally {
          await db.drop();
        }
        failures.push(...pointFailures);
        if (pointFailures.length > 0 || runs.cli.length < ctx.reps || runs['cron-entry'].length < ctx.reps) {
          rows.push([dialect, String(n), '', '**FAILED**', '', '', '', '', '', '', '', '']);
          continue;
        }
        const workers = runs.cli.flatMap((r) => r.log.workers);
        const spawnToClaim = workers.flatMap((w) => (w.spawnedAt !== null && w.firstClaimAt !== null ? [w.firstClaimAt - w.spawnedAt] : []));
        const sinceStart = workers.flatMap((w) => (w.msSinceProcessStart === null ? [] : [w.msSinceProcessStart]));
        const workerRss = workers.flatMap((w) => (w.maxRssMb === null ? [] : [w.maxRssMb]));
        const dispatcherRss = (entry: Entry) => runs[entry].map((r) => r.log.summary?.maxRssMb ?? Number.NaN);
        const wall = (entry: Entry) => fmt(median(runs[entry].map((r) => r.wallMs)), 0);
        const emptyClaims = workers.filter((w) => w.firstClaimed === 0).length;
        const groupPeak = (key: 'peakRssMb' | 'peakPssMb') => runs.cli.flatMap((r) => (r.memory === null || r.memory.samples === 0 ? [] : [r.memory[key]]));
        rows.push([
          dialect,
          String(n),
          [...new Set(runs.cli.map((r) => r.log.summary?.workersSpawned ?? -1))].join('/'),
          spread(spawnToClaim),
          spread(sinceStart),
          spread(workerRss),
          spread(dispatcherRss('cli')),
          spread(dispatcherRss('cron-entry')),
          `${wall('cli')} / ${wall('cron-entry')}`,
          `${emptyClaims} of ${workers.length}`,
          spread(groupPeak('peakRssMb')),
          spread(groupPeak('peakPssMb')),
        ]);
      }
    }
  } finally {
    await receiver.close();
  }
  // what six Node processes (a dispatcher and five workers) map before any code of ours runs
  const floor = await bareNodeMemory(6, baseEnv()).catch((e: unknown) => {
    failures.push(`resources: bare node processes: ${errorText(e)}`);
    return null;
  });
  if (floor !== null) raw.push({ bareNode: { processes: 6, ...floor } });
  const floorLine =
    floor === null
      ? ''
      : ` Floor: six bare Node processes (\`node -e\`, idle, in the same environment) sum to ${floor.rssMb} MB of RSS and ${floor.pssMb} MB of PSS at once: no cycle of a dispatcher and five workers, each a Node process, sums less RSS.`;
  const markdown = [
    '## 3. Resources',
    '',
    `Posts due: 1 (1 worker) or 23 (5 workers), default config, webhook receiver answering 200 after ${DELAY_MS} ms. ` +
      `${ctx.reps} repetitions; each repetition runs \`node dist/cli.cjs cron\` and then, on fresh posts, \`node dist/cron/post-scheduler.cron.js\`. ` +
      'Worker figures are over all workers of the `dist/cli.cjs cron` runs (median, (min–max)); spawn→first claim = worker\'s first-claim line `time` minus the dispatcher\'s `Spawning worker: <id>` line `time`; ' +
      `msSinceProcessStart is the worker's own figure. MB are maxRSS as the processes report it (dispatcher: at its summary line). ` +
      'Cycle peak: the `dist/cli.cjs cron` process group (dispatcher and workers) sampled every 50 ms from outside, the highest sum over its processes at one instant: ' +
      'RSS counts the pages the processes share (the node binary, libraries) once per process; PSS divides them among the processes that share them, so summed PSS is what the cycle holds.' +
      floorLine +
      ' ' +
      ctx.machine,
    '',
    table(
      [
        'DB',
        'posts due',
        'workers',
        'spawn→first claim ms',
        'msSinceProcessStart',
        'worker maxRssMb',
        'dispatcher maxRssMb, dist/cli.cjs cron',
        'dispatcher maxRssMb, dist/cron/post-scheduler.cron.js',
        'cycle wall median ms (cli / cron.js)',
        'workers whose first claim got 0 posts',
        'cycle peak summed RSS MB',
        'cycle peak summed PSS MB',
      ],
      rows,
    ),
  ].join('\n');
  return { markdown: markdown + failureList(failures), raw, failures };
}
