import { contentProblem, type ContentProblem } from '../content/check.ts';
import { rulesFor } from '../content/rules.ts';
import type { Logger } from '../log.ts';
import type { PostAttempt, PostListItem, PostQuery, Store } from '../store/store.ts';
import { POST_STATUSES, type Channel, type Post, type PostPart, type PostStatus } from '../types.ts';
import { conflict, invalid, notFound, OperationError } from './errors.ts';

/**
 * The operations on posts: what the CLI does and what an HTTP API will do, on validated
 * input, returning plain data. Refusals are OperationErrors (not-found, conflict, invalid).
 */

/** A post's content broke its channel's limits: `problem` names the part and field. */
export class ContentError extends OperationError {
  override name = 'ContentError';
  constructor(
    readonly channel: string,
    readonly problem: ContentProblem,
  ) {
    super('invalid', `the content does not fit channel ${channel}: ${problem.message}`);
  }
}

export interface OperationOptions {
  /** where module channels' user modules may be loaded from (MODULE_DIR) */
  readonly moduleDir?: string | null;
  /** where `media:` image sources are (MEDIA_DIR) */
  readonly mediaDir?: string | null;
  readonly log?: Logger;
}

/** A channel to schedule on: refused when unknown or removed. */
export async function channelNamed(store: Store, name: string): Promise<Channel> {
  const channel = await store.findChannel(name);
  if (channel === null) throw notFound(`no channel named "${name}"`);
  return channel;
}

async function checkContent(channel: Channel, parts: readonly PostPart[], options: OperationOptions): Promise<void> {
  let rules;
  try {
    rules = await rulesFor(channel, options.moduleDir ?? null);
  } catch (e) {
    throw invalid(`channel ${channel.name}: ${e instanceof Error ? e.message : String(e)}`);
  }
  const problem = rules === null ? null : await contentProblem(rules, parts, channel.settings, 0, parts.length - 1, options.mediaDir ?? null);
  if (problem !== null) throw new ContentError(channel.name, problem);
}

export interface ScheduleInput {
  readonly channel: string;
  /** at least one part; a thread when more */
  readonly parts: readonly PostPart[];
  readonly runAt: Date;
  /**
   * the caller's key: the same key returns the post it made first (created: false)
   * instead of a second one; with other content, channel or time it is refused (conflict)
   */
  readonly key?: string;
  /**
   * the time was given as such (an ISO time), not worked out from now (+5m, now): a
   * repeat with the same key must then name the same time. A relative time is worked
   * out anew at each call, so a retry is judged by its channel and content alone.
   */
  readonly exactTime?: boolean;
}

export interface Scheduled {
  readonly id: number;
  /** false: the key named a post scheduled before, which is returned unchanged */
  readonly created: boolean;
  readonly channel: Channel;
  readonly runAt: Date;
  /** something the caller should know (the channel is paused: the post waits) */
  readonly warnings: readonly string[];
}

/** The longest caller's key. */
export const MAX_KEY = 200;

export async function schedulePost(store: Store, input: ScheduleInput, options: OperationOptions = {}): Promise<Scheduled> {
  const first = input.parts[0];
  if (first === undefined) throw invalid('a post needs at least one part');
  if (input.key !== undefined && (input.key.length === 0 || input.key.length > MAX_KEY)) throw invalid(`a schedule key has 1 to ${MAX_KEY} characters`);
  const channel = await channelNamed(store, input.channel);
  await checkContent(channel, input.parts, options);
  const post = { channelId: channel.id, text: first.text, runAt: input.runAt, parts: input.parts };
  const warnings = channel.pausedAt != null ? [`channel ${channel.name} is paused: the post waits until \`channels resume ${channel.name}\``] : [];
  if (input.key === undefined) {
    const [id] = await store.schedulePosts([post]);
    if (id === undefined) throw new Error('scheduling returned no id');
    options.log?.info(`Scheduled post ${id} on ${channel.name}`, { post: id, channel: channel.name });
    return { id, created: true, channel, runAt: input.runAt, warnings };
  }
  const { id, created } = await store.scheduleWithKey(post, input.key);
  if (created) {
    options.log?.info(`Scheduled post ${id} on ${channel.name} (key ${input.key})`, { post: id, channel: channel.name });
    return { id, created, channel, runAt: input.runAt, warnings };
  }
  const existing = await store.getPost(id);
  if (existing === null) throw new Error(`post ${id} of key ${input.key} vanished`);
  const differs = keyConflict(existing, channel, input);
  if (differs !== null) throw conflict(`schedule key "${input.key}" was used for post ${id} with another ${differs}: use a new key for a new post`);
  return { id, created: false, channel, runAt: existing.scheduledAt, warnings };
}

