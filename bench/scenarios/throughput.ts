import fs from 'node:fs';
import path from 'node:path';
import { addFileChannel, addWebhookChannel, measureCycle, rawRun, simulate, type CycleRun } from '../lib/cycle.ts';
import { freshDatabase, type Dialect } from '../lib/db.ts';
import { table } from '../lib/markdown.ts';
import { startReceiver, type Receiver } from '../lib/receiver.ts';
import { errorText, failureList, progress, type BenchContext, type ScenarioResult } from '../lib/scenario.ts';
import { fmt, max, median, min } from '../lib/stats.ts';

/**
 * Throughput: many posts due, at most 25 in flight, the file publisher and a webhook
 * answering 200 at once; posts/s = posts / cron wall time. A fresh database per run;
 * the posts are inserted with `simulate` before the clock starts.
 */
interface Shape {
  readonly maxWorkers: number;
  readonly concurrency: number;
  readonly batch: number;
}

// The defaults first; then shapes with at most 25 in flight in fewer workers, whose
// claims carry bigger batches (a claim takes the free slots, at most BATCH_SIZE).
const SHAPES: readonly Shape[] = [
  { maxWorkers: 5, concurrency: 5, batch: 5 },
  { maxWorkers: 5, concurrency: 5, batch: 25 },
  { maxWorkers: 2, concurrency: 12, batch: 100 },
  { maxWorkers: 1, concurrency: 25, batch: 200 },
];
const PUBLISHERS = ['file', 'webhook'] as const;
type PublisherKind = (typeof PUBLISHERS)[number];
const TIMEOUTS = { TIMEOUT_MS: '120000', WORKER_TIMEOUT_MS: '110000' };
const CRON_TIMEOUT_MS = 150_000;

const label = (s: Shape) => `MAX_WORKERS=${s.maxWorkers} WORKER_CONCURRENCY=${s.concurrency} BATCH_SIZE=${s.batch}`;

function countLines(file: string): number {
  if (!fs.existsSync(file)) return 0;
  const text = fs.readFileSync(file, 'utf8');
  return text === '' ? 0 : text.split('\n').filter((l) => l !== '').length;
}

export async function throughputScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const posts = ctx.quick ? 2_000 : 10_000;
  const failures: string[] = [];
  const raw: Record<string, unknown>[] = [];
  const rows: string[][] = [];
  const receiver: Receiver = await startReceiver(0);
  try {
    for (const dialect of ctx.dialects) {
      for (const publisher of PUBLISHERS) {
        const runs = new Map<Shape, CycleRun[]>(SHAPES.map((s) => [s, []]));
        const bad = new Map<Shape, string[]>(SHAPES.map((s) => [s, []]));
        // Repetitions outside, shapes inside: slow drift of the machine spreads over all shapes.
        for (let rep = 1; rep <= ctx.reps; rep++) {
          for (const shape of SHAPES) {
            const problems = await measureOne(dialect, publisher, shape, posts, receiver, rep, runs, raw);
            bad.get(shape)?.push(...problems.map((p) => `throughput ${dialect} ${publisher} ${label(shape)} rep ${rep}: ${p}`));
          }
        }
        for (const shape of SHAPES) {
          const list = runs.get(shape) ?? [];
          const problems = bad.get(shape) ?? [];
          failures.push(...problems);
          const cfg = `${shape.maxWorkers}×${shape.concurrency}, batch ${shape.batch}`;
          if (problems.length > 0 || list.length < ctx.reps) {
            rows.push([dialect, publisher, cfg, '', '**FAILED**', '', '', '', '']);
            continue;
          }
          const walls = list.map((r) => r.wallMs);
          const perWorker = list.flatMap((r) => r.log.workers.map((w) => w.published ?? 0));
          const workers = [...new Set(list.map((r) => r.log.summary?.workersSpawned ?? -1))].join('/');
          rows.push([
            dialect,
            publisher,
            cfg,
            workers,
            fmt(median(walls) / 1000, 2),
            fmt(posts / (median(walls) / 1000)),
            `${fmt(posts / (max(walls) / 1000))}–${fmt(posts / (min(walls) / 1000))}`,
            fmt(median(list.map((r) => r.log.summary?.durationMs ?? Number.NaN)) / 1000, 2),
            workers === '1' ? '—' : `${min(perWorker)}–${max(perWorker)}`,
          ]);
        }
      }
    }
  } finally {
    await receiver.close();
  }
  const markdown = [
    '## 2. Throughput',
    '',
    `${posts.toLocaleString('en-US')} posts due (inserted with \`simulate\` before timing, fresh database per run); TIMEOUT_MS=120000 WORKER_TIMEOUT_MS=110000; ` +
      `publisher \`file\` (JSON lines to a temp file) or \`webhook\` to a local receiver answering 200 at once. ` +
      `posts/s = ${posts} / wall time of \`node dist/cli.cjs cron\` (spawn to exit). ${ctx.reps} repetitions per row, median. ` +
      `Config column: MAX_WORKERS×WORKER_CONCURRENCY, BATCH_SIZE. ${ctx.machine}`,
    '',
    table(
      ['DB', 'publisher', 'config', 'workers', 'wall median s', 'posts/s (median)', 'posts/s min–max', 'dispatcher durationMs median s', 'posts per worker (min–max over all runs)'],
      rows,
    ),
  ].join('\n');
  return { markdown: markdown + failureList(failures), raw, failures };
}

async function measureOne(
  dialect: Dialect,
  publisher: PublisherKind,
  shape: Shape,
  posts: number,
  receiver: Receiver,
  rep: number,
  runs: Map<Shape, CycleRun[]>,
  raw: Record<string, unknown>[],
): Promise<string[]> {
  const db = await freshDatabase(dialect);
  const problems: string[] = [];
  try {
    const out = path.join(db.dir, 'published.jsonl');
    if (publisher === 'file') await addFileChannel(db, 'out', out);
    else await addWebhookChannel(db, 'out', receiver.url);
    await simulate(db, 'out', posts);
    receiver.reset();
    const env = { MAX_WORKERS: String(shape.maxWorkers), WORKER_CONCURRENCY: String(shape.concurrency), BATCH_SIZE: String(shape.batch), ...TIMEOUTS };
    const run = await measureCycle({ db, env, expectPublished: posts, timeoutMs: CRON_TIMEOUT_MS });
    problems.push(...run.problems);
    if (publisher === 'file') {
      const lines = countLines(out);
      if (lines !== posts) problems.push(`file publisher wrote ${lines} lines, expected ${posts}`);
    } else {
      if (receiver.stats.ids.size !== posts) problems.push(`receiver got ${receiver.stats.ids.size} distinct posts, expected ${posts}`);
      if (receiver.stats.requests !== receiver.stats.ids.size) problems.push(`receiver got ${receiver.stats.requests} requests for ${receiver.stats.ids.size} posts`);
    }
    runs.get(shape)?.push(run);
    raw.push({
      dialect,
      publisher,
      ...shape,
      posts,
      rep,
      postsPerSecond: posts / (run.wallMs / 1000),
      ...rawRun(run),
      problems,
    });
    progress(`throughput ${dialect} ${publisher} ${label(shape)} rep ${rep}: ${(run.wallMs / 1000).toFixed(2)} s, ${Math.round(posts / (run.wallMs / 1000))} posts/s${problems.length > 0 ? ' FAILED' : ''}`);
  } catch (e) {
    problems.push(errorText(e));
  } finally {
    await db.drop();
  }
  return problems;
}
