import type { Config } from '../config.ts';
import type { ContentRules } from '../content/check.ts';
import { loadImage } from '../content/images.ts';
import { rulesFor, rulesOf } from '../content/rules.ts';
import { createHttpClient, type HttpClient } from '../publishers/http-client.ts';
import type { PublisherModule } from '../publishers/publisher.ts';
import type { Store } from '../store/store.ts';
import type { Channel } from '../types.ts';
import type { PublishDeps } from './publish-post.ts';

/**
 * A worker's content dependencies of publishPost: what each channel takes, the images
 * of a part about to be sent (URLs through one HTTP client with the SSRF guard; private
 * addresses with ALLOW_PRIVATE_NETWORK or the channel's `allow_private_network`), and
 * each published part of a thread put on record under this worker's claim.
 */
export function workerContent(
  config: Config,
  workerId: string,
  store: Store,
  moduleFor: (platform: string) => Promise<PublisherModule | null>,
): { deps(signal: AbortSignal): Pick<PublishDeps, 'contentRules' | 'mediaDir' | 'loadImage' | 'recordPart'>; close(): Promise<void> } {
  let http: HttpClient | null = null;
  const contentRules = async (channel: Channel): Promise<ContentRules | null> => {
    if (channel.platform === 'module') return rulesFor(channel, config.moduleDir);
    const mod = await moduleFor(channel.platform);
    return mod === null ? null : rulesOf(mod);
  };
  return {
    deps: (signal) => ({
      contentRules,
      mediaDir: config.mediaDir,
      loadImage: (image, limits, channel) => {
        http ??= createHttpClient({ timeoutMs: config.publishTimeoutMs, concurrency: config.workerConcurrency, allowPrivateNetwork: config.allowPrivateNetwork });
        return loadImage(image, limits, { http, signal, platform: channel.platform, allowPrivateNetwork: channel.settings['allow_private_network'] === true, mediaDir: config.mediaDir });
      },
      recordPart: (postId, token, index, part) => store.recordPart(workerId, postId, token, index, part),
    }),
    async close() {
      await http?.close();
      http = null;
    },
  };
}
