import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildFile, PACKAGE_ROOT } from '../../paths.ts';

/**
 * The dashboard: one static page, its script and styles, and uPlot (charts) from
 * node_modules. The files hold no data: the page asks for the API token and sends it
 * on each API call, so these routes need none (app.ts exempts DASHBOARD_ROUTES).
 */
export const DASHBOARD_ROUTES: readonly string[] = ['/', '/dashboard/:file'];

/**
 * A second guard beside the script's textContent-only rendering: only this server's
 * scripts and styles run, nothing inline, no frames, no other origin.
 */
export const DASHBOARD_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

interface Asset {
  readonly type: string;
  readonly body: Buffer;
}

const STATIC_DIR = `${buildFile('server/dashboard/static')}/`;
const require = createRequire(path.join(PACKAGE_ROOT, 'package.json'));

/** The served files by name: a fixed table, so no request path ever reaches the file system. */
function loadAssets(): Map<string, Asset> {
  const read = (file: string) => fs.readFileSync(file);
  return new Map<string, Asset>([
    ['index.html', { type: 'text/html; charset=utf-8', body: read(`${STATIC_DIR}index.html`) }],
    ['app.mjs', { type: 'text/javascript; charset=utf-8', body: read(`${STATIC_DIR}app.mjs`) }],
    ['style.css', { type: 'text/css; charset=utf-8', body: read(`${STATIC_DIR}style.css`) }],
    ['uplot.js', { type: 'text/javascript; charset=utf-8', body: read(require.resolve('uplot/dist/uPlot.iife.min.js')) }],
    ['uplot.css', { type: 'text/css; charset=utf-8', body: read(require.resolve('uplot/dist/uPlot.min.css')) }],
  ]);
}

export async function dashboardPlugin(app: FastifyInstance): Promise<void> {
  const assets = loadAssets();
  const send = (name: string) => assets.get(name);

  app.get('/', async (_request, reply) => {
    const page = send('index.html');
    if (page === undefined) return reply.code(404).send({ error: 'not found' });
    return reply
      .type(page.type)
      .header('content-security-policy', DASHBOARD_CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', 'no-cache')
      .send(page.body);
  });

  app.get<{ Params: { file: string } }>('/dashboard/:file', async (request, reply) => {
    const asset = request.params.file === 'index.html' ? undefined : send(request.params.file);
    if (asset === undefined) return reply.code(404).send({ error: `no dashboard file named ${JSON.stringify(request.params.file)}` });
    return reply.type(asset.type).header('x-content-type-options', 'nosniff').header('cache-control', 'no-cache').send(asset.body);
  });
}
