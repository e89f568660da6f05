/**
 * The benchmark harness: `npm run bench [-- --quick] [-- --only seed,throughput,resources,idle,ratelimit,sizing,precise]`.
 * Runs the built CLI (dist/) as real processes against fresh SQLite files and
 * PostgreSQL schemas (and, for the seed and throughput scenarios, MySQL/MariaDB databases
 * where a server answers at 127.0.0.1:3306), prints markdown tables, and writes bench/results/latest.md and
 * latest.json. Exits 1 when any run or check failed.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { watchForeignProcesses } from './lib/foreign.ts';
import { DIALECTS, dropAll, MYSQL_URL, mysqlAvailable, postgresAvailable, type Dialect } from './lib/db.ts';
import { Report } from './lib/markdown.ts';
import { CLI, ENV_KIND, killAllChildren, ROOT, startedGroups, startupCpuMs } from './lib/proc.ts';
import { errorText, progress, type BenchContext, type ScenarioResult } from './lib/scenario.ts';
import { idleScenario } from './scenarios/idle.ts';
import { preciseScenario } from './scenarios/precise.ts';
import { ratelimitScenario } from './scenarios/ratelimit.ts';
import { refillScenario } from './scenarios/refill.ts';
import { resourcesScenario } from './scenarios/resources.ts';
import { seedScenario } from './scenarios/seed.ts';
import { sizingScenario } from './scenarios/sizing.ts';
import { throughputScenario } from './scenarios/throughput.ts';

const SCENARIOS = {
  seed: seedScenario,
  throughput: throughputScenario,
  resources: resourcesScenario,
  idle: idleScenario,
  ratelimit: ratelimitScenario,
  sizing: sizingScenario,
  precise: preciseScenario,
  refill: refillScenario,
} as const;
type ScenarioName = keyof typeof SCENARIOS;
const NAMES = Object.keys(SCENARIOS) as ScenarioName[];
/** The scenarios that also run on MySQL/MariaDB (when a server answers); the others on SQLite and PostgreSQL. */
const MYSQL_SCENARIOS: readonly ScenarioName[] = ['seed', 'throughput'];

const USAGE = `usage: node --import tsx bench/run.ts [--quick] [--only ${NAMES.join(',')}]`;

function parseArgs(argv: readonly string[]): { quick: boolean; only: ScenarioName[] } {
  let quick = false;
  let only: ScenarioName[] = NAMES;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--quick') {
      quick = true;
    } else if (a === '--only' || a.startsWith('--only=')) {
      const value = a === '--only' ? argv[++i] : a.slice('--only='.length);
      if (value === undefined || value === '') throw new Error('--only needs a list');
      const names = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
      for (const n of names) if (!(NAMES as string[]).includes(n)) throw new Error(`unknown scenario "${n}" (known: ${NAMES.join(', ')})`);
      only = NAMES.filter((n) => names.includes(n));
    } else if (a === '--help' || a === '-h') {
      process.stdout.write(USAGE + '\n');
      process.exit(0);
    } else {
      throw new Error(`unknown argument "${a}"`);
    }
  }
  return { quick, only };
}

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 10_000 }).trim();
  } catch {
    return 'unknown';
  }
}

/** Processes in the process groups this run started that are still alive. */
function leftoverProcesses(): string[] {
  const out = sh('ps', ['-eo', 'pid=,pgid=,stat=,args=']);
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => {
      const [, pgid, stat] = l.split(/\s+/);
      // zombies (stat Z) have exited and only wait to be reaped
      return startedGroups.has(Number(pgid)) && stat !== undefined && !stat.startsWith('Z');
    });
}

/** A hash of every file under dist/, to tell whether a rebuild happened during the run. */
function distHash(): string {
  const hash = createHash('sha256');
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.isFile()) hash.update(path.relative(ROOT, full)).update(fs.readFileSync(full));
    }
  };
  walk(path.join(ROOT, 'dist'));
  return hash.digest('hex').slice(0, 12);
}

const load1 = () => Math.round((os.loadavg()[0] ?? 0) * 100) / 100;

