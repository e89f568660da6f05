/* eslint-disable @typescript-eslint/no-unnecessary-type-conversion --
   the drivers return ids and counts as numbers or as strings (int8) depending on the dialect */
import type { WorkerRun } from '../types.ts';
import { required, type TimeValue } from './rows.ts';

/** One worker_runs row, as both dialects read it. */
export interface WorkerRunRow {
  cycle_id: number | string;
  worker_id: string;
  started_at: TimeValue;
  finished_at: TimeValue;
  exit_code: number | null;
  signal: string | null;
  published: number;
  retried: number;
  failed: number;
}

export function workerRunFromRow(row: WorkerRunRow): WorkerRun {
  return {
    workerId: row.worker_id,
    startedAt: required(row.started_at, 'worker_runs.started_at'),
    finishedAt: required(row.finished_at, 'worker_runs.finished_at'),
    exitCode: row.exit_code === null ? null : Number(row.exit_code),
    signal: row.signal,
    published: Number(row.published),
    retried: Number(row.retried),
    failed: Number(row.failed),
  };
}

/** The runs of each cycle id, in worker order. */
export function runsByCycle(rows: readonly WorkerRunRow[]): Map<number, WorkerRun[]> {
  const by = new Map<number, WorkerRun[]>();
  for (const row of rows) {
    const id = Number(row.cycle_id);
    const list = by.get(id) ?? [];
    list.push(workerRunFromRow(row));
    by.set(id, list);
  }
  return by;
}

/** Bucket rows (`at`: a bucket's start in epoch ms, `status`, `n`) as the published and failed series. */
export function seriesOf(rows: readonly { at: number | string; status: string; n: number | string }[]): {
  published: { at: Date; posts: number }[];
  failed: { at: Date; posts: number }[];
} {
  const pick = (status: string) =>
    rows
      .filter((r) => r.status === status)
      .map((r) => ({ at: new Date(Number(r.at)), posts: Number(r.n) }))
      .sort((a, b) => a.at.getTime() - b.at.getTime());
  return { published: pick('published'), failed: pick('failed') };
}
