import Fastify, { type FastifyInstance } from 'fastify';
import type { Config } from '../config.ts';
import { bearerMatches } from './auth.ts';
import { DASHBOARD_ROUTES, dashboardPlugin } from './dashboard/plugin.ts';
import { buildMetrics } from './metrics.ts';
import { crossSiteRefusal } from './origin.ts';
import type { StoreSource } from './store-source.ts';
import { registerChannelRoutes } from './api/channels.ts';
import { installErrorHandler } from './api/errors.ts';
import { registerHistoryRoutes } from './api/history.ts';
import { openApiDocument } from './api/openapi.ts';
import { registerPostRoutes } from './api/posts.ts';
import type { RouteTable } from './api/routes.ts';

/** How long /healthz waits for the database before it answers "unreachable". */
export const HEALTH_TIMEOUT_MS = 2_000;

/** The largest request body (413 beyond). */
export const BODY_LIMIT = 1024 * 1024;

/** Routes that answer without the token: they hold no data (the dashboard's files: the page asks for the token). */
const OPEN_ROUTES: ReadonlySet<string> = new Set(['/healthz', '/openapi.json', ...DASHBOARD_ROUTES]);

/**
 * The HTTP server of `serve`: /healthz (no token), /metrics (Prometheus text), the JSON
 * API under /api/ and its OpenAPI document at /openapi.json (no token), and the dashboard
 * at / (its static files need no token). With API_TOKEN set, every other route requires
 * `Authorization: Bearer <API_TOKEN>`. Requests from other sites are refused first
 * (src/server/origin.ts).
 */
export function buildApp(stores: StoreSource, config: Config, version = 'unknown'): FastifyInstance {
  const app = Fastify({ logger: false, bodyLimit: BODY_LIMIT });
  installErrorHandler(app, config.logFormat);
  const registry = buildMetrics(stores);
  const token = config.apiToken;

  app.addHook('onRequest', async (request, reply) => {
    const refused = crossSiteRefusal(request, token !== null);
    if (refused !== null) {
      await reply.code(403).send({ error: refused });
      return;
    }
    if (token === null || OPEN_ROUTES.has(request.routeOptions.url ?? '')) return;
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

  // every /api/ route fastify registers must be one of the table's, so /openapi.json lists it
  const registered: string[] = [];
  app.addHook('onRoute', (r) => {
    if (r.url.startsWith('/api/')) for (const m of [r.method].flat()) if (m !== 'HEAD') registered.push(`${m} ${r.url}`);
  });
  const table: RouteTable = [];
  registerPostRoutes(app, table, stores, config);
  registerChannelRoutes(app, table, stores, config);
  registerHistoryRoutes(app, table, stores, config);
  const undocumented = registered.filter((r) => !table.some((t) => `${t.method} ${t.url}` === r));
  if (undocumented.length > 0) throw new Error(`routes missing from /openapi.json: ${undocumented.join(', ')}`);
  const document = openApiDocument(table, version);
  app.get('/openapi.json', async () => document);
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
