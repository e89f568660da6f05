import type { Logger } from '../log.ts';
import { spawnWorker, type WorkerExit, type WorkerHandle } from '../dispatcher/spawn.ts';
import type { DaemonMessage, DueMessage, ResidentMessage } from '../workers/resident.ts';
import type { Readiness } from './readiness.ts';

/**
 * The resident workers of `daemon --precise`: worker processes started ahead of a due
 * time that stay between batches (src/workers/resident.ts). The daemon hands each a due
 * time and a cycle; each batch comes back as a WorkerExit, the shape the dispatcher's
 * summary and cycle records take.
 */
export interface Resident {
  readonly workerId: string;
  readonly handle: WorkerHandle;
  /** resolves when the worker says it is ready (false: it exited first) */
  readonly ready: Promise<boolean>;
  /** batches handed to it and not reported yet (it works them in order) */
  queued: number;
  /** their cycles, in order: the first is the one it works (or starts next) */
  readonly cycles: number[];
  /** the cycle it was working (or about to start) when it exited: that batch alone ends with its exit */
  exitedIn: number | null;
  /** when its last batch ended (or it was spawned) */
  idleSince: number;
  /** told to exit */
  retiring: boolean;
}

export interface Residents {
  spawn(workerId: string, cycleId: number, slot: boolean): Resident;
  /** live workers not retiring, with no batch */
  idle(): Resident[];
  /** live workers with batches, least loaded first */
  busy(): Resident[];
  /** every live worker process (they all hold a MAX_WORKERS place, and a slot under GLOBAL_MAX_WORKERS) */
  live(): Resident[];
  /**
   * hands a batch (`at` on this host's clock, its cycle, the posts to keep in flight) to
   * the worker once it is ready; `onStart` when it starts the batch. Resolves with its batch, or with its exit if it ended working it (or before
   * starting its first); null when it ended before reaching this batch (queued behind
   * another): that batch's cycle records the exit, this one nothing.
   */
  dispatch(r: Resident, batch: Omit<DueMessage, 'type'>, onStart: (startedAt: number) => void): Promise<WorkerExit | null>;
  /** tells a worker to exit after what it has (idle after WORKER_IDLE_MS, or its slot or lock lost) */
  retire(r: Resident): void;
}

export function makeResidents(options: {
  readonly env: NodeJS.ProcessEnv;
  readonly entry?: string;
  readonly log: Logger;
  readonly readiness: Readiness;
  /** WORKER_MAX_HEAP_MB: a worker reporting more heap after a batch is retired */
  readonly maxHeapMb: number;
  /** a worker process ended (its slot, if any, is free) */
  readonly onExit: (r: Resident, exit: WorkerExit) => void;
}): Residents {
  const all = new Map<string, Resident>();
  const send = (r: Resident, m: DaemonMessage) => {
    if (r.handle.process.connected) r.handle.process.send(m);
  };
  const residents: Residents = {
    spawn(workerId, cycleId, slot) {
      const handle = spawnWorker(workerId, cycleId, options.env, options.entry, slot, { resident: true });
      const spawnedAt = performance.now();
      const ready = new Promise<boolean>((resolve) => {
        handle.process.on('message', (m: ResidentMessage) => {
          if (m.type !== 'ready') return;
          options.readiness.record(performance.now() - spawnedAt);
          resolve(true);
        });
        void handle.exited.then(() => resolve(false));
      });
      const r: Resident = { workerId, handle, ready, queued: 0, cycles: [], exitedIn: null, idleSince: Date.now(), retiring: false };
      all.set(workerId, r);
      // registered before any dispatch's: exitedIn is set when theirs run
      void handle.exited.then((exit) => {
        r.exitedIn = r.cycles[0] ?? null;
        all.delete(workerId);
        options.onExit(r, exit);
      });
      return r;
    },
    idle: () => [...all.values()].filter((r) => r.queued === 0 && !r.retiring),
    busy: () => [...all.values()].filter((r) => r.queued > 0 && !r.retiring).sort((a, b) => a.queued - b.queued),
    live: () => [...all.values()],
    async dispatch(r, due, onStart) {
      const { cycleId } = due;
      r.queued++;
      r.cycles.push(cycleId);
      const batch = new Promise<WorkerExit | null>((resolve) => {
        const onMessage = (m: ResidentMessage) => {
          if (m.type === 'start' && m.cycleId === cycleId) onStart(m.startedAt);
          if (m.type !== 'batch' || m.cycleId !== cycleId) return;
          r.handle.process.off('message', onMessage);
          if (m.heapMb > options.maxHeapMb) {
            options.log.info(`Worker ${r.workerId} holds ${m.heapMb} MB of heap after its batch (WORKER_MAX_HEAP_MB ${options.maxHeapMb}): a fresh one next time`, { workerId: r.workerId, heapMb: m.heapMb });
            residents.retire(r);
          }
          resolve({
            workerId: r.workerId,
            startedAt: new Date(m.startedAt),
            finishedAt: new Date(m.finishedAt),
            durationMs: m.finishedAt - m.startedAt,
            exitCode: m.exitCode,
            signal: null,
            report: { type: 'report', claimed: m.claimed, published: m.published, retried: m.retried, failed: m.failed, unknown: m.unknown },
          });
        };
        r.handle.process.on('message', onMessage);
        // it ended before reporting this batch: its exit is the result of the batch it was on
        void r.handle.exited.then((exit) => {
          r.handle.process.off('message', onMessage);
          resolve(r.exitedIn === cycleId ? exit : null);
        });
      });
      if (await r.ready) send(r, { type: 'due', ...due });
      const result = await batch;
      r.cycles.splice(r.cycles.indexOf(cycleId), 1);
      r.queued--;
      r.idleSince = Date.now();
      return result;
    },
    retire(r) {
      if (r.retiring) return;
      r.retiring = true;
      options.log.info(`Worker ${r.workerId} ${r.queued === 0 ? 'idle' : 'after its batch'}, told to exit`, { workerId: r.workerId });
      send(r, { type: 'exit' });
    },
  };
  return residents;
}
