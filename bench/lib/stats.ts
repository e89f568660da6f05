/** Small statistics over measured numbers. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] ?? Number.NaN) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

export function min(values: readonly number[]): number {
  return values.length === 0 ? Number.NaN : Math.min(...values);
}

export function max(values: readonly number[]): number {
  return values.length === 0 ? Number.NaN : Math.max(...values);
}

/** Rounds for display: whole numbers at or above 100, else `digits` decimals. */
export function fmt(n: number, digits = 1): string {
  if (!Number.isFinite(n)) return 'n/a';
  return Math.abs(n) >= 100 ? String(Math.round(n)) : n.toFixed(digits);
}
