/**
 * Dispatcher entry point (the seed's post-scheduler.dispatcher.ts): one dispatch
 * cycle without the [CRON] wrapper. The logic lives in src/dispatcher/.
 */
import { runCycle } from '../dispatcher/cycle.ts';
import { runMain } from '../main.ts';

runMain(async (config, signal) => (await runCycle({ config, signal })).exitCode);
