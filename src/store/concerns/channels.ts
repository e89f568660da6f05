import type { Channel, NewChannel, OnUnknown, PostStatus } from '../../types.ts';

/**
 * Channels: their settings, policy, sealed credentials and an operator's pause or removal.
 */
export interface ChannelStore {
  addChannel(channel: NewChannel): Promise<Channel>;
  listChannels(): Promise<Channel[]>;
  findChannel(name: string): Promise<Channel | null>;
  /** changes a channel's policy or enabled flag; null when there is no such channel */
  updateChannel(name: string, changes: ChannelChanges): Promise<Channel | null>;
  /**
   * replaces a channel's sealed credentials (refreshed tokens, rekey, new ones); with
   * `expected`, only while they are still that value (a worker's refresh never undoes a
   * rekey or another worker's refresh). New credentials clear the channel's attention.
   * False when nothing was written.
   */
  saveCredentials(channelId: number, sealed: string | null, expected?: string | null): Promise<boolean>;
  /** marks (reason) or clears (null) that a channel needs an operator */
  setAttention(channelId: number, reason: string | null): Promise<void>;
  /** replaces a channel's settings (rekey moves a webhook's legacy url and secret out of them) */
  replaceSettings(channelId: number, settings: Record<string, unknown>): Promise<boolean>;
  /** an operator's pause (true) or resume (false) of a channel; null when there is no such channel */
  setChannelPaused(name: string, paused: boolean): Promise<Channel | null>;
  /**
   * removes a channel (its row stays, renamed, so its posts can still be shown), only when
   * none of its posts is pending, processing or unknown; with `cancelPosts`, its pending
   * and unknown posts are cancelled in the same transaction (processing ones still refuse).
   */
  removeChannel(name: string, cancelPosts: boolean): Promise<ChannelRemoval | null>;
}

export interface ChannelChanges {
  readonly onUnknown?: OnUnknown;
  readonly enabled?: boolean;
}

/** What removeChannel did: removed, or the posts that kept it (cancelled: how many it cancelled). */
export interface ChannelRemoval {
  readonly removed: boolean;
  readonly cancelled: number;
  /** the channel's posts that kept it, by status (pending, processing, unknown) */
  readonly blocking: Readonly<Partial<Record<PostStatus, number>>>;
}
