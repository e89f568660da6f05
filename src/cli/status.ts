import type { Command } from 'commander';
import { LATENESS_LIMIT, statusObject, statusOf, type CredentialsReport, type Glance } from '../operations/status.ts';
import type { StatusReport } from '../types.ts';
import { configFrom, parsePositiveInt, print, withStore, type GlobalFlags } from './context.ts';

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
      await withStore(config, async (store) => {
        const { report, glance, credentials } = await statusOf(store, config.secretKey, cycles);
        if (flags.json === true) print(JSON.stringify(statusObject(config.databaseLabel, { report, glance, credentials }), null, 2));
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
