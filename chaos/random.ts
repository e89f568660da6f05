/**
 * A tiny seeded pseudo-random generator (mulberry32) for the chaos tool, so that a run's
 * fault sequence can be replayed from its seed. Not for anything security-related.
 */

/** Returns a generator of floats in [0, 1); the same seed gives the same sequence. */
export function createRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}
