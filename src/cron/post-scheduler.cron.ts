/**
 * Cron trigger entry point (the seed's post-scheduler.cron.ts): runs one cycle and
 * exits 0 / 1 / 2. For system cron:
 *   * * * * * cd /var/www/app && node dist/cron/post-scheduler.cron.js >> /var/log/social-scheduler.log 2>&1
 */
import { cronIntervalWarning } from '../config.ts';
import { printWarning } from '../log.ts';
import { runMain } from '../main.ts';
import { runCronTrigger } from './run-cron.ts';

runMain((config, signal) => {
  const warning = cronIntervalWarning(config);
  if (warning !== null) printWarning(warning, config.logFormat);
  return runCronTrigger(config, signal);
});
