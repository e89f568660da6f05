/**
 * Parses a WHEN given on the command line: `now`, a relative `+30s` / `+5m` / `+2h` /
 * `+1d`, or an ISO-8601 timestamp (with a time zone, or UTC when none is given).
 */
export class WhenError extends Error {
  override name = 'WhenError';
}

const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

export function parseWhen(value: string, now: Date = new Date()): Date {
  const text = value.trim();
  if (text === '' || text === 'now') return now;
  const relative = /^\+(\d+)(s|m|h|d)$/.exec(text);
  if (relative !== null) {
    const amount = Number(relative[1]);
    const unit = relative[2] as keyof typeof UNIT_MS;
    return new Date(now.getTime() + amount * UNIT_MS[unit]);
  }
  if (/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$/.test(text)) {
    const hasZone = /(Z|[+-]\d{2}:?\d{2})$/.test(text) && text.length > 10;
    const date = new Date(hasZone ? text : `${text.replace(' ', 'T')}${text.length === 10 ? 'T00:00:00' : ''}Z`);
    if (!Number.isNaN(date.getTime())) return date;
  }
  throw new WhenError(`invalid time "${value}": use now, +30s, +5m, +2h, +1d or an ISO-8601 time such as 2026-12-01T09:00:00Z`);
}
