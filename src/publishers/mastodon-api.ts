import type { HttpResponse } from './http-client.ts';
import { CredentialsRejectedError } from './publisher.ts';
import { answerExcerpt } from './redact.ts';

/**
 * What every Mastodon call (statuses, media, verify_credentials) reads the same way from
 * an answer: its `error`, a refusal of the token, and when to come back after a 429.
 */

/** Retry-After as milliseconds: X-RateLimit-Reset (an ISO time) or Retry-After; null when absent or unreadable. */
export function retryAfterMs(headers: HttpResponse['headers'], now = Date.now()): number | null {
  const reset = headers['x-ratelimit-reset'];
  if (typeof reset === 'string' && reset.trim() !== '') {
    const value = reset.trim();
    // Mastodon sends an ISO time; some servers send Unix seconds
    const at = /^\d+$/.test(value) ? Number(value) * 1000 : Date.parse(value);
    if (!Number.isNaN(at)) return Math.max(0, at - now);
  }
  const retryAfter = headers['retry-after'];
  if (typeof retryAfter === 'string' && retryAfter.trim() !== '') {
    const value = retryAfter.trim();
    if (/^\d+$/.test(value)) return Number(value) * 1000;
    const at = Date.parse(value);
    if (!Number.isNaN(at)) return Math.max(0, at - now);
  }
  return null;
}

/**
 * Mastodon's own error sentences about tokens, shown as they are (the redaction of an
 * excerpt would hide the word after "token", which is all these say).
 */
const KNOWN_ERRORS = new Set(
  [
    'The access token is invalid',
    'The access token was revoked',
    'The access token expired',
    'This action is outside the authorized scopes',
    'This method requires an authenticated user',
    'This API requires an authenticated user',
    'This action requires authentication',
    'Your login is currently disabled',
    'Your login is missing a confirmed e-mail address',
    'Your login is currently pending approval',
    'Your account is currently disabled',
    'Not authorized',
  ].map((m) => m.toLowerCase()),
);

/** The API's `error` (or the body) as a short one-line excerpt, without the token. */
export function apiError(answer: HttpResponse, token: string): string {
  const json = answer.json();
  const field = typeof json === 'object' && json !== null ? (json as Record<string, unknown>)['error'] : undefined;
  const error = typeof field === 'string' ? field : answer.text();
  if (KNOWN_ERRORS.has(error.trim().toLowerCase())) return error.trim();
  // the token itself first (whatever its shape), then whatever looks like a credential
  return answerExcerpt(token === '' ? error : error.split(token).join('***'));
}

/** A 403 whose error is about the token, its scopes or the account's login, not about the post. */
const CREDENTIALS_403 = /token|scope|authori[sz]|authenticat|login|sign[ -]?in|account|e-?mail|suspend|disabled|approv/i;

/** Mastodon's answer to a token that lacks the scope a call needs. */
export const SCOPE_ERROR = /outside the authorized scopes/i;

/**
 * The refusal of the token an answer says, or null: 401, a 403 about the token, its
 * scopes or the account's login, or a 422 "requires an authenticated user" (an app
 * token without a user).
 */
export function credentialsRefusal(answer: HttpResponse, token: string, where: string): CredentialsRejectedError | null {
  const { status } = answer;
  if (status === 401) return new CredentialsRejectedError(`mastodon ${where} refused the access token (HTTP 401: ${apiError(answer, token)})`);
  if (status === 403 && CREDENTIALS_403.test(apiError(answer, token))) {
    return new CredentialsRejectedError(`mastodon ${where} refused the access token (HTTP 403: ${apiError(answer, token)})`);
  }
  if (status === 422 && /authenticated user/i.test(apiError(answer, token))) {
    return new CredentialsRejectedError(`mastodon ${where}: the access token has no user (HTTP 422: ${apiError(answer, token)})`);
  }
  return null;
}
