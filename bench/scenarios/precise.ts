import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseDatabaseUrl } from '../../src/config.ts';
import { openStore } from '../../src/store/open.ts';
import { freshDatabase, type BenchDatabase, type Dialect } from '../lib/db.ts';
import { table } from '../lib/markdown.ts';
import { childEnv, CLI, ROOT, startedGroups } from '../lib/proc.ts';
import { errorText, failureList, progress, type BenchContext, type ScenarioResult } from '../lib/scenario.ts';
import { fmt, median } from '../lib/stats.ts';

/**
 * `daemon --precise`: (1) lateness, receiver arrival minus run_at, of 300 posts due at
 * random milliseconds over 20 s; (2) 200 posts due at one moment against a receiver
 * that answers in 200 ms, with the seed's 5 workers x 5 (ideal 1.6 s), workers started
 * ahead. The daemon runs throughout a repetition; posts are inserted through the Store
 * (as `schedule` would) once the daemon sleeps, a few seconds before the first is due.
 */
const LATENESS_POSTS = 300;
const LATENESS_SPREAD_MS = 20_000;
const BURST_POSTS = 200;
const BURST_DELAY_MS = 200;
const IDEAL_MS = (BURST_POSTS / 25) * BURST_DELAY_MS;
/** from the insert to the first due time: the daemon sees the posts and starts workers ahead */
const LEAD_IN_MS = 3_000;

interface Arrivals {
  readonly url: string;
  /** post id -> arrival (epoch ms) of its first request */
  readonly first: Map<number, number>;
  /** requests for a post already received */
  duplicates: number;
  /** when the last answer was written (epoch ms) */
  lastAnswer: number;
  close(): Promise<void>;
}

async function receiver(delayMs: number): Promise<Arrivals> {
  const server = http.createServer((req, res) => {
    const at = Date.now();
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      try {
        const id = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { id?: unknown }).id;
        if (typeof id === 'number') {
          if (state.first.has(id)) state.duplicates++;
          else state.first.set(id, at);
        }
      } catch {
        // not a post
      }
      setTimeout(() => {
        state.lastAnswer = Date.now();
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      }, delayMs);
    });
  });
  server.keepAliveTimeout = 10_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const state: Arrivals = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    first: new Map(),
    duplicates: 0,
    lastAnswer: 0,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return state;
}

