import type { Command } from 'commander';
import { RATE_LIMIT_SETTING } from '../ratelimits/limits.ts';
import { reportLines, tuneReport } from '../tune/report.ts';
import { DEFAULT_WINDOW, parseWindow, TUNE_READ_LIMIT } from '../tune/window.ts';
import { CliError, configFrom, print, withStore, type GlobalFlags } from './context.ts';

export function registerTune(program: Command, globals: () => GlobalFlags): void {
  program
    .command('tune')
    .description("recommend BATCH_SIZE, MAX_WORKERS, WORKER_CONCURRENCY, PUBLISH_TIMEOUT_MS, MAX_ATTEMPTS and channels' rate limits from this installation's history")
    .option('--window <span>', 'how far back to read: 30m, 24h, 7d (1m to 30d)', DEFAULT_WINDOW)
    .option('--json', 'the report as JSON')
    .action(async (flags: { window: string; json?: boolean }) => {
      const config = configFrom(globals());
      const windowMs = parseWindow(flags.window);
      if (windowMs === null) throw new CliError(`invalid --window "${flags.window.slice(0, 40)}": use minutes, hours or days such as 30m, 24h or 7d (1m to 30d)`);
      await withStore(config, async (store) => {
        const history = await store.tuneHistory(windowMs, TUNE_READ_LIMIT);
        const rateLimits: Record<string, string | null> = {};
        for (const c of await store.listChannels()) {
          const setting = c.settings[RATE_LIMIT_SETTING];
          rateLimits[c.name] = typeof setting === 'string' ? setting : null;
        }
        const report = tuneReport(history, { ...config, rateLimits }, flags.window.trim(), TUNE_READ_LIMIT);
        if (flags.json === true) print(JSON.stringify(report, null, 2));
        else for (const line of reportLines(report)) print(line);
      });
    });
}
