import { constants, type PerformanceEntry, type PerformanceObserverEntryList } from 'node:perf_hooks';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * The V8 settings of every worker process. Its entry point imports this module first
 * (post-scheduler.worker-runner.ts) and applies the flags once the worker has loaded what
 * its first posts need (applyWorkerV8Flags):
 *
 * - `--no-opt`: no optimizing compiler. A worker waits on its database and publishers;
 *   TurboFan's code and compile buffers cost a busy worker 10-15 MB of RSS for no
 *   measured throughput gain (BENCHMARKS.md "Lighter cycles").
 * - `--heap-growing-percent=10`: the old generation's limit grows by 10% after each full
 *   collection, so V8 collects rather than grows its heap.
 * - A full collection whenever the old generation has grown HEAP_STEP_BYTES (or a tenth)
 *   past what the last one left (V8's `gc`, exposed with the flags; watched after each
 *   collection). At a worker's heap sizes V8 waits for 8 MB more (its minimum step,
 *   whatever the percent says), and a publish's objects, in flight for hundreds of
 *   milliseconds, outlive two scavenges and leave their garbage in the old generation: a
 *   SQLite webhook worker under a 2,000-post drain (one worker of 25, batch 200) peaked at
 *   66-67 MB of RSS, 60 with a 2 MB step (56-58 MB for PostgreSQL's 62-63), for about a
 *   dozen more full collections of ~6 ms: 10-12% more of its CPU (medians of 6
 *   alternating runs). A W1 drain to a file (10,000 posts; its garbage dies young) needed
 *   one or two.
 * - The young generation is held at YOUNG_GENERATION_BYTES, from the first line: V8 grows
 *   it as it does (it starts at 1 MB, both semi-spaces), and after each collection its
 *   growth factor is set to 1 (`--semi-space-growth-factor=1`) while it is at that size,
 *   to V8's 2 while it is below (V8's memory reducer shrinks it after some seconds of
 *   quiet, and a factor of 1 would then keep it small for good). Without that it grows to
 *   32 MB under load; with a factor of 1 from the start it stayed at 2 MB, and a webhook
 *   worker ran twice as many scavenges for about the same RSS (BENCHMARKS.md, 2026-12-03,
 *   evening). The factor is set after a collection, so a long synchronous stretch can grow
 *   it one step further (8 MB) before it is held; no measured worker did, the test's
 *   allocation loop did on the slower of these machines.
 *
 * Set at run time, not as `node` flags at spawn, and late: V8 refuses the code cache that
 * Node ships for its built-in modules once any flag differs from its default (any flag:
 * one that only sizes the heap too). A forked worker loads about 40 built-ins before its
 * first line runs (streams, net, child_process for the IPC channel); flags given at spawn
 * made those compile from source, and the fifth first claim of a 5-worker cycle came about
 * 90 ms later on 2 cores (BENCHMARKS.md, 2026-12-03 afternoon). A worker then loads more on
 * the way to its first publish: crypto and tls for PostgreSQL, http, https, net and dns for
 * a publisher. Under flags, crypto, perf_hooks and tls took 9-10 ms to load against 3 ms,
 * and http, https, dns and zlib 13-18 ms against 4-5 ms. So the flags wait until the
 * worker's first part has been handed to its publisher (and one turn of the event loop, in
 * which its request loads its agent's modules), or its first publish has ended without
 * one, or a resident has warmed up (its warm-up loads the same). Until then no function
 * ran hot enough for TurboFan: once better-sqlite3's ten files went through Node's CJS
 * loader, node:path's code did, and the optimizing compiler's run left a SQLite worker with
 * 3.5 MB more of the node binary resident (scripts/bundle.mjs bundles them now); with the
 * flags at the first outcome instead, a webhook worker's first wave of requests made it
 * compile Node's argument checks (+3 MB). Nothing before then runs a full collection
 * either. A cycle of five workers of 5 sending 200 posts used 3-8% less CPU (BENCHMARKS.md,
 * 2026-12-03, night). The heap's maximum sizes cannot be changed once it exists, so the old generation has V8's default
 * cap: a worker under sustained load peaks at the same RSS as with
 * `--max-old-space-size=96` (measured), but a leak or a huge payload grows the heap
 * instead of ending the worker. A cron worker lives one cycle; a resident over
 * WORKER_MAX_HEAP_MB after a batch is replaced (daemon/residents.ts).
 */
export const WORKER_V8_FLAGS: readonly string[] = ['--no-opt', '--heap-growing-percent=10'];

/** The young generation's size, both semi-spaces: what `--max-semi-space-size=2` gave workers before. */
export const YOUNG_GENERATION_BYTES = 4 * 1024 * 1024;

/**
 * How much the heap in use outside the young generation may grow past what the last full
 * collection left before the worker asks for the next one, at least (a tenth of what it
 * left, when more; see the comment above; 2.5 MB left the webhook worker at 60-61 MB).
 */
export const HEAP_STEP_BYTES = 2 * 1024 * 1024;

let flagsApplied = false;
/** a full collection (V8's `gc`, exposed once the flags are applied) */
let collect: (() => void) | null = null;
/** the heap in use outside the young generation after the last full collection */
let afterFull = 0;
/** Applies WORKER_V8_FLAGS to this process and starts the heap steps, once (later calls do nothing). */
export function applyWorkerV8Flags(): void {
  if (flagsApplied) return;
  flagsApplied = true;
  v8.setFlagsFromString(WORKER_V8_FLAGS.join(' '));
  v8.setFlagsFromString('--expose-gc');
  collect = runInNewContext('gc') as () => void;
  // from here: no collection now, on the way to the first answer
  afterFull = oldBytes();
}

/** the heap in use outside the young generation (which a scavenge empties; it would count up to half the step) */
const oldBytes = (spaces = v8.getHeapSpaceStatistics()): number => {
  let bytes = 0;
  for (const s of spaces) if (s.space_name !== 'new_space' && s.space_name !== 'new_large_object_space') bytes += s.space_used_size;
  return bytes;
};
let growthFactor = 2;
/** after each collection: the young generation's hold, and the heap step (a full collection once the heap grew HEAP_STEP_BYTES) */
const afterCollection = (list: PerformanceObserverEntryList | null): void => {
  const spaces = v8.getHeapSpaceStatistics();
  const young = spaces.find((s) => s.space_name === 'new_space')?.space_size ?? 0;
  const wanted = young >= YOUNG_GENERATION_BYTES ? 1 : 2;
  if (wanted !== growthFactor) {
    growthFactor = wanted;
    v8.setFlagsFromString(`--semi-space-growth-factor=${wanted}`);
  }
  if (collect === null || list === null) return;
  const used = oldBytes(spaces);
  if (list.getEntries().some((e) => (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR)) afterFull = used;
  // a tenth more for a larger heap, as --heap-growing-percent=10 says
  else if (used > afterFull + Math.max(HEAP_STEP_BYTES, afterFull / 10)) {
    collect();
    afterFull = oldBytes();
  }
};
afterCollection(null);
new PerformanceObserver(afterCollection).observe({ entryTypes: ['gc'] });
