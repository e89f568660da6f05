import type { Command } from 'commander';
import { CliError, configFrom, print, withStore, type GlobalFlags } from './context.ts';

const UNIT_MS = { h: 3_600_000, d: 86_400_000 } as const;

/** `30d`, `12h`: at least an hour, at most ten years. */
export function parseAge(value: string): number {
  const m = /^(\d+)(h|d)$/.exec(value.trim());
  const ms = m === null ? Number.NaN : Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
  if (!(ms >= UNIT_MS.h && ms <= 3650 * UNIT_MS.d)) {
    throw new CliError(`invalid --older-than "${value}": use hours or days such as 12h or 30d (1h to 3650d)`);
  }
  return ms;
}

export function registerPrune(program: Command, globals: () => GlobalFlags): void {
  program
    .command('prune')
    .description('delete published, failed and cancelled posts and cycle records older than an age, so tables do not grow for ever')
    .requiredOption('--older-than <age>', 'e.g. 30d or 12h (by the time the post last changed, or the cycle started)')
    .action(async (flags: { olderThan: string }) => {
      const config = configFrom(globals());
      const olderThanMs = parseAge(flags.olderThan);
      await withStore(config, async (store) => {
        const { posts, cycles } = await store.prune(olderThanMs);
        print(`Pruned ${posts} posts and ${cycles} cycle records older than ${flags.olderThan}`);
      });
    });
}
