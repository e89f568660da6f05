import type { Command } from 'commander';
import { makeVault } from '../credentials/vault.ts';
import type { Channel, StatusReport } from '../types.ts';
import { credentialsState } from './channels.ts';
import { configFrom, parsePositiveInt, print, withStore, type GlobalFlags } from './context.ts';

/** Channels whose credentials are not sealed with the current key: what an operator should fix. */
interface CredentialsReport {
  readonly key: string | null;
  readonly attention: readonly { readonly channel: string; readonly state: string }[];
  /** channels whose credentials the network refused or the key cannot open: their posts wait */
  readonly needsOperator: readonly { readonly channel: string; readonly reason: string }[];
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
        const channels = await store.listChannels();
        const attention = channels
          .map((c: Channel) => ({ channel: c.name, state: credentialsState(c, vault) }))
          .filter((c) => c.state !== 'none' && !c.state.startsWith('sealed (key'));
        const needsOperator = channels.flatMap((c) => (c.attention === null ? [] : [{ channel: c.name, reason: c.attention }]));
        const credentials: CredentialsReport = { key: vault.keyId, attention, needsOperator };
        if (flags.json === true) print(JSON.stringify({ database: config.databaseLabel, ...report, credentials }, null, 2));
        else printStatus(report, config.databaseLabel, credentials);
      });
    });
}

function printStatus(report: StatusReport, database: string, credentials: CredentialsReport): void {
  const c = report.counts;
  print(`Database: ${database}`);
  print(`Credentials: ${credentials.key === null ? 'POST_SCHEDULER_SECRET_KEY is not set (credentials cannot be stored encrypted)' : `sealed with key ${credentials.key}`}`);
  for (const a of credentials.attention) print(`  channel ${a.channel}: credentials ${a.state}`);
  for (const n of credentials.needsOperator) print(`  channel ${n.channel} needs attention, its posts wait: ${n.reason}`);
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
