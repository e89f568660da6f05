import type { ChannelRemoval, Store } from '../store/store.ts';
import type { Channel } from '../types.ts';
import { makeVault } from '../credentials/vault.ts';
import { loadPublisherModule } from '../publishers/registry.ts';
import { conflict, invalid, notFound } from './errors.ts';
import type { OperationOptions } from './posts.ts';

/**
 * The operations on channels an operator takes: pause and resume (an operator's pause,
 * apart from a network's rate pause, which ends by itself), and removal.
 */

/** pause: the channel's posts wait, pending and unclaimed, their attempts untouched, until resume. */
export async function pauseChannel(store: Store, name: string, options: OperationOptions = {}): Promise<Channel> {
  const channel = await store.setChannelPaused(name, true);
  if (channel === null) throw notFound(`no channel named "${name}"`);
  options.log?.info(`Paused channel ${name}`, { channel: name });
  return channel;
}

/** resume: lifts an operator's pause (a network's rate pause still runs its course). */
export async function resumeChannel(store: Store, name: string, options: OperationOptions = {}): Promise<Channel> {
  const channel = await store.setChannelPaused(name, false);
  if (channel === null) throw notFound(`no channel named "${name}"`);
  options.log?.info(`Resumed channel ${name}`, { channel: name });
  return channel;
}

/**
 * remove: refused (conflict) while the channel has pending, processing or unknown posts;
 * with `cancelPosts` its pending and unknown posts are cancelled with it (processing ones
 * still refuse: they are being sent). Its published history stays readable.
 */
export async function removeChannel(store: Store, name: string, cancelPosts: boolean, options: OperationOptions = {}): Promise<ChannelRemoval> {
  const result = await store.removeChannel(name, cancelPosts);
  if (result === null) throw notFound(`no channel named "${name}"`);
  if (!result.removed) {
    const counts = Object.entries(result.blocking)
      .map(([status, n]) => `${n} ${status}`)
      .join(', ');
    const fix = (result.blocking.processing ?? 0) > 0 ? 'wait until the processing ones finish, then remove it' : 'cancel them first, or remove it with its posts cancelled (--cancel-posts; cancelPosts=true over the API)';
    throw conflict(`channel ${name} has posts (${counts}): ${fix}`);
  }
  options.log?.info(`Removed channel ${name}${result.cancelled > 0 ? ` and cancelled ${result.cancelled} posts` : ''}`, { channel: name });
  return result;
}

/**
 * rotation: a webhook's new URL and/or secret, merged into its sealed credentials,
 * checked against the webhook's settings and credentials schemas, sealed again with
 * `secretKey` (plain only with `insecurePlaintext`). The values never appear in a message.
 */
export async function rotateWebhook(
  store: Store,
  channel: Channel,
  fresh: { readonly url: string | undefined; readonly secret: string | undefined },
  secretKey: Buffer | null,
  options: OperationOptions & { readonly insecurePlaintext?: boolean } = {},
): Promise<Channel> {
  if (channel.platform !== 'webhook') throw invalid(`a new URL or secret is for webhook channels; ${channel.name} is ${channel.platform}`);
  if ('url' in channel.settings || 'secret' in channel.settings) throw conflict(`channel ${channel.name} keeps its URL in plaintext settings: rekey it first (post-scheduler channels rekey)`);
  const vault = makeVault(secretKey);
  let current: Record<string, unknown> = {};
  // both given: the old credentials are replaced whole, so a lost key does not stand in the way
  if (channel.credentials !== null && (fresh.url === undefined || fresh.secret === undefined)) {
    try {
      current = vault.open(channel.credentials);
    } catch (e) {
      throw conflict(`channel ${channel.name}: its credentials cannot be opened (${e instanceof Error ? e.message : String(e)}); give both a new URL and a new secret`);
    }
  }
  const next = { ...current, ...(fresh.url === undefined ? {} : { url: fresh.url }), ...(fresh.secret === undefined ? {} : { secret: fresh.secret }) };
  const module = await loadPublisherModule('webhook');
  try {
    module?.parseSettings({ ...channel.settings, ...next });
    module?.parseCredentials?.(next);
  } catch (e) {
    throw invalid(e instanceof Error ? e.message : String(e));
  }
  if (vault.keyId === null && options.insecurePlaintext !== true) {
    throw invalid('POST_SCHEDULER_SECRET_KEY is not set: credentials are stored encrypted (set it, e.g. openssl rand -base64 32; the CLI also takes --insecure-plaintext)');
  }
  await store.saveCredentials(channel.id, vault.keyId === null ? vault.sealPlain(next) : vault.seal(next));
  options.log?.info(`Channel ${channel.name}: new ${[fresh.url !== undefined && 'URL', fresh.secret !== undefined && 'secret'].filter((w) => w !== false).join(' and ')} stored`, { channel: channel.name });
  return (await store.findChannel(channel.name)) ?? channel;
}
