import { Command } from 'commander';
import fs from 'node:fs';
import path from 'node:path';
import { PACKAGE_ROOT } from '../paths.ts';
import { registerChannels } from './channels.ts';
import { configFrom, print, type GlobalFlags } from './context.ts';
import { registerCycle } from './cycle.ts';
import { registerPosts } from './posts.ts';
import { registerPrune } from './prune.ts';
import { registerServe } from './serve.ts';
import { registerStatus } from './status.ts';
import { registerTune } from './tune.ts';
import { registerWorker } from './worker.ts';
import { withStore } from './context.ts';

export function buildProgram(): Command {
  const program = new Command('post-scheduler')
    .description('Publishes scheduled social-media posts on time through a dynamic worker dispatcher.')
    .option('--database-url <url>', 'sqlite:PATH, postgres://... or mysql://user:pass@host:3306/db (also mariadb://) (default: DATABASE_URL, else sqlite at ./data/post-scheduler.db)')
    .option('--log-format <format>', 'text (default) or json')
    .version(packageVersion(), '--version', 'print the version')
    .addHelpText(
      'after',
      `
Environment: DATABASE_URL, BATCH_SIZE (5), MAX_WORKERS (5), MIN_WORKERS (1), TIMEOUT_MS (55000),
WORKER_TIMEOUT_MS (50000), WORKER_CONCURRENCY (BATCH_SIZE), MAX_ATTEMPTS (5), RETRY_BASE_MS (30000),
RETRY_MAX_MS (3600000), PUBLISH_TIMEOUT_MS (10000), LEASE_MS (30000), KILL_GRACE_MS (3000), WORKER_IDLE_MS (5000),
WORKER_MAX_HEAP_MB (96), LOG_FORMAT (text), LOG_TIMESTAMPS (false), ALERT_CHANNEL (none),
API_TOKEN (none), SERVE_HOST (127.0.0.1), SERVE_PORT (8080).`,
    );
  const globals = (): GlobalFlags => program.opts<GlobalFlags>();

  program
    .command('migrate')
    .description('create or upgrade the schema')
    .action(async () => {
      const config = configFrom(globals());
      await withStore(config, async () => {
        print(`Schema up to date (${config.databaseLabel})`);
      });
    });
  registerChannels(program, globals);
  registerPosts(program, globals);
  registerCycle(program, globals);
  registerWorker(program, globals);
  registerStatus(program, globals);
  registerPrune(program, globals);
  registerServe(program, globals);
  registerTune(program, globals);
  return program;
}

/** The version in the package's package.json. */
export function packageVersion(): string {
  try {
    const raw = fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8');
    return (JSON.parse(raw) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}
