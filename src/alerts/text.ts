import { redactUrl } from '../config.ts';
import { answerExcerpt } from '../publishers/redact.ts';
import type { AlertCandidate } from '../store/store.ts';

const URL = /[a-z][a-z0-9+.-]*:\/\/[^\s"']+/gi;

/** The most of a post's error an alert quotes (after redaction), before the channel's own limit. */
const ERROR_CHARS = 500;

/**
 * The alert's text: the post, its channel, the outcome and the error, on one line, with
 * anything that looks like a credential replaced by *** (answerExcerpt, as publishers
 * redact their errors).
 */
export function alertText(alert: AlertCandidate): string {
  const where = alert.channelName === null ? 'a channel that no longer exists' : alert.channelName;
  const what = alert.outcome === 'failed' ? 'failed' : 'outcome unknown (held for an operator: check the channel, then retry or mark-published)';
  const error = alert.error === null ? '' : `: ${answerExcerpt(alert.error.replace(URL, (url) => redactUrl(url)), ERROR_CHARS)}`;
  return `post-scheduler: post ${alert.postId} on ${where} ${what}${error}`;
}

/**
 * The longest prefix of `text` (ending in … when cut) that the alert channel's text check
 * takes, or null when not even the shortest does. `fits`: the platform's checkText.
 */
export function fitText(text: string, fits: (text: string) => boolean): string | null {
  if (fits(text)) return text;
  // the shortest cut that still names the post: its first 40 characters
  let lo = Math.min(40, text.length - 1);
  let hi = text.length - 1;
  const cut = (n: number) => `${text.slice(0, n).trimEnd()}…`;
  if (lo < 1 || !fits(cut(lo))) return null;
  // the longest n that fits (checks are monotone in length for every platform's limit)
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(cut(mid))) lo = mid;
    else hi = mid - 1;
  }
  return cut(lo);
}
