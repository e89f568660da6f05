import type { Command } from 'commander';
import { serveRefusal } from '../config.ts';
import { errorMessage, printWarning } from '../log.ts';
import { onSignals } from '../signals.ts';
import { CliError, configFrom, print, type GlobalFlags } from './context.ts';
import { packageVersion } from './program.ts';

export function registerServe(program: Command, globals: () => GlobalFlags): void {
  program
    .command('serve')
    .description('HTTP server: the JSON API under /api/ (OpenAPI at /openapi.json), /healthz and Prometheus /metrics (API_TOKEN: bearer token; required beyond loopback; MEDIA_DIR: where API image paths may point)')
    .option('--host <address>', 'address to listen on (default: SERVE_HOST, else 127.0.0.1)')
    .option('--port <n>', 'port to listen on, 0 for any free one (default: SERVE_PORT, else 8080)')
    .action(async (flags: { host?: string; port?: string }) => {
      const config = configFrom(globals(), { SERVE_HOST: flags.host, SERVE_PORT: flags.port });
      const refused = serveRefusal(config);
      // before the database is touched
      if (refused !== null) throw new CliError(refused);
      // the server (fastify, prom-client) loaded only here: every other command, and each
      // cron cycle's dispatcher, runs without it (about 15 MB of RSS)
      const [{ buildApp }, { storeSource }] = await Promise.all([import('../server/app.ts'), import('../server/store-source.ts')]);
      const stores = storeSource(config);
      try {
        await stores.get();
      } catch (e) {
        // it still serves: /healthz says the database is unreachable until it answers
        printWarning(`the database did not answer (${errorMessage(e)}); serving anyway, /healthz reports it`, config.logFormat);
      }
      const app = buildApp(stores, config, packageVersion());
      const address = await app.listen({ host: config.serveHost, port: config.servePort });
      print(`Listening on ${address}${config.apiToken === null ? ' (no API_TOKEN: loopback only, no authentication)' : ''}`);
      const stop = () => {
        void app.close().then(() => stores.close());
      };
      onSignals(stop);
    });
}
