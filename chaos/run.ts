/**
 * `npm run chaos`: the fault-tolerance proof. Runs chaos/scenario.ts on SQLite, on
 * PostgreSQL (an embedded server it can restart) and, with `--db mysql`, on MariaDB (a
 * server of its own started from the machine's mariadb-server binaries), and prints one table; exits 1 when a
 * post was lost, accepted twice, or sent under a second idempotency key, or when more
 * worker processes than GLOBAL_MAX_WORKERS were alive at once in any sample (every 50 ms).
 *
 *   npm run chaos -- --posts 2000 --seed 7 --db sqlite,postgres,mysql --chaos-ms 10000 [--json report.json]
 */
import fs from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import { mariadbBinariesAvailable } from '../test/helpers/restartable-mysql.ts';
import { runChaos, type ChaosDialect, type ChaosReport } from './scenario.ts';
import { FAULT_NAMES, type FaultName } from './receiver.ts';

const whole = (name: string) => (value: string) => {
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new InvalidArgumentError(`${name} must be a whole number of at least 1`);
  return Number(value);
};
const fraction = (value: string) => {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0 || n > 1) throw new InvalidArgumentError('a rate is a fraction from 0 to 1');
  return n;
};

const program = new Command('chaos')
  .description('publish posts through crashes, faults and a database restart; count what was lost or sent twice')
  .option('--posts <n>', 'posts per database', whole('--posts'), 2000)
  .option('--seed <n>', 'seed of every random choice', whole('--seed'), 1)
  .option('--db <list>', 'sqlite, postgres, mysql (MariaDB binaries needed), comma-separated', 'sqlite,postgres')
  .option('--chaos-ms <ms>', 'how long faults and kills go on', whole('--chaos-ms'), 10_000)
  .option('--kill-every-ms <ms>', 'mean time between worker SIGKILLs', whole('--kill-every-ms'), 400)
  .option('--latency-ms <ms>', 'the receiver answers an accepted post after up to this long', whole('--latency-ms'), 200)
  .option('--rate-500 <f>', 'share of requests answered 500', fraction)
  .option('--rate-429 <f>', 'share answered 429 with Retry-After: 1', fraction)
  .option('--rate-hang <f>', 'share never answered (half of them processed first)', fraction)
  .option('--rate-reset <f>', 'share whose connection is reset (half of them processed first)', fraction)
  .option('--json <file>', 'also write the reports (every figure of the table, and more) to this file as JSON');

const DBS: readonly ChaosDialect[] = ['sqlite', 'postgres', 'mysql'];

interface Flags {
  posts: number;
  seed: number;
  db: string;
  chaosMs: number;
  killEveryMs: number;
  latencyMs: number;
  rate500?: number;
  rate429?: number;
  rateHang?: number;
  rateReset?: number;
  json?: string;
}

async function main(): Promise<number> {
  const flags = program.parse().opts<Flags>();
  const dbs = flags.db.split(',').map((d) => d.trim());
  const unknownDb = dbs.find((d) => !(DBS as readonly string[]).includes(d));
  if (unknownDb !== undefined) {
    process.stderr.write(`chaos: unknown --db "${unknownDb}": use sqlite, postgres, mysql or several, comma-separated\n`);
    return 1;
  }
  if (dbs.includes('mysql') && !mariadbBinariesAvailable()) {
    process.stderr.write('chaos: --db mysql runs a MariaDB server of its own: install mariadb-server (/usr/sbin/mariadbd, /usr/bin/mariadb-install-db)\n');
    return 1;
  }
  const rates: Partial<Record<FaultName, number>> = {};
  if (flags.rate500 !== undefined) rates.status500 = flags.rate500;
  if (flags.rate429 !== undefined) rates.status429 = flags.rate429;
  if (flags.rateHang !== undefined) rates.hang = flags.rateHang;
  if (flags.rateReset !== undefined) rates.reset = flags.rateReset;
  const reports: ChaosReport[] = [];
  for (const dialect of dbs as ChaosDialect[]) {
    reports.push(await runChaos({ dialect, posts: flags.posts, seed: flags.seed, chaosMs: flags.chaosMs, killEveryMs: flags.killEveryMs, latencyMs: flags.latencyMs, rates }));
  }
  process.stdout.write(formatReports(reports));
  if (flags.json !== undefined) fs.writeFileSync(flags.json, JSON.stringify(reports.map((r) => ({ ...r, passed: passed(r), capHeld: capHeld(r) })), null, 2) + '\n');
  return reports.some((r) => !passed(r)) ? 1 : 0;
}