/** What differs between a post made under a key and a repeat of the call: null when nothing. */
function keyConflict(existing: Post, channel: Channel, input: ScheduleInput): string | null {
  if (existing.channelId !== channel.id) return 'channel';
  if (JSON.stringify(normalParts(existing.parts)) !== JSON.stringify(normalParts(input.parts))) return 'content';
  if (input.exactTime === true && existing.scheduledAt.getTime() !== input.runAt.getTime()) return 'time';
  return null;
}

const normalParts = (parts: readonly PostPart[]) => parts.map((p) => ({ text: p.text, images: p.images.map((i) => ({ source: i.source, alt: i.alt })) }));

export interface ListInput {
  readonly statuses?: readonly PostStatus[];
  /** a channel's name (removed channels included: their history stays listed) */
  readonly channel?: string;
  readonly from?: Date;
  readonly to?: Date;
  readonly order?: 'next' | 'newest';
  /** 1 to MAX_LIST (default DEFAULT_LIST) */
  readonly limit?: number;
  /** the `next` of the page before */
  readonly cursor?: string;
}

export const DEFAULT_LIST = 50;
export const MAX_LIST = 1000;

export interface PostPage {
  readonly posts: readonly PostListItem[];
  /** the cursor of the next page; null when this one is the last */
  readonly next: string | null;
}

export async function listPosts(store: Store, input: ListInput = {}): Promise<PostPage> {
  const limit = input.limit ?? DEFAULT_LIST;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST) throw invalid(`the limit is a whole number from 1 to ${MAX_LIST}`);
  const bad = input.statuses?.find((s) => !POST_STATUSES.includes(s));
  if (bad !== undefined) throw invalid(`unknown status "${bad}": use ${POST_STATUSES.join(', ')}`);
  const order = input.order ?? 'next';
  let channelId: number | undefined;
  if (input.channel !== undefined) channelId = (await channelNamed(store, input.channel)).id;
  const query: PostQuery = {
    order,
    // one more than asked: whether there is a next page
    limit: limit + 1,
    ...(input.statuses === undefined ? {} : { statuses: input.statuses }),
    ...(channelId === undefined ? {} : { channelId }),
    ...(input.from === undefined ? {} : { from: input.from }),
    ...(input.to === undefined ? {} : { to: input.to }),
    ...(input.cursor === undefined ? {} : { after: parseCursor(input.cursor, order) }),
  };
  const rows = await store.listPosts(query);
  const posts = rows.slice(0, limit);
  const last = posts[posts.length - 1];
  return { posts, next: rows.length > limit && last !== undefined ? makeCursor(last, order) : null };
}

/** A cursor: the order and the last row's (run_at, id), so a page never repeats or skips a row. */
function makeCursor(last: PostListItem, order: 'next' | 'newest'): string {
  return `${order === 'next' ? 'a' : 'd'}${last.runAt.getTime()}.${last.id}`;
}

function parseCursor(cursor: string, order: 'next' | 'newest'): { runAt: Date; id: number } {
  const m = /^([ad])(-?\d+)\.(\d+)$/.exec(cursor);
  if (m === null) throw invalid(`invalid cursor "${cursor}": pass the one the page before printed`);
  if (m[1] !== (order === 'next' ? 'a' : 'd')) throw invalid(`cursor "${cursor}" belongs to the other order (--order ${order === 'next' ? 'newest' : 'next'})`);
  return { runAt: new Date(Number(m[2])), id: Number(m[3]) };
}