/** The daemon, in a process group of its own (the bench's leftover check covers it). */
function startDaemon(db: BenchDatabase): { child: ChildProcess; output: () => string; stop: () => Promise<number | null> } {
  const child = spawn(process.execPath, [CLI, 'daemon', '--precise'], {
    cwd: ROOT,
    env: childEnv(db.url, { LOG_FORMAT: 'text', LOG_TIMESTAMPS: 'true', WORKER_IDLE_MS: '5000' }),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  if (child.pid !== undefined) startedGroups.add(child.pid);
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    output: () => out,
    stop: async () => {
      child.kill('SIGTERM');
      const kill = setTimeout(() => child.pid !== undefined && process.kill(-child.pid, 'SIGKILL'), 15_000);
      const code = await exited;
      clearTimeout(kill);
      return code;
    },
  };
}

async function waitUntil(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function percentile(values: readonly number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? Number.NaN;
}

/** One repetition: posts at `runAts` (epoch ms), the daemon started before; per post lateness, and when the last answer went out. */
export async function oneRun(dialect: Dialect, delayMs: number, offsets: readonly number[]): Promise<{ lateness: number[]; wallMs: number; duplicates: number }> {
  const db = await freshDatabase(dialect);
  const rx = await receiver(delayMs);
  const store = await openStore(parseDatabaseUrl(db.url));
  let daemon: ReturnType<typeof startDaemon> | null = null;
  try {
    await store.migrate();
    const channel = await store.addChannel({ name: 'hook', platform: 'webhook', settings: { url: rx.url }, onUnknown: 'retry' });
    daemon = startDaemon(db);
    const d = daemon;
    await waitUntil('the daemon to sleep', () => d.output().includes('No post pending'), 30_000);
    const base = Date.now() + LEAD_IN_MS;
    const runAts = offsets.map((o) => base + o);
    const ids = await store.schedulePosts(runAts.map((at, i) => ({ channelId: channel.id, text: `post ${i}`, runAt: new Date(at) })));
    const due = new Map(ids.map((id, i) => [id, runAts[i] ?? 0]));
    const last = Math.max(...runAts);
    await waitUntil('every post received', () => rx.first.size >= ids.length, last - Date.now() + 60_000);
    await waitUntil('the last answer', () => rx.lastAnswer >= Math.max(...rx.first.values()) + delayMs - 5, 10_000);
    const lateness = [...due].map(([id, at]) => (rx.first.get(id) ?? Number.NaN) - at);
    return { lateness, wallMs: rx.lastAnswer - Math.min(...runAts), duplicates: rx.duplicates };
  } finally {
    const code = await daemon?.stop();
    // the daemon's log, for a look at a run: PRECISE_BENCH_LOG=<file>
    const logFile = process.env['PRECISE_BENCH_LOG'];
    if (logFile !== undefined && daemon !== null) fs.appendFileSync(logFile, daemon.output());
    if (code !== 0 && daemon !== null) progress(`precise: daemon exited ${String(code)}: ${daemon.output().split('\n').slice(-5).join(' | ')}`);
    await store.close();
    await rx.close();
    await db.drop();
  }
}

export async function preciseScenario(ctx: BenchContext): Promise<ScenarioResult> {
  const failures: string[] = [];
  const raw: Record<string, unknown>[] = [];
  const lateRows: string[][] = [];
  const burstRows: string[][] = [];
  const reps = Math.min(ctx.reps, 3);
  for (const dialect of ctx.dialects) {
    const p50s: number[] = [];
    const p99s: number[] = [];
    const maxes: number[] = [];
    const early: number[] = [];
    for (let rep = 1; rep <= reps; rep++) {
      try {
        const offsets = Array.from({ length: LATENESS_POSTS }, () => Math.floor(Math.random() * LATENESS_SPREAD_MS));
        const r = await oneRun(dialect, 0, offsets);
        const p50 = percentile(r.lateness, 50);
        const p99 = percentile(r.lateness, 99);
        p50s.push(p50);
        p99s.push(p99);
        maxes.push(Math.max(...r.lateness));
        early.push(Math.min(...r.lateness));
        if (r.duplicates > 0) failures.push(`precise lateness ${dialect} rep ${rep}: ${r.duplicates} posts received twice`);
        raw.push({ kind: 'lateness', dialect, rep, p50, p99, max: Math.max(...r.lateness), min: Math.min(...r.lateness) });
        progress(`precise lateness ${dialect} rep ${rep}: p50 ${p50} ms, p99 ${p99} ms, max ${Math.max(...r.lateness)} ms, earliest ${Math.min(...r.lateness)} ms`);
      } catch (e) {
        failures.push(`precise lateness ${dialect} rep ${rep}: ${errorText(e)}`);
      }
    }
    lateRows.push([dialect, String(p50s.length), fmt(median(p50s), 0), fmt(median(p99s), 0), fmt(median(maxes), 0), fmt(median(early), 0)]);

    const walls: number[] = [];
    for (let rep = 1; rep <= reps; rep++) {
      try {
        const r = await oneRun(dialect, BURST_DELAY_MS, Array.from({ length: BURST_POSTS }, () => 0));
        walls.push(r.wallMs);
        if (r.duplicates > 0) failures.push(`precise burst ${dialect} rep ${rep}: ${r.duplicates} posts received twice`);
        raw.push({ kind: 'burst', dialect, rep, wallMs: r.wallMs, firstLateness: Math.min(...r.lateness) });
        progress(`precise burst ${dialect} rep ${rep}: ${r.wallMs} ms (${fmt(r.wallMs / IDEAL_MS, 2)}x ideal), first post ${Math.min(...r.lateness)} ms late`);
      } catch (e) {
        failures.push(`precise burst ${dialect} rep ${rep}: ${errorText(e)}`);
      }
    }
    burstRows.push([dialect, String(walls.length), fmt(median(walls), 0), fmt(median(walls) / IDEAL_MS, 2)]);
  }
  const markdown = [
    '## Precise mode (`daemon --precise`)',
    '',
    `Lateness = the receiver's arrival time minus the post's run_at, for ${LATENESS_POSTS} posts due at random milliseconds over ${LATENESS_SPREAD_MS / 1000} s ` +
      `(inserted ${LEAD_IN_MS / 1000} s before the first is due, the daemon already running and idle); receiver answers at once; default config (5 x 5, WORKER_IDLE_MS=5000). ` +
      `Medians over ${reps} runs. Target p99 < 50 ms. ${ctx.machine}`,
    '',
    table(['DB', 'runs', 'p50 ms', 'p99 ms', 'max ms', 'earliest ms'], lateRows),
    '',
    `${BURST_POSTS} posts due at one moment, receiver answers in ${BURST_DELAY_MS} ms, seed 5 workers x 5 started ahead; wall = due time to the last answer; ideal ${IDEAL_MS} ms. Target at most 1.05x.`,
    '',
    table(['DB', 'runs', 'wall median ms', 'x ideal'], burstRows),
  ].join('\n');
  return { markdown: markdown + failureList(failures), raw, failures };
}
