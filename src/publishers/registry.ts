import type { PublisherModule } from './publisher.ts';

/** Platform name -> its module, imported on first use. */
const MODULES: Record<string, () => Promise<PublisherModule>> = {
  file: async () => (await import('./file.ts')).filePublisher,
  webhook: async () => (await import('./webhook.ts')).webhookPublisher,
  mastodon: async () => (await import('./mastodon.ts')).mastodonPublisher,
  bluesky: async () => (await import('./bluesky.ts')).blueskyPublisher,
  telegram: async () => (await import('./telegram.ts')).telegramPublisher,
  discord: async () => (await import('./discord.ts')).discordPublisher,
  slack: async () => (await import('./slack.ts')).slackPublisher,
  x: async () => (await import('./x.ts')).xPublisher,
  linkedin: async () => (await import('./linkedin.ts')).linkedinPublisher,
  facebook: async () => (await import('./facebook.ts')).facebookPublisher,
  module: async () => (await import('./module.ts')).modulePublisher,
};

export const KNOWN_PLATFORMS = Object.keys(MODULES);

export async function loadPublisherModule(platform: string): Promise<PublisherModule | null> {
  const load = MODULES[platform];
  return load === undefined ? null : load();
}