let cleaning: Promise<void> | null = null;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    killAllChildren();
    await dropAll();
  })();
  return cleaning;
}

async function main(): Promise<number> {
  let opts: { quick: boolean; only: ScenarioName[] };
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`bench: ${errorText(e)}\n${USAGE}\n`);
    return 2;
  }
  if (!fs.existsSync(CLI)) {
    process.stderr.write(`bench: ${CLI} is missing: run npm run build first (npm run bench does)\n`);
    return 2;
  }
  const started = performance.now();
  const startedAt = new Date();
  const failures: string[] = [];

  const pgError = await postgresAvailable();
  // MySQL/MariaDB is optional (npm ships no server): left out in one line of the report, not a failure
  const my = await mysqlAvailable();
  const dialects: Dialect[] = DIALECTS.filter((d) => (d !== 'postgres' || pgError === null) && (d !== 'mysql' || my.ok));
  if (pgError !== null) failures.push(`PostgreSQL at 127.0.0.1:5432 did not answer (${pgError}); PostgreSQL rows were not run`);
  if (!my.ok) progress(`no MySQL/MariaDB at ${MYSQL_URL} (${my.reason}): its rows are not run`);

  const nproc = sh('nproc', []);
  const commit = sh('git', ['describe', '--always', '--dirty']);
  const srcDiff = createHash('sha256').update(sh('git', ['diff', 'HEAD', '--', 'src'])).digest('hex').slice(0, 12);
  const distAtStart = distHash();
  const cpu = os.cpus()[0]?.model.trim() ?? 'unknown CPU';
  const startup = startupCpuMs();
  const machineInfo = { nproc, node: process.version, cpu, os: `${os.type()} ${os.release()}`, memGb: Math.round(os.totalmem() / 2 ** 30), env: ENV_KIND, startupCpuMs: startup, commit, srcDiffSha256: srcDiff, distSha256: distAtStart };
  const machine = `Machine: nproc ${nproc}, Node ${process.version}, ${cpu}, ${machineInfo.memGb} GB RAM.`;
  const ctx: BenchContext = { quick: opts.quick, reps: opts.quick ? 2 : 5, dialects, machine };

  const report = new Report();
  report.add(
    [
      '# post-scheduler benchmark',
      '',
      `Run ${startedAt.toISOString()}, ${opts.quick ? '**quick** mode (2 repetitions, N ≤ 50, 2,000-post throughput)' : 'full mode'}; scenarios: ${opts.only.join(', ')}.`,
      `${machine} ${machineInfo.os}. Code: \`${commit}\` (uncommitted src/ diff sha256 \`${srcDiff}\`; dist/ sha256 \`${distAtStart}\`, built by \`npm run build\` just before the run).`,
      `Databases: SQLite file in a temp dir; PostgreSQL 127.0.0.1:5432/test, schema bench_<random> per database, dropped afterwards.` +
        (pgError === null ? '' : ` **PostgreSQL unreachable: ${pgError}**`) +
        (my.ok
          ? ` ${my.version} at 127.0.0.1:3306, database bench_<random> per database, dropped afterwards (scenarios ${MYSQL_SCENARIOS.join(', ')} only).`
          : ` MySQL/MariaDB: none at 127.0.0.1:3306 (${my.reason}), not run.`),
      `Environment of the program's processes: ${ENV_KIND === 'cron' ? "what system cron gives a job (SHELL, PATH, HOME, LOGNAME, LANG) and the program's settings, not this shell's (`BENCH_ENV=shell` to run them in it)" : "this shell's (`BENCH_ENV=shell`), not what system cron gives a job"}. ` +
        `A bare Node start-up (\`node -e 0\`, median of 9) takes ${startup.cron.toFixed(0)} ms of CPU in cron's environment, ${startup.shell.toFixed(0)} ms in this shell's` +
        (process.env['NODE_EXTRA_CA_CERTS'] === undefined ? '.' : ' (it exports NODE_EXTRA_CA_CERTS, which Node 20 parses at each start).'),
    ].join('\n'),
  );

  const foreignWatch = watchForeignProcesses();
  const results: Partial<Record<ScenarioName, ScenarioResult>> = {};
  const timings: Record<string, { seconds: number; load1Before: number; load1After: number }> = {};
  for (const name of opts.only) {
    const scenarioStart = performance.now();
    const loadBefore = load1();
    progress(`scenario ${name}`);
    // Throughput keeps 3 repetitions in full mode, as its 10,000-post runs are long.
    const scenarioCtx: BenchContext = {
      ...ctx,
      ...(name === 'throughput' && !opts.quick ? { reps: 3 } : {}),
      dialects: ctx.dialects.filter((d) => d !== 'mysql' || MYSQL_SCENARIOS.includes(name)),
    };
    try {
      const r = await SCENARIOS[name](scenarioCtx);
      results[name] = r;
      failures.push(...r.failures);
      const seconds = (performance.now() - scenarioStart) / 1000;
      timings[name] = { seconds: Math.round(seconds), load1Before: loadBefore, load1After: load1() };
      report.add(r.markdown + `\n\n_${name}: ${seconds.toFixed(0)} s; 1-min load average ${loadBefore} before, ${load1()} after._`);
    } catch (e) {
      const msg = `${name}: scenario aborted: ${errorText(e)}`;
      failures.push(msg);
      report.add(`## ${name}\n\n**FAILED**: ${msg}`);
    }
  }

  const foreign = foreignWatch.stop();
  await cleanup();
  const distAtEnd = distHash();
  if (distAtEnd !== distAtStart) failures.push(`dist/ changed during the run (sha256 ${distAtStart} -> ${distAtEnd}): a rebuild happened, results mix builds`);
  const left = leftoverProcesses();
  if (left.length > 0) failures.push(`processes left running after the run (killed now): ${left.join('; ')}`);
  killAllChildren();

  const totalS = (performance.now() - started) / 1000;
  report.add(
    [
      '## Run',
      '',
      `Total wall time: ${totalS.toFixed(0)} s. Leftover processes after the run: ${left.length === 0 ? 'none' : left.length}.`,
      foreign.seen.length === 0
        ? `Other node/npm processes on the machine during the run: none seen (${foreign.samples} samples of ps).`
        : `**Other node/npm processes ran on the machine during the run** (they share the ${nproc} cores and distort the timings), seen in ${foreign.samples} samples of ps:\n\n` +
          foreign.seen.slice(0, 10).map((f) => `- ${f.samples}× \`${f.command}\``).join('\n') +
          (foreign.seen.length > 10 ? `\n- … and ${foreign.seen.length - 10} more` : ''),
      failures.length === 0 ? 'All runs exited 0 and published every post.' : `**${failures.length} FAILURES**:\n\n${failures.map((f) => `- ${f}`).join('\n')}`,
    ].join('\n'),
  );

  const dir = path.join(ROOT, 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'latest.md'), report.text());
  const json = {
    startedAt: startedAt.toISOString(),
    mode: opts.quick ? 'quick' : 'full',
    scenarios: opts.only,
    machine: machineInfo,
    totalSeconds: Math.round(totalS * 10) / 10,
    scenarioTimings: timings,
    foreignProcesses: foreign,
    failures,
    results: Object.fromEntries(Object.entries(results).map(([k, v]) => [k, v.raw])),
  };
  fs.writeFileSync(path.join(dir, 'latest.json'), JSON.stringify(json, null, 2) + '\n');
  progress(`wrote bench/results/latest.md and latest.json; ${failures.length} failures; ${totalS.toFixed(0)} s`);
  return failures.length === 0 ? 0 : 1;
}

let signalled = false;
const onSignal = (signal: NodeJS.Signals) => {
  if (signalled) process.exit(130);
  signalled = true;
  process.stderr.write(`bench: ${signal}, cleaning up\n`);
  void cleanup().finally(() => process.exit(130));
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);
process.on('exit', () => killAllChildren());

main().then(
  async (code) => {
    await cleanup();
    process.exit(code);
  },
  async (e: unknown) => {
    process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    await cleanup();
    process.exit(1);
  },
);
