/**
 * Cron trigger entry point (the seed's post-scheduler.cron.ts): runs one cycle and
 * exits 0 / 1 / 2. For system cron:
 *   * * * * * cd /var/www/app && node dist/cron/post-scheduler.cron.js >> /var/log/social-scheduler.log 2>&1
 */
import { runMain } from '../main.ts';
import { runCronTrigger } from './run-cron.ts';

runMain((config, signal) => runCronTrigger(config, signal));
