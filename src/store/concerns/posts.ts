import type { PostPart, PostStatus } from '../../types.ts';

/**
 * Posts as operators and callers see and edit them (src/operations): `posts list`, `posts show`, `posts edit`.
 */
export interface PostsStore {
  /** posts matching `query`, in its order, at most `limit`, after its cursor (keyset) */
  listPosts(query: PostQuery): Promise<PostListItem[]>;
  /** the attempts of a post that ended (oldest first): outcome, error, times */
  postAttempts(postId: number): Promise<PostAttempt[]>;
  /**
   * edit: a pending post's content and/or time, only while it is pending (a claim in
   * between wins). Returns the status it had (null when not found).
   */
  editPost(id: number, changes: PostEdit): Promise<{ edited: boolean; status: PostStatus | null }>;
}

/** What `posts list` asks for. */
export interface PostQuery {
  readonly statuses?: readonly PostStatus[];
  readonly channelId?: number;
  /** run_at >= from */
  readonly from?: Date;
  /** run_at < to */
  readonly to?: Date;
  /** next: the soonest run_at first; newest: the latest run_at first */
  readonly order: 'next' | 'newest';
  readonly limit: number;
  /** the last row of the page before (keyset pagination) */
  readonly after?: { readonly runAt: Date; readonly id: number };
}

/** One row of `posts list`. */
export interface PostListItem {
  readonly id: number;
  readonly status: PostStatus;
  /** null when the channel row is gone */
  readonly channel: string | null;
  readonly runAt: Date;
  readonly attempts: number;
  /** the first part's text, at most LIST_TEXT characters */
  readonly text: string;
  readonly externalUrl: string | null;
  readonly lastError: string | null;
}

/** The longest text `listPosts` returns per post. */
export const LIST_TEXT = 200;

/** One attempt of a post that ended, as `posts show` lists it. */
export interface PostAttempt {
  readonly attempt: number;
  readonly workerId: string | null;
  /** its claim (null when not known) */
  readonly startedAt: Date | null;
  readonly finishedAt: Date;
  /**
   * published, retry, failed, unknown (the outcome kinds), expired (its lease ran out), or
   * waited (a rate limit or the channel's credentials held it back; not counted against
   * MAX_ATTEMPTS, and listed under the number of the attempt that follows it)
   */
  readonly outcome: string;
  /** why it did not publish (src/reasons.ts); null when it published, or when recorded before reasons were */
  readonly reason: string | null;
  readonly error: string | null;
  readonly externalId: string | null;
  readonly externalUrl: string | null;
}

export interface PostEdit {
  /** the first part's text, and the whole content (parts) it belongs to */
  readonly content?: { readonly text: string; readonly parts: readonly PostPart[] };
  readonly runAt?: Date;
}
