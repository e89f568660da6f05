/**
 * One chaos run: thousands of posts published through real `cron` processes while
 * workers and a dispatcher are SIGKILLed, the receiver injects faults, and (on
 * PostgreSQL and MariaDB: a server of the run's own) the database restarts; then cycles without faults until nothing is due.
 * What the receiver saw is compared with what the database says, post by post.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import type { Store } from '../src/store/store.ts';
import type { Channel, Post } from '../src/types.ts';
import { childPids, processTable } from '../test/helpers/processes.ts';
import { startRestartableMysql, type RestartableMysql } from '../test/helpers/restartable-mysql.ts';
import { startRestartablePostgres, type RestartablePostgres } from '../test/helpers/restartable-postgres.ts';
import { createRandom } from './random.ts';
import { startChaosReceiver, type ChaosReceiver, type FaultName } from './receiver.ts';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');

/** mysql: a MariaDB server started from the machine's binaries (test/helpers/restartable-mysql.ts) */
export type ChaosDialect = 'sqlite' | 'postgres' | 'mysql';

export interface ChaosOptions {
  readonly dialect: ChaosDialect;
  readonly posts: number;
  readonly seed: number;
  /** how long faults and kills go on before the run settles */
  readonly chaosMs: number;
  /** mean time between two worker SIGKILLs during the chaos */
  readonly killEveryMs: number;
  readonly rates?: Partial<Record<FaultName, number>>;
  /** the receiver answers an accepted request after 0..latencyMs (default 200) */
  readonly latencyMs?: number;
  /** progress lines (stderr by default) */
  readonly log?: (line: string) => void;
}

export interface ChaosReport {
  readonly dialect: string;
  readonly posts: number;
  readonly published: number;
  readonly failed: number;
  readonly failedReasons: Record<string, number>;
  readonly unknown: number;
  /** unknown posts the receiver had in fact accepted (what an operator would find) */
  readonly unknownDelivered: number;
  /**
   * false unknowns: unknown posts the receiver never accepted (held for an operator
   * although the platform never had them; `unknown - unknownDelivered`)
   */
  readonly unknownNeverDelivered: number;
  /** why those were held: the recorded reason, numbers replaced by N */
  readonly unknownNeverDeliveredReasons: Record<string, number>;
  /** not final after the run, or recorded published without reaching the receiver */
  readonly lost: number;
  readonly lostIds: number[];
  /** posts the platform accepted more than once (receiver or file journal) */
  readonly acceptedDuplicates: number;
  /** requests beyond the first per post: retries and replays, all with the post's one key */
  readonly duplicateSends: number;
  /** posts that reached the receiver under more than one idempotency key (must be 0) */
  readonly keyChanges: number;
  readonly cycles: number;
  readonly workersKilled: number;
  readonly dispatchersKilled: number;
  /** dispatchers sent SIGTERM (they stop their workers gracefully) */
  readonly dispatchersStopped: number;
  /**
   * the most worker processes seen alive at once (children of live dispatchers, and
   * orphans of a killed one until they exit; zombies not counted), sampled every
   * SAMPLE_EVERY_MS for the whole run; GLOBAL_MAX_WORKERS caps it
   */
  readonly mostWorkers: number;
  readonly globalMaxWorkers: number;
  /** samples of the worker count taken over the run, and how many of them exceeded GLOBAL_MAX_WORKERS (must be 0) */
  readonly workerSamples: number;
  readonly samplesOverCap: number;
  readonly databaseRestarts: number;
  readonly faults: Record<FaultName, number>;
  readonly wallMs: number;
}

/** Two hosts of MAX_WORKERS=4 share this many worker slots. */
const GLOBAL_MAX_WORKERS = 6;
/** How often the live worker processes are counted, for the whole run. */
const SAMPLE_EVERY_MS = 50;

/** The posts' channels: each policy for unknown outcomes, on an endpoint that fits it. */
const CHANNELS = [
  { name: 'keyed', share: 0.6, onUnknown: 'retry' as const },
  { name: 'plain', share: 0.25, onUnknown: 'hold' as const },
  { name: 'journal', share: 0.15, onUnknown: 'check' as const },
];

