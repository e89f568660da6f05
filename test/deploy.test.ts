import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { builtinModules } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import postgres from 'postgres';
import { parseAllDocuments } from 'yaml';
import { DEFAULT_SCHEMA, ENV_DEFAULTS, loadConfig } from '../src/config.ts';
import { scriptHook } from './helpers/code-cache.ts';
import { createTestDatabase, postgresUrl, type TestDatabase } from './helpers/databases.ts';
import { CLI, killAll, ROOT, run, testEnv } from './helpers/processes.ts';

/**
 * The templates in deploy/ work as written: every YAML and unit file parses, and every
 * post-scheduler command and flag they name exists (its --help lists the flag).
 */
const DEPLOY = path.join(ROOT, 'deploy');
const read = (file: string) => fs.readFileSync(path.join(DEPLOY, file), 'utf8');
const DEFAULTS = loadConfig({});

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  spec: Record<string, unknown>;
}

function yamlObjects(file: string): K8sObject[] {
  const docs = parseAllDocuments(read(file));
  const list = Array.isArray(docs) ? docs : [docs];
  for (const d of list) assert.deepEqual(d.errors, [], `${file} parses`);
  return list.map((d) => d.toJS() as K8sObject);
}

interface Container {
  name: string;
  image: string;
  args: string[];
}
const containersOf = (podTemplate: unknown) => (podTemplate as { spec: { containers: Container[] } }).spec.containers;

/** A systemd unit as sections of key/value lists; throws on a line that is neither. */
function parseUnit(text: string): Map<string, [string, string][]> {
  const sections = new Map<string, [string, string][]>();
  let current: [string, string][] | null = null;
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const section = /^\[([A-Za-z]+)\]$/.exec(line);
    if (section !== null) {
      current = [];
      sections.set(section[1] ?? '', current);
      continue;
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line);
    assert.ok(kv !== null && current !== null, `line ${i + 1} is a key=value inside a section: ${line}`);
    current.push([kv[1] ?? '', kv[2] ?? '']);
  }
  return sections;
}

/** The keys these templates may use (systemd.unit(5), systemd.exec(5), systemd.service(5), systemd.timer(5), systemd.kill(5)). */
const KNOWN_KEYS: Record<string, readonly string[]> = {
  Unit: ['Description', 'Documentation', 'After', 'Wants', 'Requires'],
  Service: [
    'Type', 'User', 'Group', 'Environment', 'EnvironmentFile', 'ExecStart', 'TimeoutStartSec', 'TimeoutStopSec', 'KillMode',
    'StateDirectory', 'WorkingDirectory', 'NoNewPrivileges', 'PrivateTmp', 'ProtectSystem', 'ProtectHome', 'ProtectKernelTunables',
    'ProtectKernelModules', 'ProtectControlGroups', 'RestrictSUIDSGID', 'LockPersonality',
  ],
  Timer: ['OnCalendar', 'AccuracySec', 'Persistent', 'Unit'],
  Install: ['WantedBy'],
};

