import type { TuneHistory } from '../store/store.ts';
import { tuneFigures, type Figures } from './figures.ts';
import { recommend, type Recommendation, type TuneSettings } from './recommend.ts';

/** What `tune` prints (and `--json` gives): the window, the figures, the recommendations. */
export interface TuneReport {
  /** the window as asked (24h) and in milliseconds */
  readonly window: string;
  readonly windowMs: number;
  /** each list of the history read was at most this long (the most recent) */
  readonly readLimit: number;
  /** a list of the read reached its limit: the figures cover the most recent part of the window */
  readonly truncated: boolean;
  readonly figures: Figures;
  /** empty: nothing to change */
  readonly recommendations: readonly Recommendation[];
}

export function tuneReport(history: TuneHistory, settings: TuneSettings, window: string, readLimit: number): TuneReport {
  const figures = tuneFigures(history, settings);
  const truncated = [history.cycles.length, history.attempts.length, history.published.length].some((n) => n >= readLimit);
  return { window, windowMs: history.windowMs, readLimit, truncated, figures, recommendations: recommend(figures, settings) };
}

const ms = (n: number | null) => (n === null ? '-' : `${Math.round(n)} ms`);

/** The report as lines: one per recommendation (or "nothing to change"), then the figures. */
export function reportLines(r: TuneReport): string[] {
  const f = r.figures;
  const lines: string[] = [];
  const over =
    `over the last ${r.window}: ${f.cycles.cycles} cycles, ${f.workers.runs} worker runs, ${f.attempts} attempts, ${f.publishedPosts} posts published` +
    (r.truncated ? ` (the most recent ${r.readLimit} of each)` : '');
  if (r.recommendations.length === 0) {
    lines.push(`nothing to change ${over}`);
    lines.push(
      `  cycles: ${f.cycles.guardHits} of ${f.cycles.finished} hit the guard, ${f.cycles.leftDue} left posts due, p90 ${ms(f.cycles.durationP90Ms)}; worker runs: ${f.workers.idle} of ${f.workers.runs} idle`,
    );
  } else {
    lines.push(`${r.recommendations.length} recommendation(s) ${over}:`);
    for (const x of r.recommendations) {
      const what = x.channel === undefined ? x.setting : `channel ${x.channel}: ${x.setting}`;
      lines.push(`${what} ${x.from} -> ${x.to} (${x.by}): ${x.because}`);
    }
  }
  for (const c of f.channels) {
    const reasons = Object.entries(c.reasons)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ');
    lines.push(
      `  channel ${c.channel ?? '(none)'}: ${c.published}/${c.attempts} attempts published, publish p90 ${ms(c.publishP90Ms)}, ` +
        `lateness p50 ${ms(c.latenessP50Ms)} p90 ${ms(c.latenessP90Ms)} over ${c.latenessPosts} posts` +
        (reasons === '' ? '' : `; not published: ${reasons}`),
    );
  }
  return lines;
}