export function passed(r: ChaosReport): boolean {
  return r.lost === 0 && r.acceptedDuplicates === 0 && r.keyChanges === 0 && capHeld(r);
}

/** GLOBAL_MAX_WORKERS held in every sample of the run (not only at the kills). */
export function capHeld(r: ChaosReport): boolean {
  return r.samplesOverCap === 0 && r.mostWorkers <= r.globalMaxWorkers;
}

export function formatReports(reports: readonly ChaosReport[]): string {
  const rows: [string, (r: ChaosReport) => string][] = [
    ['posts', (r) => String(r.posts)],
    ['published', (r) => String(r.published)],
    ['failed', (r) => String(r.failed)],
    ['unknown (held)', (r) => `${r.unknown} (${r.unknownDelivered} in fact delivered)`],
    ['false unknowns (never accepted)', (r) => String(r.unknownNeverDelivered)],
    ['lost (must be 0)', (r) => String(r.lost)],
    ['accepted twice (must be 0)', (r) => String(r.acceptedDuplicates)],
    ['duplicate sends, same key', (r) => String(r.duplicateSends)],
    ['sent under a 2nd key (must be 0)', (r) => String(r.keyChanges)],
    ['faults 500/429/hang/reset', (r) => FAULT_NAMES.map((f) => r.faults[f]).join('/')],
    ['workers SIGKILLed', (r) => String(r.workersKilled)],
    ['dispatchers SIGKILLed', (r) => String(r.dispatchersKilled)],
    ['dispatchers SIGTERMed', (r) => String(r.dispatchersStopped)],
    ['most workers at once', (r) => `${r.mostWorkers} (GLOBAL_MAX_WORKERS ${r.globalMaxWorkers})`],
    ['samples over the cap (must be 0)', (r) => `${r.samplesOverCap} of ${r.workerSamples}`],
    ['database restarts', (r) => (r.dialect === 'sqlite' ? 'n/a' : String(r.databaseRestarts))],
    ['cycles', (r) => String(r.cycles)],
    ['wall time', (r) => `${(r.wallMs / 1000).toFixed(1)} s`],
    ['result', (r) => (passed(r) ? 'PASS' : 'FAIL')],
  ];
  const width = Math.max(...rows.map(([label]) => label.length)) + 2;
  const col = 28;
  let out = '\n' + ''.padEnd(width) + reports.map((r) => r.dialect.padEnd(col)).join('') + '\n';
  for (const [label, cell] of rows) out += label.padEnd(width) + reports.map((r) => cell(r).padEnd(col)).join('') + '\n';
  for (const r of reports) {
    for (const [reason, n] of Object.entries(r.failedReasons)) out += `${r.dialect} failed x${n}: ${reason}\n`;
    const held = Object.entries(r.unknownNeverDeliveredReasons).sort((a, b) => b[1] - a[1]);
    for (const [reason, n] of held) out += `${r.dialect} unknown, never accepted x${n}: ${reason}\n`;
    if (r.lostIds.length > 0) out += `${r.dialect} lost posts: ${r.lostIds.slice(0, 20).join(', ')}\n`;
  }
  return out;
}

if (process.argv[1]?.endsWith('run.ts') === true) {
  main().then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`chaos: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
