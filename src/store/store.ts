import { TRANSITIONS } from '../states.ts';
import type { OnUnknown, PostStatus } from '../types.ts';
import type { QueueStore } from './concerns/queue.ts';
import type { PostsStore } from './concerns/posts.ts';
import type { ChannelStore } from './concerns/channels.ts';
import type { CoordinationStore } from './concerns/coordination.ts';
import type { RateStore } from './concerns/rate.ts';
import type { AlertStore } from './concerns/alerts.ts';
import type { HistoryStore } from './concerns/history.ts';
import type { FiguresStore } from './concerns/figures.ts';

export type { ClaimOptions, Exchange, NextDue } from './concerns/queue.ts';
export { LIST_TEXT } from './concerns/posts.ts';
export type { PostQuery, PostListItem, PostAttempt, PostEdit } from './concerns/posts.ts';
export type { ChannelChanges, ChannelRemoval } from './concerns/channels.ts';
export type { DueWatch } from './concerns/coordination.ts';
export type { RateKey, RateGrant } from './concerns/rate.ts';
export type { AlertCandidate, NewAlert } from './concerns/alerts.ts';
export type { CycleHistory } from './concerns/history.ts';
export type { ActivityReport, MetricsSnapshot, HistogramSnapshot, TuneHistory, DueChannelLoad } from './concerns/figures.ts';

/**
 * The one storage interface, by concern (src/store/concerns: one file each, with the
 * types each uses). Each dialect (src/store/sqlite, src/store/postgres, src/store/mysql) implements it
 * in a folder of the same file names, one per concern, and test/store.conformance.ts
 * runs the same suite, organised the same way, against each. Every method that changes
 * a post's status is one transition of states.ts.
 */
export interface Store extends QueueStore, PostsStore, ChannelStore, CoordinationStore, RateStore, AlertStore, HistoryStore, FiguresStore {
  readonly dialect: Dialect;
  /**
   * Its statements run in this process, on the caller's thread (SQLite): a round trip is
   * this process's own CPU, and nothing the caller started runs beside it. False where a
   * round trip is a wait on a server, which the caller's other work can overlap.
   */
  readonly inProcess: boolean;
  /** opening it created the database (a new SQLite file): commands say so */
  readonly created: boolean;
  /** creates or upgrades the schema; safe to call from many processes at once */
  migrate(): Promise<void>;
  /** a round trip to the database; throws when it cannot be reached */
  ping(): Promise<void>;
  /**
   * Connections the server takes from ordinary clients, and how many are open now;
   * null where there is no such limit (SQLite).
   */
  connections(): Promise<{ max: number; used: number } | null>;
  close(): Promise<void>;
}

export type Dialect = 'sqlite' | 'postgres' | 'mysql';

export class StoreError extends Error {
  override name = 'StoreError';
}

/**
 * The one-line refusal of a database (a SQLite file, a PostgreSQL schema) that holds
 * another application's tables and none of post-scheduler's: its tables (`channels`,
 * `cycles`, `schema_migrations`) would meet the application's.
 */
export function foreignTablesMessage(where: string, tables: readonly string[], fix: string): string {
  const shown = tables.slice(0, 5).join(', ') + (tables.length > 5 ? `, ... (${tables.length})` : '');
  return `${where} already holds another application's tables (${shown}) and none of post-scheduler's: ${fix}`;
}

/** The one-line refusal of a database migrated by a newer post-scheduler. */
export function newerSchemaMessage(found: number, known: number, where: string): string {
  return `the database ${where} has schema version ${found}, newer than this post-scheduler knows (${known}): upgrade post-scheduler (migrations are never undone)`;
}

/** The message every store records when a lease runs out. */
export function leaseExpiredMessage(workerId: string | null, attempts: number, held: boolean): string {
  const what = `lease expired: worker ${workerId ?? '(unknown)'} stopped without recording an outcome (attempt ${attempts})`;
  return held ? `${what}; it may have been published: check the channel, then retry or mark-published` : what;
}

/**
 * The status a post whose lease expired moves to, by its channel's policy (null: no
 * channel); `attempts` counts from the latest operator retry.
 */
export function recoveredStatus(onUnknown: OnUnknown | null, attempts: number, maxAttempts: number): PostStatus {
  const held = onUnknown === null || onUnknown === 'hold' || attempts >= maxAttempts;
  return held ? TRANSITIONS.recoverUnknown.to : TRANSITIONS.recover.to;
}
