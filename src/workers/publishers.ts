import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import type { Publisher, PublisherModule } from '../publishers/publisher.ts';
import { loadPublisherModule } from '../publishers/registry.ts';
import type { Channel } from '../types.ts';

/**
 * A worker's publishers: each platform's module loaded once, one publisher per platform
 * (its HTTP client and keep-alive pools, sessions, refreshed tokens) shared by the
 * platform's channels, and the channels' credentials opened once per sealed form.
 *
 * A cron worker's cache lives for its one batch (runWorker closes it). A resident
 * worker's (`daemon --precise`) lives across its batches (runWorker settles it after
 * each), so that the connections a batch opened serve the next, until the worker exits.
 *
 * A channel is given one publisher for a whole batch. When a channel comes in a batch
 * changed since it was last used (its platform, settings, sealed credentials or
 * unknown-outcome policy differ, as its claim brings them), its platform gets a new
 * publisher, once per batch: nothing the old one keeps (a socket to the old URL's host,
 * a session of the old credentials) serves it again. Channels already given the old one
 * in this batch keep it to the batch's end (their sessions and refreshed tokens with
 * it); `settle` then closes it. Between batches what changed is found by the claim: no
 * query of its own. (A channel changed in the middle of a batch is sent as its claim
 * says all the same: every publish takes the channel's settings and credentials from
 * its post; its publisher is renewed at the next batch.)
 */
export interface PublisherCache {
  /** the platform's module (null: a platform nobody knows); one load per platform */
  moduleFor(platform: string): Promise<PublisherModule | null>;
  /** the publisher this channel is sent through in this batch; null: a platform nobody knows */
  publisherFor(channel: Channel): Promise<Publisher | null>;
  /** a channel's sealed credentials, opened (a copy: a publisher may change its own) */
  openCredentials(sealed: string): Record<string, unknown>;
  /** a batch ended: publishers replaced during it are closed, the next batch looks at its channels again */
  settle(): Promise<void>;
  /** closes every publisher (the worker exits) */
  close(): Promise<void>;
}

export interface PublisherCacheOptions {
  readonly config: Config;
  /** how many publishes may be in flight at once in any batch (sizes connection pools) */
  readonly concurrency: number;
  readonly log: Logger;
  /** opens sealed credentials (the worker's vault) */
  readonly open: (sealed: string) => Record<string, unknown>;
  /** where modules come from (tests inject fakes); default: src/publishers/registry.ts */
  readonly loadPublisherModule?: (platform: string) => Promise<PublisherModule | null>;
}

/** Opened credentials kept at most (a refresh seals anew: the oldest go first). */
const OPENED_KEPT = 64;

/** What of a channel its publisher may depend on. Attention, pauses and rate limits are not (the worker sets them itself). */
function fingerprint(c: Channel): string {
  return JSON.stringify([c.platform, c.settings, c.credentials, c.onUnknown]);
}

export function makePublisherCache(options: PublisherCacheOptions): PublisherCache {
  const { config, log } = options;
  const load = options.loadPublisherModule ?? loadPublisherModule;
  const modules = new Map<string, Promise<PublisherModule | null>>();
  /** the publisher a channel not yet given one in this batch gets, by platform */
  const current = new Map<string, Publisher>();
  /** each channel's fingerprint when it was last given a publisher */
  const seen = new Map<number, string>();
  /** this batch: the publisher each channel was given */
  const given = new Map<number, Publisher>();
  /** platforms whose publisher was built in this batch (not replaced again in it) */
  const fresh = new Set<string>();
  /** replaced, closed when the batch ends */
  const retired = new Set<Publisher>();
  const opened = new Map<string, Record<string, unknown>>();

  const moduleFor = (platform: string): Promise<PublisherModule | null> => {
    let mod = modules.get(platform);
    if (mod === undefined) {
      mod = load(platform);
      modules.set(platform, mod);
      // a failed load is tried again by a later post
      mod.catch(() => modules.delete(platform));
    }
    return mod;
  };
  const closeAll = (list: Iterable<Publisher>) => Promise.all([...list].map((p) => p.close().catch(() => undefined)));

  return {
    moduleFor,
    async publisherFor(channel) {
      const loaded = await moduleFor(channel.platform);
      if (loaded === null) return null;
      const mine = given.get(channel.id);
      if (mine !== undefined) return mine;
      const print = fingerprint(channel);
      const before = seen.get(channel.id);
      let publisher = current.get(channel.platform);
      if (publisher !== undefined && before !== undefined && before !== print && !fresh.has(channel.platform)) {
        log.info(`Channel ${channel.name} changed since its last batch: a new ${channel.platform} publisher`, { channel: channel.name });
        retired.add(publisher);
        publisher = undefined;
      }
      if (publisher === undefined) {
        publisher = loaded.createPublisher({ timeoutMs: config.publishTimeoutMs, concurrency: options.concurrency, allowPrivateNetwork: config.allowPrivateNetwork, moduleDir: config.moduleDir });
        current.set(channel.platform, publisher);
        fresh.add(channel.platform);
      }
      seen.set(channel.id, print);
      given.set(channel.id, publisher);
      return publisher;
    },
    openCredentials(sealed) {
      let credentials = opened.get(sealed);
      if (credentials === undefined) {
        credentials = options.open(sealed);
        opened.set(sealed, credentials);
        if (opened.size > OPENED_KEPT) opened.delete(opened.keys().next().value ?? sealed);
      }
      return structuredClone(credentials);
    },
    async settle() {
      given.clear();
      fresh.clear();
      const done = [...retired];
      retired.clear();
      await closeAll(done);
    },
    async close() {
      const all = [...current.values(), ...retired];
      current.clear();
      retired.clear();
      given.clear();
      fresh.clear();
      opened.clear();
      await closeAll(all);
    },
  };
}
