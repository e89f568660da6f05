import type { ChannelRemoval, Store } from '../store/store.ts';
import type { Channel } from '../types.ts';
import { conflict, notFound } from './errors.ts';
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
    const fix = (result.blocking.processing ?? 0) > 0 ? 'wait until the processing ones finish, then remove it' : 'cancel them first, or add --cancel-posts';
    throw conflict(`channel ${name} has posts (${counts}): ${fix}`);
  }
  options.log?.info(`Removed channel ${name}${result.cancelled > 0 ? ` and cancelled ${result.cancelled} posts` : ''}`, { channel: name });
  return result;
}
