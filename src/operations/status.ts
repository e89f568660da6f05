import { credentialsState } from '../credentials/state.ts';
import { makeVault } from '../credentials/vault.ts';
import type { Store } from '../store/store.ts';
import type { Channel, CycleRecord, LatenessReport, StatusReport } from '../types.ts';

/**
 * The status of `status --json` and `GET /api/status`: one function, so the two cannot
 * drift. Never a credential's value: only how each is stored.
 */

/** Channels whose credentials are not sealed with the current key: what an operator should fix. */
export interface CredentialsReport {
  readonly key: string | null;
  readonly attention: readonly { readonly channel: string; readonly state: string }[];
  /** channels whose credentials the network refused or the key cannot open: their posts wait */
  readonly needsOperator: readonly { readonly channel: string; readonly reason: string }[];
}

/** The window lateness is measured over: a day, at most the 10,000 most recent publications (a bounded index read). */
export const LATENESS_WINDOW_MS = 24 * 3_600_000;
export const LATENESS_LIMIT = 10_000;

/** The seed's key figures, from the last cycles and the posts: what `status` shows first. */
export interface Glance {
  readonly dueNow: number;
  readonly failedPosts: number;
  /** workers that exited 0, of those spawned, over `cyclesCounted` cycles (null: none spawned) */
  readonly workerSuccessRate: number | null;
  readonly workersSpawned: number;
  readonly workersSucceeded: number;
  /** mean duration of the finished cycles among the last ones (null: none finished) */
  readonly averageCycleMs: number | null;
  readonly cyclesCounted: number;
  readonly lateness: LatenessReport;
}

export function glanceAt(report: StatusReport, lateness: LatenessReport): Glance {
  const finished = report.cycles.filter((c: CycleRecord) => c.state === 'finished' && c.durationMs !== null);
  const spawned = report.cycles.reduce((n, c) => n + c.workersSpawned, 0);
  const succeeded = report.cycles.reduce((n, c) => n + c.workersSucceeded, 0);
  return {
    dueNow: report.counts.duePending,
    failedPosts: report.counts.failed,
    workerSuccessRate: spawned === 0 ? null : succeeded / spawned,
    workersSpawned: spawned,
    workersSucceeded: succeeded,
    averageCycleMs: finished.length === 0 ? null : Math.round(finished.reduce((n, c) => n + (c.durationMs ?? 0), 0) / finished.length),
    cyclesCounted: report.cycles.length,
    lateness,
  };
}

export interface Status {
  readonly report: StatusReport;
  readonly glance: Glance;
  readonly credentials: CredentialsReport;
}

/** The figures of `status`, over the last `cycles` cycles. */
export async function statusOf(store: Store, secretKey: Buffer | null, cycles: number): Promise<Status> {
  const vault = makeVault(secretKey);
  const report = await store.status(cycles);
  const glance = glanceAt(report, await store.lateness(LATENESS_WINDOW_MS, LATENESS_LIMIT));
  const channels = await store.listChannels();
  const attention = channels
    .map((c: Channel) => ({ channel: c.name, state: credentialsState(c, vault) }))
    .filter((c) => c.state !== 'none' && !c.state.startsWith('sealed (key'));
  const needsOperator = channels.flatMap((c) => (c.attention === null ? [] : [{ channel: c.name, reason: c.attention }]));
  return { report, glance, credentials: { key: vault.keyId, attention, needsOperator } };
}

/** The one object `status --json` prints and `GET /api/status` answers. */
export function statusObject(database: string, status: Status): Record<string, unknown> {
  return { database, ...status.report, glance: status.glance, credentials: status.credentials };
}
