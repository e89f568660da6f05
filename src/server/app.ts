import Fastify, { type FastifyInstance } from 'fastify';
import type { Config } from '../config.ts';
import { bearerMatches } from './auth.ts';
import { DASHBOARD_ROUTES, dashboardPlugin } from './dashboard/plugin.ts';
import { buildMetrics } from './metrics.ts';
import type { StoreSource } from './store-source.ts';

/** How long /healthz waits for the database before it answers "unreachable". */
export const HEALTH_TIMEOUT_MS = 2_000;

/** Routes that need no token: /healthz, and the dashboard's static files (they hold no data). */
const PUBLIC_ROUTES: ReadonlySet<string> = new Set(['/healthz', ...DASHBOARD_ROUTES]);

/**
 * The HTTP server of `serve`: /healthz (no token), /metrics (Prometheus text) and the
 * dashboard at /. With API_TOKEN set, every other route requires `Authorization: Bearer <API_TOKEN>`.
 */
export function buildApp(stores: StoreSource, config: Config): FastifyInstance {
  const app = Fastify({ logger: false });
  const registry = buildMetrics(stores);
  const token = config.apiToken;

  app.addHook('onRequest', async (request, reply) => {
    if (token === null || PUBLIC_ROUTES.has(request.routeOptions.url ?? '')) return;
    if (!bearerMatches(request.headers.authorization, token)) {
      await reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'unauthorized: send Authorization: Bearer <API_TOKEN>' });
    }
  });

  app.get('/healthz', async (_request, reply) => {
    const ok = await answersWithin(stores, HEALTH_TIMEOUT_MS);
    return reply.code(ok ? 200 : 503).send({ status: ok ? 'ok' : 'unavailable', database: ok ? 'ok' : 'unreachable' });
  });

  app.get('/metrics', async (_request, reply) => {
    try {
      const text = await registry.metrics();
      return await reply.type(registry.contentType).send(text);
    } catch {
      // no driver message: it could name the database's address
      return reply.code(503).send({ error: 'the database did not answer' });
    }
  });
  void app.register(dashboardPlugin);
  return app;
}

async function answersWithin(stores: StoreSource, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([stores.get().then((s) => s.ping()).then(() => true, () => false), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
