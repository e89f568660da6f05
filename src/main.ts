import { ConfigError, loadConfig, requestedLogFormat, type Config } from './config.ts';
import { errorMessage, printError, reportUncaught } from './log.ts';
import { guardOutput } from './output.ts';
import { onSignals } from './signals.ts';
import { EXIT } from './types.ts';

/**
 * Shared shape of the process entry points: read the config (a bad one stops here,
 * before the database is touched), pass SIGTERM / SIGINT on as an abort signal (a
 * second one exits at once), run, exit with the returned code.
 */
export function runMain(run: (config: Config, signal: AbortSignal) => Promise<number>): void {
  guardOutput();
  reportUncaught(requestedLogFormat());
  let config: Config;
  try {
    config = loadConfig();
  } catch (e) {
    printError(e instanceof ConfigError ? e.message : errorMessage(e), requestedLogFormat());
    process.exit(EXIT.error);
  }
  const stop = new AbortController();
  onSignals(() => stop.abort('signal'));
  run(config, stop.signal).then(
    (code) => process.exit(code),
    (e: unknown) => {
      printError(errorMessage(e), config.logFormat);
      process.exit(EXIT.error);
    },
  );
}
