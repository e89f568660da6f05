import { addWebhookChannel, checkCounts, measureCycle, rawRun, simulate, statusCounts, type CycleRun } from '../lib/cycle.ts';
import { freshDatabase } from '../lib/db.ts';
import { table } from '../lib/markdown.ts';
import { startReceiver } from '../lib/receiver.ts';
import { errorText, failureList, progress, type BenchContext, type ScenarioResult } from '../lib/scenario.ts';
import { fmt, max, median, min } from '../lib/stats.ts';

/**
 * Seed throughput table: N posts due, default config (5 workers x 5 concurrency = 25
 * in flight), a webhook that answers 200 after 200 ms. Wall time of the whole
 * `cron` process against the ideal ceil(N/25) x 200 ms.
 */
const DELAY_MS = 200;
const IN_FLIGHT = 25;
const CRON_TIMEOUT_MS = 70_000;

export async function seedScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const ns = ctx.quick ? [5, 10, 23, 25, 50] : [5, 10, 23, 25, 50, 200];
  const failures: string[] = [];
  const rows: string[][] = [];
  const raw: Record<string, unknown>[] = [];
  const receiver = await startReceiver(DELAY_MS);
  try {
    for (const dialect of ctx.dialects) {
      for (const n of ns) {
        const ideal = Math.ceil(n / IN_FLIGHT) * DELAY_MS;
        const runs: CycleRun[] = [];
        const maxInFlight: number[] = [];
        const pointFailures: string[] = [];
        const db = await freshDatabase(dialect);
        try {
          await addWebhookChannel(db, 'hook', receiver.url);
          for (let rep = 1; rep <= ctx.reps; rep++) {
            await simulate(db, 'hook', n);
            receiver.reset();
            const run = await measureCycle({ db, expectPublished: n, timeoutMs: CRON_TIMEOUT_MS });
            const problems = [...run.problems];
            if (receiver.stats.ids.size !== n) problems.push(`receiver got ${receiver.stats.ids.size} distinct posts, expected ${n}`);
            if (receiver.stats.requests !== receiver.stats.ids.size) problems.push(`receiver got ${receiver.stats.requests} requests for ${receiver.stats.ids.size} posts`);
            for (const p of problems) pointFailures.push(`seed ${dialect} N=${n} rep ${rep}: ${p}`);
            runs.push(run);
            maxInFlight.push(receiver.stats.maxInFlight);
            raw.push({ dialect, n, rep, idealMs: ideal, receiverMaxInFlight: receiver.stats.maxInFlight, ...rawRun(run), problems });
            progress(`seed ${dialect} N=${n} rep ${rep}: ${Math.round(run.wallMs)} ms${problems.length > 0 ? ' FAILED' : ''}`);
          }
          const counts = await statusCounts(db);
          for (const p of checkCounts(counts, { published: n * ctx.reps, duePending: 0, processing: 0, failed: 0 })) {
            pointFailures.push(`seed ${dialect} N=${n}: ${p}`);
          }
        } catch (e) {
          pointFailures.push(`seed ${dialect} N=${n}: ${errorText(e)}`);
        } finally {
          await db.drop();
        }
        failures.push(...pointFailures);
        const walls = runs.map((r) => r.wallMs);
        const workers = [...new Set(runs.map((r) => r.log.summary?.workersSpawned ?? -1))].join('/');
        if (pointFailures.length > 0 || runs.length < ctx.reps) {
          rows.push([dialect, String(n), workers, String(ideal), '**FAILED**', '', '', '', '', '']);
        } else {
          rows.push([
            dialect,
            String(n),
            workers,
            String(ideal),
            fmt(median(walls)),
            fmt(min(walls)),
            fmt(max(walls)),
            fmt(median(walls.map((w) => w / ideal)), 2),
            fmt(median(runs.map((r) => r.log.summary?.durationMs ?? Number.NaN))),
            `${min(maxInFlight)}–${max(maxInFlight)}`,
          ]);
        }
      }
    }
  } finally {
    await receiver.close();
  }
  const markdown = [
    '## 1. Seed throughput table',
    '',
    `Posts due: N; default config (BATCH_SIZE=5, MAX_WORKERS=5, WORKER_CONCURRENCY=5 → 25 in flight); webhook channel to a local receiver answering 200 after ${DELAY_MS} ms. ` +
      `Wall = whole \`node dist/cli.cjs cron\` process, spawn to exit. Ideal = ceil(N/25) × ${DELAY_MS} ms. ` +
      `${ctx.reps} repetitions per row, fresh posts each time (one fresh database per row). ${ctx.machine}`,
    '',
    table(
      ['DB', 'N', 'workers', 'ideal ms', 'wall median ms', 'min ms', 'max ms', 'median ratio wall/ideal', 'dispatcher durationMs median', 'receiver max in flight (min–max)'],
      rows,
    ),
  ].join('\n');
  return { markdown: markdown + failureList(failures), raw, failures };
}
