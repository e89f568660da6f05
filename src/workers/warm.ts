import type { AddressInfo } from 'node:net';
import type { Config } from '../config.ts';
import type { Channel } from '../types.ts';
import type { PublisherCache } from './publishers.ts';

/**
 * A resident worker's warm-up (`daemon --precise`), before it says it is ready: what its
 * first posts would otherwise do for the first time at the due time, done once now.
 *
 * A timeline of a 200-post burst showed a resident's first publish spending ~16 ms
 * before its request (the content rules made and checked for the first time, Intl's
 * segmenter loaded) and its first request ~25 ms longer than the later ones (the HTTP
 * client's code and Node's run for the first time), where later posts took under 1 ms
 * and 3 ms. So, for each enabled channel: its publisher made (kept in the worker's
 * cache, as a batch would make it), its credentials opened, its content rules checked on
 * a short text; and, if any channel sends over HTTP, one request through the same HTTP
 * client code to a server of this process's own on 127.0.0.1, answered at once.
 *
 * Nothing here reaches a network or changes a channel: a warm-up that fails costs only
 * the time it would have saved.
 */
export async function warmPublishing(config: Config, channels: readonly Channel[], publishers: PublisherCache): Promise<void> {
  const [{ rulesOf }, { contentProblem }] = await Promise.all([import('../content/rules.ts'), import('../content/check.ts')]);
  for (const channel of channels) {
    // a `module` channel's rules come from its own file, read at each use
    if (!channel.enabled || channel.platform === 'module') continue;
    try {
      if (channel.credentials !== null) publishers.openCredentials(channel.credentials);
      await publishers.publisherFor(channel);
      const mod = await publishers.moduleFor(channel.platform);
      if (mod !== null) await contentProblem(rulesOf(mod), [{ text: 'Warm-up: nothing is sent.', images: [] }], channel.settings, 0, 0, config.mediaDir);
    } catch {
      // the first post of this channel meets the same problem and reports it
    }
  }
  if (channels.some((c) => c.enabled && c.platform !== 'file')) await warmHttp().catch(() => undefined);
}

/**
 * One request through the HTTP client to a server of this process on 127.0.0.1 (and
 * node:https loaded, for the networks' APIs). node:http is imported here, not at the top:
 * an ephemeral worker, which shares this code's bundle, does not load it to start.
 */
async function warmHttp(): Promise<void> {
  const [{ createHttpClient, preloadHttp }, http] = await Promise.all([import('../publishers/http-client.ts'), import('node:http')]);
  await preloadHttp();
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.end('{}'));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const client = createHttpClient({ timeoutMs: 2_000, concurrency: 1, allowPrivateNetwork: true });
  try {
    const url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/warm-up`);
    await client.request({ method: 'POST', url, headers: { 'content-type': 'application/json' }, body: '{}', signal: AbortSignal.timeout(2_000), allowPrivateNetwork: true, connection: 'fresh' });
  } finally {
    await client.close();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
