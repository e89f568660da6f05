import v8 from 'node:v8';

/**
 * The V8 settings of every worker process, applied by its entry point before anything
 * else it loads (post-scheduler.worker-runner.ts imports this module first):
 *
 * - `--no-opt`: no optimizing compiler. A worker waits on its database and publishers;
 *   TurboFan's code and compile buffers cost a busy worker 10-15 MB of RSS for no
 *   measured throughput gain (BENCHMARKS.md "Lighter cycles").
 * - `--heap-growing-percent=10`: the old generation's limit grows by 10% after each full
 *   collection, so V8 collects rather than grows its heap.
 * - The young generation is held at YOUNG_GENERATION_BYTES: V8 grows it as it does (it
 *   starts at 1 MB, both semi-spaces), and after each collection its growth factor is set
 *   to 1 (`--semi-space-growth-factor=1`) while it is at that size, to V8's 2 while it is
 *   below (V8's memory reducer shrinks it after some seconds of quiet, and a factor of 1
 *   would then keep it small for good). Without that it grows to 32 MB under load; with a
 *   factor of 1 from the start it stayed at 2 MB, and a webhook worker ran twice as many
 *   scavenges for about the same RSS (BENCHMARKS.md, 2026-12-03, evening). The factor is
 *   set after a collection, so a long synchronous stretch can grow it one step further
 *   (8 MB) before it is held; no measured load did.
 *
 * Set at run time, not as `node` flags at spawn: V8 refuses the code cache that Node
 * ships for its built-in modules when any flag differs from its default, and a forked
 * worker loads about 40 of them (streams, net, child_process for the IPC channel)
 * before its first line runs. Flags given at spawn made those compile from source:
 * the fifth first claim of a 5-worker cycle came about 90 ms later on 2 cores
 * (BENCHMARKS.md, 2026-12-03 afternoon). The built-ins the worker loads after this call
 * (perf_hooks here, crypto, and tls for PostgreSQL) compile without the cache: set after
 * them instead (a trial), they kept it, but a worker under load held 4-5 MB more, and
 * loading the ones every worker needs first saved no CPU (measured). The flags are
 * read by V8's heuristics each time they decide (a collection, a tier-up), so changing
 * them at run time takes effect. The heap's maximum sizes cannot be changed once it exists, so the old
 * generation has V8's default cap, no longer 96 MB: a worker under sustained load peaks at
 * the same RSS as with `--max-old-space-size=96` (measured), but a leak or a huge payload
 * now grows the heap instead of ending the worker. A cron worker lives one cycle; a
 * resident over WORKER_MAX_HEAP_MB after a batch is replaced (daemon/residents.ts).
 */
export const WORKER_V8_FLAGS: readonly string[] = ['--no-opt', '--heap-growing-percent=10'];

/** The young generation's size, both semi-spaces: what `--max-semi-space-size=2` gave workers before. */
export const YOUNG_GENERATION_BYTES = 4 * 1024 * 1024;

v8.setFlagsFromString(WORKER_V8_FLAGS.join(' '));

const youngBytes = (): number => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space')?.space_size ?? 0;
let growthFactor = 2;
const holdYoungGeneration = (): void => {
  const wanted = youngBytes() >= YOUNG_GENERATION_BYTES ? 1 : 2;
  if (wanted === growthFactor) return;
  growthFactor = wanted;
  v8.setFlagsFromString(`--semi-space-growth-factor=${wanted}`);
};
holdYoungGeneration();
new PerformanceObserver(holdYoungGeneration).observe({ entryTypes: ['gc'] });
