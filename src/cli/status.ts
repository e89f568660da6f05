import type { Command } from 'commander';
import { makeVault } from '../credentials/vault.ts';
import type { Channel, CycleRecord, LatenessReport, StatusReport } from '../types.ts';
import { credentialsState } from './channels.ts';
import { configFrom, parsePositiveInt, print, withStore, type GlobalFlags } from './context.ts';

/** Channels whose credentials are not sealed with the current key: what an operator should fix. */
interface CredentialsReport {
  readonly key: string | null;
  readonly attention: readonly { readonly channel: string; readonly state: string }[];
  /** channels whose credentials the network refused or the key cannot open: their posts wait */
  readonly needsOperator: readonly { readonly channel: string; readonly reason: string }[];
}

/** The window lateness is measured over: a day, at most the 10,000 most recent publications (a bounded index read). */
const LATENESS_WINDOW_MS = 24 * 3_600_000;
const LATENESS_LIMIT = 10_000;

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

/** 850ms, 12.3s, 4m 10s, 2h 5m: a duration a person reads without counting digits. */
export function humanMs(ms: number | null): string {
  if (ms === null) return '-';
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

export function registerStatus(program: Command, globals: () => GlobalFlags): void {
  program
    .command('status')
    .description("the seed's monitoring figures: posts by state and the last cycles")
    .option('--json', 'one JSON object')
    .option('--cycles <n>', 'how many recent cycles', '10')
    .action(async (flags: { json?: boolean; cycles: string }) => {
      const config = configFrom(globals());
      const cycles = parsePositiveInt(flags.cycles, '--cycles', 1000);
      const vault = makeVault(config.secretKey);
      await withStore(config, async (store) => {
        const report = await store.status(cycles);
        const glance = glanceAt(report, await store.lateness(LATENESS_WINDOW_MS, LATENESS_LIMIT));
        const channels = await store.listChannels();
        const attention = channels
          .map((c: Channel) => ({ channel: c.name, state: credentialsState(c, vault) }))
          .filter((c) => c.state !== 'none' && !c.state.startsWith('sealed (key'));
        const needsOperator = channels.flatMap((c) => (c.attention === null ? [] : [{ channel: c.name, reason: c.attention }]));
        const credentials: CredentialsReport = { key: vault.keyId, attention, needsOperator };
        if (flags.json === true) print(JSON.stringify({ database: config.databaseLabel, ...report, glance, credentials }, null, 2));
        else printStatus(report, glance, config.databaseLabel, credentials);
      });
    });
}

const lastCycles = (n: number) => (n === 1 ? 'last cycle' : `last ${n} cycles`);

function printGlance(g: Glance): void {
  const l = g.lateness;
  const rows: [string, string, string][] = [
    ['due now', String(g.dueNow), ''],
    ['failed posts', String(g.failedPosts), g.failedPosts > 0 ? 'see Recent failures; post-scheduler retry ID' : ''],
    [
      'worker success',
      g.workerSuccessRate === null ? '-' : `${(g.workerSuccessRate * 100).toFixed(1)}%`,
      `${g.workersSucceeded} of ${g.workersSpawned} workers, ${lastCycles(g.cyclesCounted)}`,
    ],
    ['average cycle', humanMs(g.averageCycleMs), g.cyclesCounted === 0 ? 'no cycles yet' : `over the ${lastCycles(g.cyclesCounted)}`],
    [
      'lateness p50',
      humanMs(l.p50Ms),
      l.posts === 0 ? 'nothing published in the last 24 h' : `${l.posts} posts published in the last 24 h${l.posts >= LATENESS_LIMIT ? ' (the latest 10,000)' : ''}, from their scheduled time`,
    ],
    ['lateness p90', humanMs(l.p90Ms), ''],
    ['lateness p99', humanMs(l.p99Ms), `max ${humanMs(l.maxMs)}`],
  ];
  print('At a glance');
  for (const [label, value, note] of rows) print(`  ${label.padEnd(16)}${value.padStart(9)}${note === '' ? '' : `   ${note}`}`);
}

function printStatus(report: StatusReport, glance: Glance, database: string, credentials: CredentialsReport): void {
  const c = report.counts;
  print(`Database: ${database}`);
  print(`Credentials: ${credentials.key === null ? 'POST_SCHEDULER_SECRET_KEY is not set (credentials cannot be stored encrypted)' : `sealed with key ${credentials.key}`}`);
  for (const a of credentials.attention) print(`  channel ${a.channel}: credentials ${a.state}`);
  for (const n of credentials.needsOperator) print(`  channel ${n.channel} needs attention, its posts wait: ${n.reason}`);
  print();
  printGlance(glance);
  print();
  print('Posts');
  const rows: [string, number][] = [
    ['due pending', c.duePending],
    ['scheduled later', c.scheduledLater],
    ['processing', c.processing],
    ['published', c.published],
    ['failed', c.failed],
    ['cancelled', c.cancelled],
    ['unknown outcome', c.unknown],
  ];
  const estimated = new Set(report.estimated ? ['published', 'failed', 'cancelled'] : []);
  for (const [label, n] of rows) print(`  ${label.padEnd(17)}${((estimated.has(label) ? '~' : '') + String(n)).padStart(8)}`);
  if (report.estimated) print('  (~ estimated from the table statistics: a large table; the other counts are exact)');
  print();
  if (report.cycles.length === 0) {
    print('No cycles yet. Run one: post-scheduler cron');
  } else {
    print('Last cycles');
    const head = ['id', 'started (UTC)', 'host', 'pending', 'spawned', 'ok', 'failed', 'duration', 'exit'];
    const widths = [6, 26, 16, 9, 9, 5, 8, 11, 5];
    const line = (cells: string[]) =>
      print('  ' + cells.map((s, i) => (i === 1 || i === 2 ? s.slice(0, widths[i]).padEnd(widths[i] ?? 0) : s.padStart(widths[i] ?? 0))).join(' '));
    line(head);
    for (const cy of report.cycles) {
      line([
        String(cy.id),
        cy.startedAt.toISOString(),
        cy.host,
        String(cy.pending),
        String(cy.workersSpawned),
        String(cy.workersSucceeded),
        String(cy.workersFailed),
        // an unfinished cycle whose lock expired: its dispatcher was killed
        cy.state === 'finished' ? `${cy.durationMs ?? 0}ms` : cy.state,
        cy.exitCode === null ? '-' : String(cy.exitCode),
      ]);
    }
  }
  if (report.pausedChannels.length > 0) {
    print();
    print('Paused by a rate limit (their posts wait, attempts kept)');
    for (const p of report.pausedChannels) print(`  ${p.channel} until ${p.until.toISOString()}: ${p.reason ?? ''}`);
  }
  if (report.operatorPaused.length > 0) {
    print();
    print('Paused by an operator (their posts wait until: post-scheduler channels resume --name N)');
    for (const p of report.operatorPaused) print(`  ${p.channel} since ${p.since.toISOString()}`);
  }
  if (report.unknownPosts.length > 0) {
    print();
    print(`Outcome unknown (${c.unknown}): may have been published; check the channel, then`);
    print('  post-scheduler mark-published ID   (it went out)   or   post-scheduler retry ID   (send again)');
    for (const u of report.unknownPosts) print(`  post ${u.id} on ${u.channel ?? '(no channel)'} (attempts ${u.attempts}): ${u.lastError ?? ''}`);
  }
  if (report.recentFailures.length > 0) {
    print();
    print('Recent failures');
    for (const f of report.recentFailures) print(`  post ${f.id} (attempts ${f.attempts}): ${f.lastError ?? ''}`);
  }
}
