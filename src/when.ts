/**
 * Parses a WHEN given on the command line: `now`, a relative `+30s` / `+5m` / `+2h` /
 * `+1d`, or an ISO-8601 timestamp (with a time zone, or UTC when none is given).
 *
 * Refused, in one line: dates and times that do not exist (2026-02-30, 24:00, 10:61),
 * times before 2000-01-01T00:00:00Z, and anything more than 100 years ahead. A valid
 * time in the past is kept as it is: the post is due at once.
 */
export class WhenError extends Error {
  override name = 'WhenError';
}

const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** The furthest ahead a post can be scheduled: 100 years of 365.25 days. */
export const MAX_AHEAD_MS = 36_525 * UNIT_MS.d;
/** The earliest time accepted. */
export const EARLIEST = new Date('2000-01-01T00:00:00.000Z');

const ISO =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:?\d{2})?)?$/;

const EXAMPLES = 'use now, +30s, +5m, +2h, +1d or an ISO-8601 time such as 2026-12-01T09:00:00Z';

export function parseWhen(value: string, now: Date = new Date()): Date {
  const text = value.trim();
  const fail = (reason: string): never => {
    throw new WhenError(`invalid time "${value}": ${reason}`);
  };
  if (text === '' || text === 'now') return now;

  const relative = /^\+(\d+)(s|m|h|d)$/.exec(text);
  if (relative !== null) {
    const ms = Number(relative[1]) * UNIT_MS[relative[2] as keyof typeof UNIT_MS];
    if (!(ms <= MAX_AHEAD_MS)) fail('at most 100 years ahead (+36525d)');
    return new Date(now.getTime() + ms);
  }

  const m = ISO.exec(text);
  if (m === null) return fail(EXAMPLES);
  const [, y, mo, d, h = '00', mi = '00', s = '00', fraction = '', zone = 'Z'] = m;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  const hour = Number(h);
  const minute = Number(mi);
  const second = Number(s);
  if (month < 1 || month > 12) fail(`there is no month ${mo ?? ''}`);
  const daysInMonth = new Date(Date.UTC(2000, month, 0)).getUTCDate() - (month === 2 && !isLeapYear(year) ? 1 : 0);
  if (day < 1 || day > daysInMonth) fail(`${y ?? ''}-${mo ?? ''} has ${daysInMonth} days`);
  if (hour > 23) fail(`there is no hour ${h}`);
  if (minute > 59) fail(`there is no minute ${mi}`);
  if (second > 59) fail(`there is no second ${s}`);
  let offsetMinutes = 0;
  if (zone !== 'Z') {
    const zh = Number(zone.slice(1, 3));
    const zm = Number(zone.slice(-2));
    if (zh > 23 || zm > 59) fail(`there is no time zone offset ${zone}`);
    offsetMinutes = (zone.startsWith('-') ? -1 : 1) * (zh * 60 + zm);
  }
  const ms = Number(fraction.padEnd(3, '0').slice(0, 3));
  const utc = new Date(0);
  utc.setUTCFullYear(year, month - 1, day);
  utc.setUTCHours(hour, minute, second, ms);
  const date = new Date(utc.getTime() - offsetMinutes * 60_000);

  if (date.getTime() < EARLIEST.getTime()) fail('times before 2000-01-01T00:00:00Z are not accepted');
  if (date.getTime() - now.getTime() > MAX_AHEAD_MS) fail('at most 100 years ahead');
  return date;
}

function isLeapYear(year: number): boolean {
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
}

/** `due now` when `at` is not after `now`, else `in 5m`, `in 2h 30m`, `in 3d 4h` (the two largest units). */
export function describeDue(at: Date, now: Date): string {
  const seconds = Math.round((at.getTime() - now.getTime()) / 1_000);
  if (seconds <= 0) return 'due now';
  const parts: string[] = [];
  let rest = seconds;
  for (const [unit, size] of [['d', 86_400], ['h', 3_600], ['m', 60], ['s', 1]] as const) {
    const n = Math.floor(rest / size);
    rest -= n * size;
    if (n > 0 || parts.length > 0) parts.push(`${n}${unit}`);
  }
  return `in ${parts.slice(0, 2).filter((p) => !p.startsWith('0')).join(' ')}`;
}
