import type { Logger } from '../log.ts';
import type { CyclePosts, CycleResult, WorkerRun } from '../types.ts';
import type { WorkerExit } from './spawn.ts';

const RULE = '========================================';

/** The seed's "Dispatch Summary" block, with the posts' outcomes added. */
export function logSummary(log: Logger, result: CycleResult, exits: readonly WorkerExit[]): void {
  const sum = (pick: (e: WorkerExit) => number) => exits.reduce((n, e) => n + pick(e), 0);
  const avg = exits.length === 0 ? 0 : Math.round(sum((e) => e.durationMs) / exits.length);
  const row = (label: string, value: string | number) => log.info(`${(label + ':').padEnd(22)}${value}`);
  log.blank();
  log.info(RULE);
  log.info('Dispatch Summary:');
  log.info(RULE);
  row('Pending posts', result.pending);
  if (result.recovered > 0) row('Recovered posts', result.recovered);
  row('Workers spawned', result.workersSpawned);
  row('Successful workers', result.workersSucceeded);
  row('Failed workers', result.workersFailed);
  if (exits.length > 0) {
    row('Posts published', sum((e) => e.report?.published ?? 0));
    row('Posts to retry', sum((e) => e.report?.retried ?? 0));
    row('Posts failed', sum((e) => e.report?.failed ?? 0));
    const unknown = sum((e) => e.report?.unknown ?? 0);
    if (unknown > 0) row('Outcome unknown', unknown);
  }
  row('Total duration', `${result.durationMs}ms`);
  row('Avg worker duration', `${avg}ms`);
  log.info(RULE, {
    summary: true,
    ...result,
    posts: undefined,
    published: result.posts.published,
    retried: result.posts.retried,
    failed: result.posts.failed,
    unknown: result.posts.held,
    avgWorkerMs: avg,
    maxRssMb: Math.round(process.resourceUsage().maxRSS / 1024),
  });
  log.blank();
}

/** Each worker's run of a cycle as the cycle's record keeps it (Store.finishCycle). */
export function workerRuns(exits: readonly WorkerExit[]): WorkerRun[] {
  return exits.map((r) => ({
    workerId: r.workerId,
    startedAt: r.startedAt,
    finishedAt: r.finishedAt,
    exitCode: r.exitCode,
    signal: r.signal,
    published: r.report?.published ?? 0,
    retried: r.report?.retried ?? 0,
    failed: r.report?.failed ?? 0,
  }));
}

/** The outcomes the workers of a cycle reported, summed. */
export function cyclePosts(exits: readonly WorkerExit[]): CyclePosts {
  const sum = (pick: (e: WorkerExit) => number) => exits.reduce((n, e) => n + pick(e), 0);
  return {
    published: sum((e) => e.report?.published ?? 0),
    retried: sum((e) => e.report?.retried ?? 0),
    failed: sum((e) => e.report?.failed ?? 0),
    held: sum((e) => e.report?.unknown ?? 0),
  };
}
