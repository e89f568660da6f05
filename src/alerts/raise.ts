import type { Config } from '../config.ts';
import { rulesFor } from '../content/rules.ts';
import { errorMessage, type Logger } from '../log.ts';
import type { Store } from '../store/store.ts';
import { alertText, fitText } from './text.ts';

/**
 * Alerts: every post that ends failed or unknown is reported to the channel named by
 * ALERT_CHANNEL (any platform), one message each. Each cycle looks, before it counts the
 * due posts, so the alerts go out with that cycle's workers like any post (retries, rate
 * limits, the unknown-outcome policy). An outcome is reported once, keyed by post id and
 * claim token (Store.scheduleAlerts): a worker that recorded it twice, two dispatchers
 * that look at once, a cycle that dies between looking and scheduling, all report it once.
 * The alert channel's own posts are never reported (no loops).
 */

/** Outcomes older than this are not reported: turning alerts on does not replay history. */
export const ALERT_WITHIN_MS = 24 * 60 * 60 * 1000;
/** The most alerts one cycle schedules; the rest wait for the next cycle. */
export const ALERTS_PER_CYCLE = 100;

export async function raiseAlerts(store: Store, config: Config, log: Logger): Promise<number> {
  if (config.alertChannel === null) return 0;
  const channel = await store.findChannel(config.alertChannel);
  if (channel === null) {
    log.error(`ALERT_CHANNEL "${config.alertChannel}" names no channel (see channels list): failures are not reported`);
    return 0;
  }
  const found = await store.unalertedOutcomes(channel.id, ALERT_WITHIN_MS, ALERTS_PER_CYCLE);
  if (found.length === 0) return 0;
  let fits: (text: string) => boolean = () => true;
  try {
    const rules = await rulesFor(channel, config.moduleDir);
    if (rules !== null) fits = (text) => rules.checkText(text, channel.settings, 0) === null;
  } catch (e) {
    log.warn(`Alert channel ${channel.name}: its text limits cannot be read (${errorMessage(e)}); alerts are sent whole`);
  }
  const alerts = found.map((c) => {
    const text = alertText(c);
    return { postId: c.postId, token: c.token, outcome: c.outcome, text: fitText(text, fits) ?? text };
  });
  const ids = await store.scheduleAlerts(channel.id, alerts);
  if (ids.length > 0) {
    log.warn(`Reporting ${ids.length} failed or unknown posts to ${channel.name}`, {
      alertChannel: channel.name,
      postIds: found.map((c) => c.postId),
      alertPostIds: ids,
    });
  }
  return ids.length;
}
