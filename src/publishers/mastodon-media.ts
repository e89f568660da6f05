import { setTimeout as sleep } from 'node:timers/promises';
import { HttpSendFailure, multipartBody, type HttpClient, type HttpResponse } from './http-client.ts';
import { PermanentPublishError, RetryablePublishError, type LoadedImage } from './publisher.ts';
import { answerExcerpt } from './redact.ts';
import { apiError, credentialsRefusal, retryAfterMs } from './mastodon-api.ts';
import { addressRefused } from './network.ts';

/**
 * A part's images on a Mastodon instance, before its status
 * (https://docs.joinmastodon.org/methods/media/):
 *
 * - `POST /api/v2/media`, multipart: `file` (the bytes, with their type and file name)
 *   and `description` (the alt text, when there is one). 200: processed, its `id` is
 *   ready; 202: accepted, still processing (`url` null).
 * - A 202 is polled with `GET /api/v1/media/:id`: 206 while it is processing, 200 with a
 *   `url` once done. The wait is bounded by the publisher's timeout (from the 202) and by
 *   the request's signal; polls start at POLL_FIRST_MS apart and grow to POLL_MAX_MS.
 * - An upload is not idempotent (Mastodon keys only statuses): every attempt uploads
 *   again, and the media of an attempt that failed stay unattached (the instance removes
 *   them later); harmless. So no failure here is "maybe delivered": no status was sent.
 * - 422 (a type or size the instance refuses, a processing that failed) and 413 (a proxy
 *   before the instance refusing the size) are permanent, naming the image; 429 waits for
 *   the rate limit; 5xx and no answer are retried; 401 and a 403 about the token or its
 *   scopes (`write:media` missing) refuse the credentials.
 */

/** the first pause between two polls of a media still processing */
export const POLL_FIRST_MS = 100;
/** the longest pause between two polls */
export const POLL_MAX_MS = 2_000;

export interface MediaTarget {
  readonly client: HttpClient;
  readonly instance: URL;
  readonly token: string;
  /** how errors name the channel: `channel NAME (host)` */
  readonly where: string;
  readonly allowPrivateNetwork: boolean;
  readonly signal: AbortSignal;
  /** the publisher's one-request timeout: also the longest wait for a media's processing */
  readonly timeoutMs: number;
}

/** `image 2 of 3 (photo.png)` */
function describeImage(image: LoadedImage, index: number, count: number): string {
  return `image ${index + 1} of ${count} (${image.filename})`;
}

async function call(t: MediaTarget, what: string, method: 'GET' | 'POST', path: string, body?: { body: Buffer; contentType: string }): Promise<HttpResponse> {
  const headers: Record<string, string> = { authorization: `Bearer ${t.token}`, accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = body.contentType;
  try {
    return await t.client.request({
      method,
      url: new URL(path, t.instance),
      headers,
      ...(body === undefined ? {} : { body: body.body }),
      signal: t.signal,
      allowPrivateNetwork: t.allowPrivateNetwork,
    });
  } catch (e) {
    if (!(e instanceof HttpSendFailure)) throw e;
    if (e.addressRefused) throw addressRefused('mastodon', t.where);
    const reason = e.timedOut ? `no answer within ${t.timeoutMs} ms` : e.message;
    // no status was sent: whatever happened to the upload, nothing is published
    throw new RetryablePublishError(`mastodon ${t.where}: ${what}: ${reason}`, null, false);
  }
}

/** A failed answer of the media endpoints as the error a worker understands. */
function failure(t: MediaTarget, what: string, answer: HttpResponse): Error {
  const refused = credentialsRefusal(answer, t.token, `${t.where} (${what})`);
  if (refused !== null) return refused;
  const { status } = answer;
  const excerpt = apiError(answer, t.token);
  const said = `HTTP ${status}${excerpt === '' ? '' : `: ${excerpt}`}`;
  if (status === 429) return new RetryablePublishError(`mastodon ${t.where}: ${what}: rate limited (HTTP 429)`, retryAfterMs(answer.headers), false, true);
  if (status >= 500 || status === 408) {
    return new RetryablePublishError(`mastodon ${t.where}: ${what}: ${said}`, retryAfterMs({ 'retry-after': answer.headers['retry-after'] }), false);
  }
  if (status >= 300 && status < 400) {
    return new PermanentPublishError(`mastodon ${t.where}: ${what}: HTTP ${status} redirect (redirects are not followed; check the instance URL)`);
  }
  return new PermanentPublishError(`mastodon ${t.where}: ${what}: ${said}`);
}

function mediaOf(answer: HttpResponse): { id: string; url: string | null } | null {
  const json = answer.json();
  if (typeof json !== 'object' || json === null) return null;
  const o = json as Record<string, unknown>;
  const id = o['id'];
  if ((typeof id !== 'string' && typeof id !== 'number') || String(id) === '') return null;
  return { id: String(id), url: typeof o['url'] === 'string' && o['url'] !== '' ? o['url'] : null };
}

/** Waits until the media is processed (200 with a url), within the timeout from now. */
async function processed(t: MediaTarget, what: string, id: string): Promise<void> {
  const deadline = Date.now() + t.timeoutMs;
  let pause = POLL_FIRST_MS;
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new RetryablePublishError(`mastodon ${t.where}: ${what}: still processing after ${t.timeoutMs} ms (no status was sent)`, null, false);
    }
    try {
      await sleep(Math.min(pause, left), undefined, { signal: t.signal });
    } catch {
      throw new RetryablePublishError(`mastodon ${t.where}: ${what}: interrupted while the instance processed it (${String(t.signal.reason)})`, null, false);
    }
    pause = Math.min(pause * 2, POLL_MAX_MS);
    const answer = await call(t, what, 'GET', `/api/v1/media/${encodeURIComponent(id)}`);
    if (answer.status === 206) continue;
    if (answer.status === 200) {
      if (mediaOf(answer)?.url != null) return;
      continue;
    }
    throw failure(t, what, answer);
  }
}

/**
 * Uploads a part's images in order and waits for each to be processed: their media ids,
 * in the images' order, for the status's `media_ids`.
 */
export async function uploadImages(t: MediaTarget, images: readonly LoadedImage[]): Promise<string[]> {
  const ids: string[] = [];
  for (const [index, image] of images.entries()) {
    const what = describeImage(image, index, images.length);
    const fields: Record<string, string> = image.alt === '' ? {} : { description: image.alt };
    const body = multipartBody(fields, [{ name: 'file', filename: image.filename, contentType: image.mimeType, data: image.bytes }]);
    const answer = await call(t, what, 'POST', '/api/v2/media', body);
    if (answer.status !== 200 && answer.status !== 202) throw failure(t, what, answer);
    const media = mediaOf(answer);
    if (media === null) {
      throw new RetryablePublishError(`mastodon ${t.where}: ${what}: HTTP ${answer.status} without a media id (${answerExcerpt(answer.text()) || 'empty answer'})`, null, false);
    }
    if (answer.status === 202 || media.url === null) await processed(t, what, media.id);
    ids.push(media.id);
  }
  return ids;
}
