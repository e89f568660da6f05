import path from 'node:path';
import { addFileChannel, checkCounts, measureCycle, rawRun, simulate, statusCounts, type CycleRun } from '../lib/cycle.ts';
import { freshDatabase } from '../lib/db.ts';
import { table } from '../lib/markdown.ts';
import { errorText, failureList, progress, type BenchContext, type ScenarioResult } from '../lib/scenario.ts';
import { fmt, max, median, min } from '../lib/stats.ts';

/**
 * Idle cost of posts scheduled for later: cycle wall time with 1 post due and 100 vs
 * 100,000 posts scheduled a day ahead. One fresh database per row; the later posts
 * are inserted once (not timed), one due post before each repetition.
 */
const CRON_TIMEOUT_MS = 70_000;

export async function idleScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const failures: string[] = [];
  const raw: Record<string, unknown>[] = [];
  const rows: string[][] = [];
  for (const dialect of ctx.dialects) {
    for (const later of [100, 100_000]) {
      const runs: CycleRun[] = [];
      const pointFailures: string[] = [];
      const db = await freshDatabase(dialect);
      try {
        await addFileChannel(db, 'out', path.join(db.dir, 'published.jsonl'));
        const insertStart = performance.now();
        await simulate(db, 'out', later, '+1d');
        progress(`idle ${dialect}: ${later} later posts inserted in ${Math.round(performance.now() - insertStart)} ms`);
        for (let rep = 1; rep <= ctx.reps; rep++) {
          await simulate(db, 'out', 1);
          const run = await measureCycle({ db, expectPublished: 1, timeoutMs: CRON_TIMEOUT_MS });
          for (const p of run.problems) pointFailures.push(`idle ${dialect} ${later} later rep ${rep}: ${p}`);
          runs.push(run);
          raw.push({ dialect, scheduledLater: later, rep, ...rawRun(run) });
          progress(`idle ${dialect} ${later} later rep ${rep}: ${Math.round(run.wallMs)} ms${run.problems.length > 0 ? ' FAILED' : ''}`);
        }
        const counts = await statusCounts(db);
        for (const p of checkCounts(counts, { published: ctx.reps, scheduledLater: later, duePending: 0, processing: 0, failed: 0 })) {
          pointFailures.push(`idle ${dialect} ${later} later: ${p}`);
        }
      } catch (e) {
        pointFailures.push(`idle ${dialect} ${later} later: ${errorText(e)}`);
      } finally {
        await db.drop();
      }
      failures.push(...pointFailures);
      if (pointFailures.length > 0 || runs.length < ctx.reps) {
        rows.push([dialect, later.toLocaleString('en-US'), '**FAILED**', '', '', '']);
        continue;
      }
      const walls = runs.map((r) => r.wallMs);
      rows.push([
        dialect,
        later.toLocaleString('en-US'),
        fmt(median(walls), 0),
        fmt(min(walls), 0),
        fmt(max(walls), 0),
        fmt(median(runs.map((r) => r.log.summary?.durationMs ?? Number.NaN)), 0),
      ]);
    }
  }
  const markdown = [
    '## 4. Idle cost of posts scheduled for later',
    '',
    'One post due now plus 100 or 100,000 posts scheduled for later (`simulate --at +1d`, inserted once, not timed); default config; `file` publisher. ' +
      `Wall = whole \`node dist/cli.cjs cron\` process, spawn to exit. ${ctx.reps} repetitions per row (a new due post before each), one fresh database per row. ${ctx.machine}`,
    '',
    table(['DB', 'posts scheduled later', 'wall median ms', 'min ms', 'max ms', 'dispatcher durationMs median'], rows),
  ].join('\n');
  return { markdown: markdown + failureList(failures), raw, failures };
}