export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const log = options.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const random = createRandom(options.seed);
  const started = Date.now();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'post-scheduler-chaos-'));
  const journal = path.join(dir, 'journal.jsonl');
  let server: RestartablePostgres | RestartableMysql | null = null;
  let receiver: ChaosReceiver | null = null;
  let store: Store | null = null;
  const processes = new Processes();
  const sampler = sampleWorkers(processes, GLOBAL_MAX_WORKERS, SAMPLE_EVERY_MS, log);
  try {
    let url: string;
    if (options.dialect === 'postgres') {
      server = await startRestartablePostgres({ database: 'chaos' });
      url = server.url;
    } else if (options.dialect === 'mysql') {
      server = await startRestartableMysql({ database: 'chaos' });
      url = server.url;
    } else {
      url = `sqlite:${path.join(dir, 'chaos.db')}`;
    }
    receiver = await startChaosReceiver({
      seed: options.seed,
      latencyMs: options.latencyMs ?? 200,
      ...(options.rates === undefined ? {} : { rates: options.rates }),
    });
    store = await openStore(parseDatabaseUrl(url));
    await store.migrate();
    // Posts fall due over the first 80% of the chaos, so every kill and the restart
    // land while workers are publishing.
    const ids = await schedule(store, receiver.url, journal, options.posts, options.chaosMs * 0.8, random);
    log(`[chaos] ${options.dialect}: ${ids.length} posts scheduled; chaos for ${options.chaosMs} ms`);

    const env: NodeJS.ProcessEnv = {
      ...process.env,
      DATABASE_URL: url,
      BATCH_SIZE: '25',
      MAX_WORKERS: '4',
      WORKER_CONCURRENCY: '10',
      TIMEOUT_MS: '15000',
      WORKER_TIMEOUT_MS: '12000',
      KILL_GRACE_MS: '1000',
      LEASE_MS: '1500',
      PUBLISH_TIMEOUT_MS: '500',
      RETRY_BASE_MS: '100',
      RETRY_MAX_MS: '1000',
      MAX_ATTEMPTS: '10',
      GLOBAL_MAX_WORKERS: String(GLOBAL_MAX_WORKERS),
      LOG_FORMAT: 'text',
      // the chaos receiver listens on 127.0.0.1, which the SSRF guard refuses by default
      ALLOW_PRIVATE_NETWORK: 'true',
    };
    delete env['NODE_OPTIONS'];
    delete env['NODE_TEST_CONTEXT'];

    // Chaos: two hosts run cycles back to back while workers (and once a dispatcher) are
    // SIGKILLed and, on PostgreSQL and MariaDB, the server restarts once.
    const chaosEnds = Date.now() + options.chaosMs;
    const counts = { workersKilled: 0, dispatchersKilled: 0, dispatchersStopped: 0, databaseRestarts: 0 };
    // On a slow machine the window can pass before a worker was alive to be killed: it
    // then goes on (at most 3 more windows) until one is, so every run kills workers.
    const inChaos = () => Date.now() < chaosEnds || (counts.workersKilled === 0 && Date.now() < chaosEnds + 3 * options.chaosMs);
    const hosts = ['host-a', 'host-b'].map((host) => processes.cronLoop({ ...env, SCHEDULER_HOST: host }, inChaos));
    const stopDispatcherAt = Date.now() + options.chaosMs * 0.3;
    const restartAt = started + options.chaosMs * 0.4;
    const killDispatcherAt = Date.now() + options.chaosMs * 0.6;
    let restart: Promise<void> | null = null;
    while (inChaos()) {
      await sleep(options.killEveryMs * (0.5 + random()));
      // a kill falls on a worker: when none is alive at this moment (between cycles, or
      // all still starting on a busy machine), it waits for one, up to killEveryMs
      const lookUntil = Date.now() + options.killEveryMs;
      let victim: number | undefined;
      for (;;) {
        const workers = processes.workers();
        victim = workers[Math.floor(random() * workers.length)];
        if (victim !== undefined || Date.now() >= lookUntil) break;
        await sleep(20);
      }
      if (victim !== undefined && kill(victim)) counts.workersKilled++;
      if (counts.dispatchersStopped === 0 && Date.now() >= stopDispatcherAt) {
        const dispatcher = processes.dispatchers()[0];
        if (dispatcher !== undefined && kill(dispatcher, 'SIGTERM')) counts.dispatchersStopped++;
      }
      if (counts.dispatchersKilled === 0 && Date.now() >= killDispatcherAt) {
        const dispatcher = processes.dispatchers()[0];
        if (dispatcher !== undefined && kill(dispatcher)) counts.dispatchersKilled++;
      }
      if (server !== null && restart === null && Date.now() >= restartAt) {
        log(`[chaos] restarting ${options.dialect === 'mysql' ? 'MariaDB' : 'PostgreSQL'}`);
        // not awaited here: kills go on while the server is down and comes back
        restart = server.restart(500);
        counts.databaseRestarts++;
      }
    }
    await restart;
    await Promise.all(hosts);
    receiver.setFaults(false);
    log(`[chaos] chaos over after ${processes.cycles} cycles; settling without faults`);

    // Settle: cycles (one host) until nothing is due, processing or scheduled later.
    const settleEnds = Date.now() + 120_000;
    for (;;) {
      await processes.waitForStrays(15_000);
      const s = await retrying(() => (store as Store).status(1));
      if (s.counts.duePending + s.counts.processing + s.counts.scheduledLater === 0) break;
      if (Date.now() > settleEnds) {
        log('[chaos] still not settled after 120 s; counting what is left as lost');
        break;
      }
      if (s.counts.duePending + s.counts.processing === 0) await sleep(250); // waiting for a backoff
      await processes.cron({ ...env, SCHEDULER_HOST: 'host-a' });
    }

    const posts = await retrying(() => Promise.all(ids.map(async (id) => (store as Store).getPost(id))));
    const sampled = await sampler.stop();
    return compare(options, posts, receiver, journal, { ...counts, ...sampled, cycles: processes.cycles, wallMs: Date.now() - started });
  } finally {
    await sampler.stop();
    processes.killAll();
    await store?.close();
    await receiver?.close();
    await server?.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function schedule(
  store: Store,
  receiverUrl: string,
  journal: string,
  count: number,
  spreadMs: number,
  random: () => number,
): Promise<number[]> {
  const channels: ((typeof CHANNELS)[number] & { channel: Channel })[] = [];
  for (const c of CHANNELS) {
    const settings = c.name === 'journal' ? { path: journal } : { url: `${receiverUrl}/${c.name}/hook` };
    const platform = c.name === 'journal' ? 'file' : 'webhook';
    channels.push({ ...c, channel: await store.addChannel({ name: c.name, platform, settings, onUnknown: c.onUnknown }) });
  }
  const now = Date.now();
  const posts = Array.from({ length: count }, (_, i) => {
    let pick = random();
    const c = channels.find((ch) => (pick -= ch.share) < 0) ?? channels[0];
    return { channelId: c?.channel.id ?? 0, text: `chaos post ${i + 1}`, runAt: new Date(now + Math.floor((i / count) * spreadMs)) };
  });
  return store.schedulePosts(posts);
}

function compare(
  options: ChaosOptions,
  posts: readonly (Post | null)[],
  receiver: ChaosReceiver,
  journal: string,
  counts: {
    workersKilled: number;
    dispatchersKilled: number;
    dispatchersStopped: number;
    databaseRestarts: number;
    mostWorkers: number;
    workerSamples: number;
    samplesOverCap: number;
    cycles: number;
    wallMs: number;
  },
): ChaosReport {
  const lines = new Map<string, number>();
  if (fs.existsSync(journal)) {
    for (const line of fs.readFileSync(journal, 'utf8').split('\n')) {
      if (line.trim() === '') continue;
      const key = (JSON.parse(line) as { idempotency_key?: string }).idempotency_key ?? '';
      lines.set(key, (lines.get(key) ?? 0) + 1);
    }
  }
  const delivered = (p: Post): number => receiver.accepted.get(p.id) ?? lines.get(p.idempotencyKey) ?? 0;
  const failedReasons: Record<string, number> = {};
  const falseUnknownReasons: Record<string, number> = {};
  const lostIds: number[] = [];
  let published = 0;
  let failed = 0;
  let unknown = 0;
  let unknownDelivered = 0;
  let acceptedDuplicates = 0;
  for (const p of posts) {
    if (p === null) continue;
    if (delivered(p) > 1) acceptedDuplicates++;
    if (p.status === 'published') {
      published++;
      if (delivered(p) === 0) lostIds.push(p.id);
    } else if (p.status === 'failed') {
      failed++;
      const reason = (p.lastError ?? '').replace(/\d+/g, 'N').slice(0, 80);
      failedReasons[reason] = (failedReasons[reason] ?? 0) + 1;
    } else if (p.status === 'unknown') {
      unknown++;
      if (delivered(p) > 0) unknownDelivered++;
      else {
        const reason = (p.lastError ?? '')
          .replace(/worker-\S+/g, 'worker-W')
          .replace(/\d+/g, 'N')
          .replace(/channel \S+ \(\S+\)/g, 'channel C')
          .slice(0, 90);
        falseUnknownReasons[reason] = (falseUnknownReasons[reason] ?? 0) + 1;
      }
    } else {
      lostIds.push(p.id);
    }
  }
  let duplicateSends = 0;
  for (const n of receiver.sends.values()) duplicateSends += Math.max(0, n - 1);
  const keyChanges = [...receiver.keysPerPost.values()].filter((keys) => keys.size > 1).length;
  return {
    dialect: options.dialect,
    posts: posts.length,
    published,
    failed,
    failedReasons,
    unknown,
    unknownDelivered,
    unknownNeverDelivered: unknown - unknownDelivered,
    unknownNeverDeliveredReasons: falseUnknownReasons,
    lost: lostIds.length,
    lostIds,
    acceptedDuplicates,
    duplicateSends,
    keyChanges,
    faults: { ...receiver.faults },
    globalMaxWorkers: GLOBAL_MAX_WORKERS,
    ...counts,
  };
}

/** The cron processes of a run, and the workers they spawn. */
class Processes {
  cycles = 0;
  private readonly crons = new Set<ChildProcess>();
  /** every worker pid seen, so that orphans of a killed dispatcher are waited for too */
  private readonly seenWorkers = new Set<number>();

  cron(env: NodeJS.ProcessEnv): Promise<number | null> {
    const child = spawn(process.execPath, [CLI, 'cron'], { env, cwd: ROOT, stdio: 'ignore' });
    this.crons.add(child);
    this.cycles++;
    const guard = setTimeout(() => child.kill('SIGKILL'), 30_000);
    return new Promise((resolve) => {
      child.on('exit', (code) => {
        clearTimeout(guard);
        this.crons.delete(child);
        resolve(code);
      });
    });
  }

  async cronLoop(env: NodeJS.ProcessEnv, goOn: () => boolean): Promise<void> {
    while (goOn()) {
      await this.cron(env);
      await sleep(50);
    }
  }

  dispatchers(): number[] {
    return [...this.crons].map((c) => c.pid ?? 0).filter((pid) => pid > 0);
  }

  workers(): number[] {
    const pids = this.dispatchers().flatMap(childPids);
    for (const pid of pids) this.seenWorkers.add(pid);
    return pids;
  }

  /**
   * The worker processes alive now, from one `ps` that does not block the event loop:
   * children of live dispatchers, and workers seen before whose dispatcher was killed
   * (orphans still hold their slot until they exit). Zombies (exited, not yet reaped)
   * are not alive.
   */
  async liveWorkers(): Promise<number[]> {
    const dispatchers = new Set(this.dispatchers());
    const rows = await processTable('--worker-id');
    const live: number[] = [];
    for (const row of rows) {
      if (row.stat.startsWith('Z')) continue;
      if (dispatchers.has(row.ppid)) this.seenWorkers.add(row.pid);
      else if (!this.seenWorkers.has(row.pid)) continue;
      live.push(row.pid);
    }
    return live;
  }

  /** Waits (bounded) until no worker seen so far still runs. */
  async waitForStrays(timeoutMs: number): Promise<void> {
    this.workers();
    const ends = Date.now() + timeoutMs;
    while ([...this.seenWorkers].some(alive) && Date.now() < ends) await sleep(50);
  }

  killAll(): void {
    for (const c of this.crons) c.kill('SIGKILL');
    for (const pid of this.seenWorkers) kill(pid);
  }
}

/**
 * Counts the live worker processes every `everyMs` until stopped: the most seen at
 * once, and how many samples exceeded `cap` (the first is logged with its time).
 */
function sampleWorkers(processes: Processes, cap: number, everyMs: number, log: (line: string) => void) {
  const started = Date.now();
  const figures = { mostWorkers: 0, workerSamples: 0, samplesOverCap: 0 };
  const state = { stopped: false };
  const loop = (async () => {
    while (!state.stopped) {
      const live = await processes.liveWorkers();
      figures.workerSamples++;
      figures.mostWorkers = Math.max(figures.mostWorkers, live.length);
      if (live.length > cap) {
        if (figures.samplesOverCap === 0) log(`[chaos] ${live.length} workers alive at once (GLOBAL_MAX_WORKERS ${cap}) at +${Date.now() - started} ms`);
        figures.samplesOverCap++;
      }
      await sleep(everyMs);
    }
  })();
  return {
    stop: async () => {
      state.stopped = true;
      await loop;
      return { ...figures };
    },
  };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function kill(pid: number, signal: NodeJS.Signals = 'SIGKILL'): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** The harness's own queries ride out a database restart (the first query after one fails). */
async function retrying<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (attempt >= 20) throw e;
      await sleep(250);
    }
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
