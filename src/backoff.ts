/**
 * Exponential backoff with jitter for retryable failures: the delay after attempt n
 * is min(cap, base * 2^(n-1)), then drawn uniformly from its upper half, so that
 * posts that failed together do not all come back in the same second.
 */
export function backoffDelay(attempt: number, baseMs: number, capMs: number, random: () => number = Math.random): number {
  const exponent = Math.max(0, attempt - 1);
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(exponent, 52));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
