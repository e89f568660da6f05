/**
 * How long a resident worker takes from its spawn to "ready" (connected, waiting) on
 * this host, measured at each spawn and kept in the daemon's memory: the slowest of the
 * last READY_KEEP, seeded with READY_SEED_MS until the first is measured. The daemon
 * spawns that long (and a margin) before a due time.
 */
export const READY_SEED_MS = 2_000;
const READY_KEEP = 10;
/** added to the slowest start: scheduling noise of a loaded 2-core machine */
const READY_MARGIN_MS = 50;

export interface Readiness {
  record(ms: number): void;
  /** how long before a due time the daemon acts (spawns, or hands the time to idle workers) */
  leadMs(): number;
}

export function makeReadiness(seedMs = READY_SEED_MS): Readiness {
  const recent: number[] = [];
  return {
    record(ms) {
      recent.push(ms);
      if (recent.length > READY_KEEP) recent.shift();
    },
    leadMs() {
      const slowest = recent.length === 0 ? seedMs : Math.max(...recent);
      return Math.ceil(slowest * 1.25) + READY_MARGIN_MS;
    },
  };
}
