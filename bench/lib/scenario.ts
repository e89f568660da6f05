import type { Dialect } from './db.ts';

export interface BenchContext {
  readonly quick: boolean;
  /** repetitions per measured point */
  readonly reps: number;
  /** the databases to run on (PostgreSQL is left out, loudly, when it does not answer) */
  readonly dialects: readonly Dialect[];
  /** the machine line printed under each table */
  readonly machine: string;
}

export interface ScenarioResult {
  readonly markdown: string;
  readonly raw: unknown;
  /** one line per failed run or check; any makes the bench exit 1 */
  readonly failures: string[];
}

/** Progress on stderr, so stdout carries only the markdown. */
export function progress(line: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);
}

export function errorText(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  return text.length <= 400 ? text : `${text.slice(0, 400)}… (${text.length - 400} more characters)`;
}

/** The failures section under a table. */
export function failureList(failures: readonly string[]): string {
  if (failures.length === 0) return '';
  return '\n\n**FAILURES** (figures of failed points are not reported):\n\n' + failures.map((f) => `- ${f}`).join('\n');
}