/** Every `post-scheduler` command line the templates name, as argument lists after the program. */
function commandLines(): { where: string; args: string[] }[] {
  const lines: { where: string; args: string[] }[] = [];
  const job = read('crontab').split('\n').find((l) => l.startsWith('* * * * * '));
  assert.ok(job !== undefined, 'deploy/crontab has a job line');
  const cron = /^\* \* \* \* \* \S+ post-scheduler (.*?) >>/.exec(job);
  assert.ok(cron !== null, `the crontab job runs post-scheduler: ${job}`);
  lines.push({ where: 'deploy/crontab', args: (cron[1] ?? '').split(/\s+/) });

  const service = parseUnit(read('systemd/post-scheduler.service')).get('Service') ?? [];
  const exec = service.find(([k]) => k === 'ExecStart')?.[1] ?? '';
  const m = /^\/usr\/bin\/env post-scheduler (.*)$/.exec(exec);
  assert.ok(m !== null, `ExecStart runs post-scheduler through env: ${exec}`);
  lines.push({ where: 'post-scheduler.service', args: (m[1] ?? '').split(/\s+/) });

  const docker = read('Dockerfile');
  const entry = JSON.parse(/^ENTRYPOINT (.*)$/m.exec(docker)?.[1] ?? 'null') as string[];
  assert.deepEqual(entry, ['node', '/app/dist/cli.cjs'], "the image runs the package's bin");
  lines.push({ where: 'Dockerfile CMD', args: JSON.parse(/^CMD (.*)$/m.exec(docker)?.[1] ?? '[]') as string[] });

  for (const file of ['k8s/cronjob.yaml', 'k8s/keda-scaledjob.yaml']) {
    for (const o of yamlObjects(file)) {
      const template =
        o.kind === 'CronJob'
          ? (o.spec['jobTemplate'] as { spec: { template: unknown } }).spec.template
          : o.kind === 'ScaledJob'
            ? (o.spec['jobTargetRef'] as { template: unknown }).template
            : null;
      if (template === null) continue;
      for (const c of containersOf(template)) lines.push({ where: `${file} ${c.name}`, args: c.args });
    }
  }
  return lines;
}

