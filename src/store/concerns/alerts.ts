/**
 * Alerts (src/alerts): outcomes reported to ALERT_CHANNEL, once each.
 */
export interface AlertStore {
  /**
   * Posts that ended failed or unknown within the last `withinMs` (by updated_at) and
   * whose outcome under their latest claim (id, claim token) has no alert yet, oldest
   * first, at most `limit`. Never the alert channel's own posts (`alertChannelId`).
   */
  unalertedOutcomes(alertChannelId: number, withinMs: number, limit: number): Promise<AlertCandidate[]>;
  /**
   * Schedules each alert as a post of `text` on `alertChannelId`, due now, unless that
   * outcome (post id, claim token) already has one: one atomic statement per alert, so
   * dispatchers that look at the same time report it once. Returns the ids of the alert
   * posts scheduled.
   */
  scheduleAlerts(alertChannelId: number, alerts: readonly NewAlert[]): Promise<number[]>;
}

/** A post whose failed or unknown outcome has not been reported yet. */
export interface AlertCandidate {
  readonly postId: number;
  readonly token: number;
  readonly outcome: 'failed' | 'unknown';
  /** null when the post's channel is gone */
  readonly channelName: string | null;
  readonly error: string | null;
}

export interface NewAlert {
  readonly postId: number;
  readonly token: number;
  readonly outcome: 'failed' | 'unknown';
  readonly text: string;
}
