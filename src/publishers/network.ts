import { PermanentPublishError, RetryablePublishError } from './publisher.ts';
import type { HttpResponse, HttpSendFailure } from './http-client.ts';

/**
 * What every network adapter (mastodon, slack, x, ...) says the same way: a refused
 * private address, a request that got no answer, an API URL setting, a Retry-After.
 */

/** The post fails for good: the SSRF guard refused the address, and how to allow it. */
export function addressRefused(platform: string, where: string): PermanentPublishError {
  return new PermanentPublishError(
    `${platform} ${where}: refused to connect to a loopback, private or link-local address (SSRF protection); ` +
      'allow it for this channel with `channels add --allow-private-network`, or for all with ALLOW_PRIVATE_NETWORK=true',
  );
}

/**
 * A request without an answer: permanent when the address was refused, else retryable,
 * and maybe delivered when it had been sent. `clean` removes secrets the client's own
 * message might carry (a token in a URL path); `doing` names the call when one post
 * makes several (a token refresh, say).
 */
export function sendFailure(
  platform: string,
  e: HttpSendFailure,
  where: string,
  timeoutMs: number,
  clean: (text: string) => string = (text) => text,
  doing?: string,
): Error {
  if (e.addressRefused) return addressRefused(platform, where);
  const sent = e.sent ? ' after the request was sent' : '';
  const reason = e.timedOut ? `no answer within ${timeoutMs} ms` : clean(e.message);
  return new RetryablePublishError(`${platform} ${where}: ${doing === undefined ? '' : `${doing}: `}${reason}${sent}`, null, e.sent, false, e.timedOut ? 'timeout' : 'network');
}

/**
 * Why an `api_url` setting is not acceptable (one line), or null: an http(s) URL with no
 * user name, password, query or fragment. Whether http is allowed is the channel's
 * `allow_private_network`, checked by each adapter's schema.
 */
export function apiUrlProblem(platform: string, value: string, example: string): string | null {
  if (!URL.canParse(value)) return `${platform} api_url must be a URL like ${example}`;
  const u = new URL(value);
  if (u.protocol !== 'https:' && u.protocol !== 'http:') return `${platform} api_url must be an https:// URL`;
  if (u.username !== '' || u.password !== '') return `${platform} api_url must not carry a user name or password`;
  if (u.search !== '' || u.hash !== '') return `${platform} api_url must not carry a query or a fragment`;
  return null;
}

/** Retry-After as milliseconds: seconds or an HTTP date; null when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | null {
  if (value === undefined || value.trim() === '') return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

/** An answer's Retry-After header, as milliseconds. */
export function retryAfterMs(headers: HttpResponse['headers'], now = Date.now()): number | null {
  const value = headers['retry-after'];
  return parseRetryAfter(typeof value === 'string' ? value : undefined, now);
}
