/**
 * What a worker process and its dispatcher tell each other over the IPC channel,
 * besides the worker's report. A module of its own: the dispatcher imports it without
 * loading the worker's entry point (which runs when loaded).
 */

/** What the dispatcher tells its workers: every sibling has made its first claim. */
export const SHARES_LIFTED = 'shares-lifted';

/** What a worker tells its dispatcher once it has made its first claim. */
export interface FirstClaimMessage {
  readonly type: 'first-claim';
  readonly claimed: number;
}