export interface PostDetails {
  readonly post: Post;
  /** its channel's name (a removed channel's carries "(removed #id)"); null when gone */
  readonly channel: string | null;
  readonly attempts: readonly PostAttempt[];
}

export async function showPost(store: Store, id: number): Promise<PostDetails> {
  const post = await store.getPost(id);
  if (post === null) throw notFound(`no post with id ${id}`);
  return { post, channel: post.channelName ?? null, attempts: await store.postAttempts(id) };
}

export interface EditInput {
  /** the new text of the first part (a thread's other parts and images stay) */
  readonly text?: string;
  readonly runAt?: Date;
}

/** edit: a pending post's text or time; refused (conflict) for any other status. */
export async function editPost(store: Store, id: number, input: EditInput, options: OperationOptions = {}): Promise<Post> {
  if (input.text === undefined && input.runAt === undefined) throw invalid('nothing to change: give a new text or time');
  const post = await store.getPost(id);
  if (post === null) throw notFound(`no post with id ${id}`);
  if (post.status !== 'pending') throw conflict(`post ${id} is ${post.status}; only pending posts can be edited`);
  let content: { text: string; parts: PostPart[] } | undefined;
  if (input.text !== undefined) {
    const [first, ...rest] = post.parts;
    const parts = [{ text: input.text, images: first?.images ?? [] }, ...rest];
    const channel = (await store.listChannels()).find((c) => c.id === post.channelId);
    if (channel !== undefined) await checkContent(channel, parts, options);
    content = { text: input.text, parts };
  }
  const result = await store.editPost(id, { ...(content === undefined ? {} : { content }), ...(input.runAt === undefined ? {} : { runAt: input.runAt }) });
  if (result.status === null) throw notFound(`no post with id ${id}`);
  if (!result.edited) throw conflict(`post ${id} is ${result.status}; only pending posts can be edited`);
  options.log?.info(`Edited post ${id}`, { post: id });
  const after = await store.getPost(id);
  if (after === null) throw notFound(`no post with id ${id}`);
  return after;
}

export interface Refusal {
  readonly id: number;
  /** its status (null: no such post) */
  readonly status: PostStatus | null;
}

/** cancel: pending or unknown posts, each on its own; the others are named with their status. */
export async function cancelPosts(store: Store, ids: readonly number[], options: OperationOptions = {}): Promise<{ cancelled: number[]; refused: Refusal[] }> {
  const cancelled: number[] = [];
  const refused: Refusal[] = [];
  for (const id of ids) {
    const result = await store.cancel(id);
    if (result.cancelled) cancelled.push(id);
    else refused.push({ id, status: result.status });
  }
  if (cancelled.length > 0) options.log?.info(`Cancelled ${cancelled.map((n) => `post ${n}`).join(', ')}`, { posts: cancelled });
  return { cancelled, refused };
}

/** retry: failed or unknown posts by id (or every failed one) back to pending, due now. */
export async function retryPosts(store: Store, ids: readonly number[] | 'allFailed', options: OperationOptions = {}): Promise<{ requeued: number[]; refused: Refusal[] }> {
  const requeued = await store.requeue(ids);
  const done = new Set(requeued);
  const refused: Refusal[] = [];
  if (ids !== 'allFailed') {
    for (const id of ids.filter((n) => !done.has(n))) refused.push({ id, status: (await store.getPost(id))?.status ?? null });
  }
  if (requeued.length > 0) options.log?.info(`Requeued ${requeued.length} posts`, { posts: requeued });
  return { requeued, refused };
}

/** mark-published: unknown posts an operator saw on the platform, to published; the others are named with their status. */
export async function markPublished(store: Store, ids: readonly number[], options: OperationOptions = {}): Promise<{ published: number[]; refused: Refusal[] }> {
  const done = new Set(await store.confirmPublished(ids));
  const refused: Refusal[] = [];
  for (const id of ids.filter((n) => !done.has(n))) refused.push({ id, status: (await store.getPost(id))?.status ?? null });
  const published = ids.filter((n) => done.has(n));
  if (published.length > 0) options.log?.info(`Marked published ${published.map((n) => `post ${n}`).join(', ')}`, { posts: published });
  return { published, refused };
}
