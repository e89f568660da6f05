import { addWebhookChannel, checkCounts, measureCycle, rawRun, simulate, statusCounts, type CycleRun } from '../lib/cycle.ts';
import { freshDatabase } from '../lib/db.ts';
import { table } from '../lib/markdown.ts';
import { startReceiver } from '../lib/receiver.ts';
import { errorText, failureList, progress, type BenchContext, type ScenarioResult } from '../lib/scenario.ts';
import { fmt, max, median, min } from '../lib/stats.ts';

/**
 * Slot refill: 200 posts due, a webhook that answers 200 after 200 ms, 25 in flight
 * as one worker of 25 or five workers of 5. Ideal = 200 / 25 x 200 ms = 1.6 s.
 * Wall = the whole `cron` process (start-ups included); drain = first request to the
 * last answer at the receiver (start-ups left out: how well freed slots are refilled).
 */
const DELAY_MS = 200;
const POSTS = 200;
const IN_FLIGHT = 25;
const IDEAL_MS = (POSTS / IN_FLIGHT) * DELAY_MS;
const CRON_TIMEOUT_MS = 70_000;
const SHAPES = [
  { workers: 1, concurrency: 25 },
  { workers: 5, concurrency: 5 },
] as const;

export async function refillScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const failures: string[] = [];
  const rows: string[][] = [];
  const raw: Record<string, unknown>[] = [];
  const receiver = await startReceiver(DELAY_MS);
  try {
    for (const dialect of ctx.dialects) {
      for (const shape of SHAPES) {
        const label = `${shape.workers}×${shape.concurrency}`;
        const env = {
          MIN_WORKERS: String(shape.workers),
          MAX_WORKERS: String(shape.workers),
          WORKER_CONCURRENCY: String(shape.concurrency),
          BATCH_SIZE: String(shape.concurrency),
        };
        const runs: CycleRun[] = [];
        const drains: number[] = [];
        const pointFailures: string[] = [];
        const db = await freshDatabase(dialect);
        try {
          await addWebhookChannel(db, 'hook', receiver.url);
          for (let rep = 1; rep <= ctx.reps; rep++) {
            await simulate(db, 'hook', POSTS);
            receiver.reset();
            const run = await measureCycle({ db, env, expectPublished: POSTS, timeoutMs: CRON_TIMEOUT_MS });
            const problems = [...run.problems];
            if (receiver.stats.ids.size !== POSTS) problems.push(`receiver got ${receiver.stats.ids.size} distinct posts, expected ${POSTS}`);
            if (run.log.summary?.workersSpawned !== shape.workers) problems.push(`spawned ${String(run.log.summary?.workersSpawned)} workers, expected ${shape.workers}`);
            const arrivals = receiver.stats.arrivals;
            const drain = arrivals.length === 0 ? Number.NaN : (arrivals[arrivals.length - 1] ?? 0) - (arrivals[0] ?? 0) + DELAY_MS;
            for (const p of problems) pointFailures.push(`refill ${dialect} ${label} rep ${rep}: ${p}`);
            runs.push(run);
            drains.push(drain);
            raw.push({ dialect, shape: label, rep, idealMs: IDEAL_MS, drainMs: drain, ...rawRun(run), problems });
            progress(`refill ${dialect} ${label} rep ${rep}: wall ${Math.round(run.wallMs)} ms, drain ${drain} ms${problems.length > 0 ? ' FAILED' : ''}`);
          }
          const counts = await statusCounts(db);
          for (const p of checkCounts(counts, { published: POSTS * ctx.reps, duePending: 0, processing: 0, failed: 0 })) pointFailures.push(`refill ${dialect} ${label}: ${p}`);
        } catch (e) {
          pointFailures.push(`refill ${dialect} ${label}: ${errorText(e)}`);
        } finally {
          await db.drop();
        }
        failures.push(...pointFailures);
        if (pointFailures.length > 0 || runs.length < ctx.reps) {
          rows.push([dialect, label, '**FAILED**', '', '', '', '']);
          continue;
        }
        const walls = runs.map((r) => r.wallMs);
        rows.push([
          dialect,
          label,
          fmt(median(walls), 0),
          fmt(median(walls) / IDEAL_MS, 2),
          fmt(median(drains), 0),
          fmt(median(drains) / IDEAL_MS, 2),
          `${fmt(min(drains) / IDEAL_MS, 2)}–${fmt(max(drains) / IDEAL_MS, 2)}`,
        ]);
      }
    }
  } finally {
    await receiver.close();
  }
  const markdown = [
    '## Refill',
    '',
    `${POSTS} posts due; a webhook receiver answering 200 after ${DELAY_MS} ms; 25 in flight as one worker of 25 or five workers of 5 ` +
      `(MIN_WORKERS=MAX_WORKERS, BATCH_SIZE=WORKER_CONCURRENCY). Ideal ${IDEAL_MS} ms. Wall = whole \`node dist/cli.cjs cron\` process, spawn to exit; ` +
      `drain = the receiver's first request to its last answer (start-ups left out: how soon freed slots are refilled). ` +
      `${ctx.reps} repetitions per row, median. ${ctx.machine}`,
    '',
    table(['DB', 'workers×in flight', 'wall median ms', 'wall/ideal', 'drain median ms', 'drain/ideal', 'drain/ideal min–max'], rows),
  ].join('\n');
  return { markdown: markdown + failureList(failures), raw, failures };
}
