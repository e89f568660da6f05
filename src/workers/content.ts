import type { Config } from '../config.ts';
import type { ContentRules } from '../content/check.ts';
import type { HttpClient } from '../publishers/http-client.ts';
import type { PublisherModule } from '../publishers/publisher.ts';
import type { Store } from '../store/store.ts';
import type { Channel } from '../types.ts';
import type { PublishDeps } from './publish-post.ts';

/**
 * A worker's content dependencies of publishPost: what each channel takes, the images
 * of a part about to be sent (URLs through one HTTP client with the SSRF guard; private
 * addresses with ALLOW_PRIVATE_NETWORK or the channel's `allow_private_network`), and
 * each published part of a thread put on record under this worker's claim.
 * The content rules, the image code and the HTTP client (node:http) are imported on
 * first use, after the first claim: a worker's start-up does not load them.
 */
export function workerContent(
  config: Config,
  workerId: string,
  store: Store,
  moduleFor: (platform: string) => Promise<PublisherModule | null>,
): { deps(signal: AbortSignal): Pick<PublishDeps, 'contentRules' | 'mediaDir' | 'loadImage' | 'recordPart'>; close(): Promise<void> } {
  let http: Promise<HttpClient> | null = null;
  // a platform's rules are its module's: made once per platform (a `module` channel's
  // come from its own file, read each time)
  const byPlatform = new Map<string, ContentRules | null>();
  const contentRules = async (channel: Channel): Promise<ContentRules | null> => {
    const known = byPlatform.get(channel.platform);
    if (known !== undefined) return known;
    const { rulesFor, rulesOf } = await import('../content/rules.ts');
    if (channel.platform === 'module') return rulesFor(channel, config.moduleDir);
    const mod = await moduleFor(channel.platform);
    const rules = mod === null ? null : rulesOf(mod);
    if (rules !== null) byPlatform.set(channel.platform, rules);
    return rules;
  };
  return {
    deps: (signal) => ({
      contentRules,
      mediaDir: config.mediaDir,
      loadImage: async (image, limits, channel) => {
        http ??= import('../publishers/http-client.ts').then(({ createHttpClient }) =>
          createHttpClient({ timeoutMs: config.publishTimeoutMs, concurrency: config.workerConcurrency, allowPrivateNetwork: config.allowPrivateNetwork }),
        );
        const { loadImage } = await import('../content/images.ts');
        return loadImage(image, limits, { http: await http, signal, platform: channel.platform, allowPrivateNetwork: channel.settings['allow_private_network'] === true, mediaDir: config.mediaDir });
      },
      recordPart: (postId, token, index, part) => store.recordPart(workerId, postId, token, index, part),
    }),
    async close() {
      const client = http;
      http = null;
      await (await client)?.close();
    },
  };
}
