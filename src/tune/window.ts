/** The window `tune` reads: its default, and the longest and shortest it takes. */
export const DEFAULT_WINDOW = '24h';
export const MIN_WINDOW_MS = 60_000;
export const MAX_WINDOW_MS = 30 * 86_400_000;
/** The most cycles, attempts and published posts one read takes (the most recent of the window). */
export const TUNE_READ_LIMIT = 10_000;

const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** `30m`, `24h`, `7d` as milliseconds; null when it is not one, or outside 1m..30d. */
export function parseWindow(value: string): number | null {
  const m = /^(\d{1,6})(m|h|d)$/.exec(value.trim());
  if (m === null) return null;
  const ms = Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
  return ms >= MIN_WINDOW_MS && ms <= MAX_WINDOW_MS ? ms : null;
}
