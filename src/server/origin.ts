import type { FastifyRequest } from 'fastify';

/** The Host names a server without API_TOKEN answers to (it listens on loopback only). */
const LOOPBACK_HOSTS: ReadonlySet<string> = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** A Host header's name without its port: `127.0.0.1:8080` -> `127.0.0.1`, `[::1]:80` -> `[::1]`. */
function hostName(host: string): string {
  const m = /^(\[[^\]]*\]|[^:]*)(?::\d*)?$/.exec(host.trim().toLowerCase());
  return m?.[1] ?? '';
}

/**
 * Why a request is refused as coming from another site (one line), or null. A browser
 * lets any page send a "simple" request (a form, or fetch with text/plain) to this server
 * without asking: so no API request that changes something may carry a body that is not
 * JSON, say it comes from another site (Sec-Fetch-Site), or come from another origin
 * (Origin). Without API_TOKEN the server answers only to a loopback Host name, so a
 * DNS-rebound name cannot read it either.
 */
export function crossSiteRefusal(request: FastifyRequest, tokenSet: boolean): string | null {
  const host = request.headers.host ?? '';
  if (!tokenSet && !LOOPBACK_HOSTS.has(hostName(host))) {
    return 'forbidden: without API_TOKEN the server answers only to Host 127.0.0.1, localhost or [::1]';
  }
  if (!request.url.startsWith('/api/') || request.method === 'GET' || request.method === 'HEAD') return null;
  const length = request.headers['content-length'];
  const hasBody = request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
  const type = (request.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  if (hasBody && type !== 'application/json') return 'forbidden: a request body must be application/json';
  const site = request.headers['sec-fetch-site'];
  if (site === 'cross-site' || site === 'same-site') return `forbidden: a request from another site (Sec-Fetch-Site: ${site})`;
  const origin = request.headers.origin;
  if (origin !== undefined && (!URL.canParse(origin) || new URL(origin).host !== host.trim().toLowerCase())) {
    return 'forbidden: a request from another origin (Origin is not this server)';
  }
  return null;
}