describe('deploy/ templates', () => {
  const dbs: TestDatabase[] = [];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ps-deploy-'));
  after(async () => {
    killAll();
    for (const db of dbs) await db.drop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('every post-scheduler command and flag a template names exists in its --help', async () => {
    const lines = commandLines();
    assert.deepEqual(
      lines.map((l) => `${l.where}: ${l.args[0] ?? ''}`),
      [
        'deploy/crontab: cron',
        'post-scheduler.service: cron',
        'Dockerfile CMD: cron',
        'k8s/cronjob.yaml cycle: cron',
        'k8s/keda-scaledjob.yaml worker: worker',
      ],
    );
    for (const { where, args } of lines) {
      const [command, ...rest] = args;
      const r = await run([command ?? '', '--help'], process.env);
      assert.equal(r.code, 0, `${where}: post-scheduler ${command ?? ''} --help: ${r.stderr}`);
      for (const flag of rest.filter((a) => a.startsWith('-'))) {
        assert.match(r.stdout, new RegExp(`(^|\\s)${flag}[ ,<]`), `${where}: post-scheduler ${command ?? ''} has ${flag}`);
      }
    }
  });

  it('systemd units: known sections and keys, systemd-analyze verify finds nothing, the timer runs each minute', () => {
    for (const file of ['post-scheduler.service', 'post-scheduler.timer']) {
      const unit = parseUnit(read(`systemd/${file}`));
      for (const [section, keys] of unit) {
        const known = KNOWN_KEYS[section];
        assert.ok(known !== undefined, `${file}: section [${section}]`);
        for (const [key] of keys) assert.ok(known.includes(key), `${file}: ${key}= in [${section}]`);
      }
    }
    const service = new Map(parseUnit(read('systemd/post-scheduler.service')).get('Service'));
    assert.equal(service.get('User'), 'post-scheduler');
    assert.ok(Number(service.get('TimeoutStartSec')) * 1000 > DEFAULTS.timeoutMs, 'the backstop is above the cycle guard (TIMEOUT_MS)');
    const timer = new Map(parseUnit(read('systemd/post-scheduler.timer')).get('Timer'));
    // systemd's own parser: the calendar expression, then both units (unknown keys and bad values are warnings on stderr)
    const calendar = execFileSync('systemd-analyze', ['calendar', '--iterations=2', timer.get('OnCalendar') ?? ''], { encoding: 'utf8' });
    const elapses = [...calendar.matchAll(/(?:Next elapse|Iter\. #2): \w+ (\S+ \S+)/g)].map((x) => Date.parse(`${x[1] ?? ''}Z`));
    assert.equal(elapses.length, 2, calendar);
    assert.equal((elapses[1] ?? 0) - (elapses[0] ?? 0), 60_000, 'one minute between runs');
    const copy = path.join(tmp, 'units');
    fs.mkdirSync(copy);
    for (const f of ['post-scheduler.service', 'post-scheduler.timer']) fs.copyFileSync(path.join(DEPLOY, 'systemd', f), path.join(copy, f));
    const verify = spawnSync('systemd-analyze', ['verify', '--man=no', path.join(copy, 'post-scheduler.service'), path.join(copy, 'post-scheduler.timer')], {
      encoding: 'utf8',
    });
    assert.equal(verify.status, 0, verify.stderr);
    assert.equal(verify.stderr.split('\n').filter((l) => l.includes('post-scheduler')).join('\n'), '', 'no warning about the units');
  });

  it('the logrotate snippet is read without error by logrotate', () => {
    // the dedicated user exists where it is installed; here root stands in for it
    const conf = path.join(tmp, 'logrotate.conf');
    fs.writeFileSync(conf, read('logrotate/post-scheduler').replaceAll('post-scheduler post-scheduler', 'root root'), { mode: 0o644 });
    const r = spawnSync('logrotate', ['--debug', '--state', path.join(tmp, 'state'), conf], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /error/i);
    assert.match(read('crontab'), /\/var\/log\/post-scheduler\/post-scheduler\.log/, 'the file the crontab line appends to');
    assert.match(read('logrotate/post-scheduler'), /^\/var\/log\/post-scheduler\/post-scheduler\.log \{/m);
  });

  it('the Dockerfile copies files that exist, runs scripts that exist, and ends as a non-root user', () => {
    const docker = read('Dockerfile');
    for (const m of docker.matchAll(/^COPY (?!--from)(.*) \S+$/gm)) {
      for (const src of (m[1] ?? '').split(/\s+/)) assert.ok(fs.existsSync(path.join(ROOT, src)), `COPY ${src}`);
    }
    const scripts = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    for (const m of docker.matchAll(/npm run (\S+)/g)) assert.ok(scripts[m[1] ?? ''] !== undefined, `npm run ${m[1] ?? ''}`);
    // npm's own flags: `npm prune --omit=dev` and `npm ci` as written
    const prune = spawnSync('npm', ['prune', '--help'], { encoding: 'utf8' });
    assert.match(prune.stdout, /--omit <dev\|optional\|peer>/);
    assert.match(docker, /^FROM node:20[\w.-]* AS build$/m);
    const stages = docker.split(/^FROM /m);
    assert.match(stages.at(-1) ?? '', /^USER node$/m, 'the runtime stage runs as node, not root');
    assert.doesNotMatch(stages.at(-1) ?? '', /npm ci|npm install|tsx/, 'the runtime stage installs nothing more');
  });

  it('the compiled entry needs no devDependency: dist/ imports only node builtins and dependencies', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    const allowed = new Set([...Object.keys(pkg.dependencies), ...builtinModules]);
    const files = (fs.readdirSync(path.join(ROOT, 'dist'), { recursive: true }) as string[]).filter((f) => /\.c?js$/.test(f));
    assert.ok(files.length > 10);
    const seen = new Set<string>();
    for (const f of files) {
      const text = fs.readFileSync(path.join(ROOT, 'dist', f), 'utf8');
      const specs = [
        ...text.matchAll(/^\s*(?:import|export)\b[^'"]*?\bfrom\s*['"]([^'"]+)['"]/gm),
        ...text.matchAll(/^\s*import\s*['"]([^'"]+)['"]/gm),
        ...text.matchAll(/\b(?:import|require)\(\s*['"]([^'"]+)['"]\s*\)/g),
      ].map((m) => m[1] ?? '');
      for (const raw of specs.filter((x) => !x.startsWith('.'))) {
        const spec = raw.replace(/^node:/, '');
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : (spec.split('/')[0] ?? '');
        seen.add(name);
        assert.ok(allowed.has(name), `dist/${f} imports ${spec}, not a dependency`);
      }
    }
    assert.ok(seen.has('better-sqlite3') && seen.has('commander'), [...seen].join(' '));
  });

  it("the command (package.json's bin) starts from a code cache of its bundle that V8 accepts, from the bundle alone without one, as `node dist/cli.js`, and as the seed's cron entry", async () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string>; version: string };
    const bin = path.join(ROOT, pkg.bin['post-scheduler'] ?? '');
    assert.equal(bin, path.join(ROOT, 'dist', 'cli.cjs'));
    // a hook loaded before the entry records each vm.Script it makes: given a cache, and accepted
    const hook = scriptHook(tmp, 'cli-cache-hook');
    const bundleName = /"(cli-bundle-[0-9a-f]+\.cjs)"/.exec(fs.readFileSync(bin, 'utf8'))?.[1];
    assert.ok(bundleName !== undefined, 'the entry names its bundle');
    const env = { ...testEnv(`sqlite:${path.join(tmp, 'cache.db')}`), NODE_OPTIONS: hook.nodeOptions };
    const r = execFileSync(bin, ['--version'], { env, encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.trim(), pkg.version);
    assert.deepEqual(hook.made(), [{ filename: path.join(ROOT, 'dist', bundleName), cached: true, rejected: false }]);
    assert.equal(execFileSync(process.execPath, [CLI, '--version'], { env, encoding: 'utf8', timeout: 30_000 }).trim(), pkg.version, 'node dist/cli.js');
    // the seed's cron entry is the `cron` command, from the same bundle and cache
    const seed = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'cron', 'post-scheduler.cron.js')], { env, encoding: 'utf8', timeout: 30_000 });
    assert.equal(seed.status, 0, seed.stderr);
    assert.match(seed.stdout, /No pending posts, skipping worker spawn/);
    assert.deepEqual(hook.made(), [{ filename: path.join(ROOT, 'dist', bundleName), cached: true, rejected: false }], 'the seed entry');
    // a bad configuration through `node dist/cli.js`: one line and exit 1, as from the bin
    const bad = spawnSync(process.execPath, [CLI, 'cron'], { env: { ...env, MAX_WORKERS: 'abc' }, encoding: 'utf8', timeout: 30_000 });
    assert.equal(bad.status, 1);
    assert.equal(bad.stderr, 'post-scheduler: Invalid configuration: MAX_WORKERS must be a whole number (got "abc")\n');
    // both bundles run in strict mode, as the ES module CLI did: the directive opens the
    // function their entry calls (esbuild's own comes after the import.meta.url banner)
    const workerBundle = /"(post-scheduler\.worker-bundle-[0-9a-f]+\.cjs)"/.exec(fs.readFileSync(path.join(ROOT, 'dist', 'workers', 'post-scheduler.worker-runner.cjs'), 'utf8'))?.[1] ?? '';
    for (const file of [path.join(ROOT, 'dist', bundleName), path.join(ROOT, 'dist', 'workers', workerBundle)]) {
      assert.ok(fs.readFileSync(file, 'latin1').startsWith('(function (exports, require, module, __filename, __dirname) {"use strict";'), `${file} is strict`);
    }

    // the entry and its bundle without the cache, beside the package.json the bundle finds
    // its files from: the bundle compiles from source, and a command that touches the
    // database runs (its driver is in the bundle)
    const copy = path.join(tmp, 'copy');
    fs.mkdirSync(path.join(copy, 'dist'), { recursive: true });
    fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(copy, 'package.json'));
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(copy, 'node_modules'));
    for (const name of ['cli.cjs', bundleName]) fs.copyFileSync(path.join(ROOT, 'dist', name), path.join(copy, 'dist', name));
    const plain = spawnSync(process.execPath, [path.join(copy, 'dist', 'cli.cjs'), 'migrate'], { env: testEnv(`sqlite:${path.join(tmp, 'plain.db')}`), encoding: 'utf8', timeout: 30_000 });
    assert.equal(plain.status, 0, plain.stderr);
    assert.match(plain.stdout, /Schema up to date/);
  });

  it("the KEDA scaler's query is the due count on a real PostgreSQL, with the seed's BATCH_SIZE and MAX_WORKERS", async () => {
    const keda = yamlObjects('k8s/keda-scaledjob.yaml').find((o) => o.kind === 'ScaledJob');
    assert.ok(keda !== undefined);
    const trigger = (keda.spec['triggers'] as { type: string; metadata: Record<string, string> }[])[0];
    assert.equal(trigger?.type, 'postgresql');
    assert.equal(trigger.metadata['targetQueryValue'], ENV_DEFAULTS.BATCH_SIZE, 'targetQueryValue = BATCH_SIZE');
    assert.equal(keda.spec['maxReplicaCount'], Number(ENV_DEFAULTS.MAX_WORKERS), 'maxReplicaCount = MAX_WORKERS');
    const query = trigger.metadata['query'] ?? '';
    assert.ok(query.includes(`${DEFAULT_SCHEMA}.post_schedule`), "the app's schema");

    const db = await createTestDatabase('postgres');
    dbs.push(db);
    const env = testEnv(db.url);
    const schema = new URL(db.url).searchParams.get('schema') ?? '';
    let r = await run(['channels', 'add', '--name', 'f', '--platform', 'file', '--path', path.join(tmp, 'out.jsonl')], env);
    assert.equal(r.code, 0, r.stderr);
    for (const at of ['2020-01-01', '2020-01-02', '+1h']) await run(['schedule', '--channel', 'f', '--text', at, '--at', at], env);
    const sql = postgres(postgresUrl(), { max: 1, onnotice: () => undefined });
    try {
      const due = async () => Number(Object.values((await sql.unsafe(query.replace(`${DEFAULT_SCHEMA}.`, `${schema}.`)))[0] ?? {})[0]);
      r = await run(['status', '--json'], env);
      const status = JSON.parse(r.stdout) as { glance: { dueNow: number } };
      assert.equal(status.glance.dueNow, 2);
      assert.equal(await due(), 2, 'the scaler sees what status sees');

      // the Job's command: one worker claims the due posts, publishes them, exits 0
      r = await run(keda.kind === 'ScaledJob' ? containersOf((keda.spec['jobTargetRef'] as { template: unknown }).template)[0]?.args ?? [] : [], env);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /Published 2 posts/);
      assert.equal(await due(), 0);
      assert.equal(fs.readFileSync(path.join(tmp, 'out.jsonl'), 'utf8').trim().split('\n').length, 2);
    } finally {
      await sql.end({ timeout: 1 });
    }
  });

  it('`worker` gives back posts whose worker died before claiming (no dispatcher does it under KEDA)', async () => {
    const db = await createTestDatabase('sqlite');
    dbs.push(db);
    const env = testEnv(db.url);
    const out = path.join(db.dir, 'out.jsonl');
    await run(['channels', 'add', '--name', 'f', '--platform', 'file', '--path', out], env);
    await run(['schedule', '--channel', 'f', '--text', 'orphan'], env);
    const { openStore } = await import('../src/store/open.ts');
    const { parseDatabaseUrl } = await import('../src/config.ts');
    const store = await openStore(parseDatabaseUrl(db.url));
    try {
      // a worker that claimed it with a 1 ms lease and died
      assert.equal((await store.claim('dead-worker', 1, 1)).length, 1);
    } finally {
      await store.close();
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
    const r = await run(['worker'], env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /Recovered 1 posts whose worker died/);
    assert.match(r.stdout, /Published 1 posts/);
    assert.equal(fs.readFileSync(out, 'utf8').trim().split('\n').length, 1);
    assert.ok(fs.existsSync(CLI));
  });
});
