// node:fs, its promises API taken at the call: node:fs/promises is not loaded at start-up
import fs from 'node:fs';
import path from 'node:path';
import type { HttpClient } from '../publishers/http-client.ts';
import { HttpSendFailure } from '../publishers/http-failure.ts';
import { PermanentPublishError, RetryablePublishError, type LoadedImage, type MediaLimits } from '../publishers/publisher.ts';
import type { PostImage } from '../types.ts';

/**
 * Reading a post's images just before their part is sent: a file path (absolute, fixed
 * when the post was scheduled), a file of MEDIA_DIR given over the API (`media:rel/path`,
 * checked again once opened: see openImageFile) or an http(s) URL fetched through the HTTP client and its
 * SSRF guard. At most the platform's `maxBytes` are read; the type comes from the first
 * bytes, never from a name or a header. A missing file, a 4xx, a non-image or a too large
 * image fails the post (permanent); a 5xx or a connection failure may pass (retryable,
 * and never "maybe delivered": nothing was published). Messages name the image by its
 * path, or by its URL without credentials, query or fragment.
 */

/** The image types a post may carry, told by their first bytes. */
export const IMAGE_TYPES = ['image/jpeg', 'image/png', 'image/gif', 'image/webp'] as const;

/** The MIME type of an image from its first bytes (JPEG, PNG, GIF, WebP), or null. */
export function sniffImageType(bytes: Buffer): string | null {
  const starts = (...values: number[]) => values.every((v, i) => bytes[i] === v);
  if (starts(0xff, 0xd8, 0xff)) return 'image/jpeg';
  if (starts(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return 'image/png';
  const ascii = (from: number, to: number) => bytes.subarray(from, to).toString('latin1');
  if (ascii(0, 6) === 'GIF87a' || ascii(0, 6) === 'GIF89a') return 'image/gif';
  if (ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'image/webp';
  return null;
}

/** Bytes enough to tell an image's type. */
export const SNIFF_BYTES = 12;

/** How a source given over the API is stored: its path relative to MEDIA_DIR after this. */
export const MEDIA_PREFIX = 'media:';

/** A `media:` source that cannot be read inside MEDIA_DIR here: the message is whole. */
export class MediaDirError extends Error {
  override name = 'MediaDirError';
}

/**
 * Opens an image file for reading: an absolute path as it is, or a `media:` source in
 * this process's MEDIA_DIR, refused unless the file opened (whatever symlinks its path
 * went through when it was opened) is inside MEDIA_DIR. Throws MediaDirError, or open's
 * own error.
 */
export async function openImageFile(source: string, name: string, mediaDir: string | null): Promise<fs.promises.FileHandle> {
  if (!source.startsWith(MEDIA_PREFIX)) return fs.promises.open(source, 'r');
  if (mediaDir === null) throw new MediaDirError(`image ${name}: MEDIA_DIR is not set here`);
  const rel = source.slice(MEDIA_PREFIX.length);
  const outside = new MediaDirError(`image ${name}: not a file inside MEDIA_DIR`);
  if (rel === '' || path.isAbsolute(rel) || rel.split(/[\\/]/).includes('..')) throw outside;
  let root: string;
  try {
    root = await fs.promises.realpath(mediaDir);
  } catch {
    throw new MediaDirError(`image ${name}: MEDIA_DIR cannot be read`);
  }
  const handle = await fs.promises.open(path.join(root, rel), 'r');
  try {
    if (await insideDir(handle, path.join(root, rel), root)) return handle;
  } catch {
    // unreadable: outside
  }
  await handle.close();
  throw outside;
}

/** Whether the file open as `handle` is inside `root` (a realpath): the path the kernel opened, else the same inode as the file's realpath. */
async function insideDir(handle: fs.promises.FileHandle, file: string, root: string): Promise<boolean> {
  const inside = (p: string) => p.startsWith(root + path.sep);
  try {
    return inside(await fs.promises.readlink(`/proc/self/fd/${handle.fd}`));
  } catch {
    // no /proc: the realpath now must be inside and be the very file opened
    const real = await fs.promises.realpath(file);
    const [opened, now] = [await handle.stat(), await fs.promises.stat(real)];
    return inside(real) && opened.dev === now.dev && opened.ino === now.ino;
  }
}

/** Whether an image source is a URL (scheme://...) rather than a file path. */
export function isUrlSource(source: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(source);
}

/** An image as it may be shown: its path, or its URL without credentials, query or fragment. */
export function imageName(source: string): string {
  if (!isUrlSource(source)) return source;
  if (!URL.canParse(source)) return '(an unreadable URL)';
  const u = new URL(source);
  return `${u.protocol}//${u.host}${u.pathname}`;
}

/** The file name a platform is given: the path's base name, or the URL path's last segment. */
export function imageFilename(source: string): string {
  if (!isUrlSource(source)) return path.basename(source);
  const segment = URL.canParse(source) ? new URL(source).pathname.split('/').pop() ?? '' : '';
  let name: string;
  try {
    name = decodeURIComponent(segment);
  } catch {
    name = segment;
  }
  return name === '' ? 'image' : name;
}

/** Why this image's bytes cannot go (one line), or null. */
export function imageBytesProblem(name: string, type: string | null, limits: MediaLimits, platform: string): string | null {
  if (type === null) return `image ${name} is not a JPEG, PNG, GIF or WebP image`;
  if (!limits.types.includes(type)) return `image ${name} is ${type}; ${platform} takes ${limits.types.join(', ')}`;
  return null;
}

export function tooLarge(name: string, size: string, limits: MediaLimits): string {
  return `image ${name} is ${size}; the most is ${limits.maxBytes} bytes`;
}

export interface ImageSource {
  readonly http: HttpClient;
  readonly signal: AbortSignal;
  /** the channel opted in to private addresses (its `allow_private_network`) */
  readonly allowPrivateNetwork: boolean;
  /** where `media:` sources are (MEDIA_DIR), null: not set here */
  readonly mediaDir: string | null;
  readonly platform: string;
}

/** Reads one image for a part about to be sent (see the top of this file for what fails how). */
export async function loadImage(image: PostImage, limits: MediaLimits, from: ImageSource): Promise<LoadedImage> {
  const name = imageName(image.source);
  const bytes = isUrlSource(image.source) ? await fetchImage(image.source, name, limits, from) : await readImageFile(image.source, name, limits, from.mediaDir);
  const mimeType = sniffImageType(bytes);
  const problem = imageBytesProblem(name, mimeType, limits, from.platform);
  if (problem !== null || mimeType === null) throw new PermanentPublishError(problem ?? name);
  return { bytes, mimeType, alt: image.alt, filename: imageFilename(image.source) };
}

async function readImageFile(file: string, name: string, limits: MediaLimits, mediaDir: string | null): Promise<Buffer> {
  if (!file.startsWith(MEDIA_PREFIX) && !path.isAbsolute(file)) throw new PermanentPublishError(`image ${name}: not an absolute path`);
  let handle: fs.promises.FileHandle;
  try {
    handle = await openImageFile(file, name, mediaDir);
  } catch (e) {
    if (e instanceof MediaDirError) throw new PermanentPublishError(e.message);
    throw new PermanentPublishError(`image ${name}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw new PermanentPublishError(`image ${name}: not a file`);
    if (stat.size > limits.maxBytes) throw new PermanentPublishError(tooLarge(name, `${stat.size} bytes`, limits));
    // never more than maxBytes + 1, whatever the file grew to since the stat
    const buffer = Buffer.alloc(Math.min(stat.size, limits.maxBytes) + 1);
    let size = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, size, buffer.length - size, size);
      if (bytesRead === 0) break;
      size += bytesRead;
      if (size > limits.maxBytes) throw new PermanentPublishError(tooLarge(name, `more than ${limits.maxBytes} bytes`, limits));
      if (size === buffer.length) break;
    }
    return buffer.subarray(0, size);
  } finally {
    await handle.close();
  }
}

async function fetchImage(source: string, name: string, limits: MediaLimits, from: ImageSource): Promise<Buffer> {
  if (!URL.canParse(source)) throw new PermanentPublishError(`image ${name}: not a URL`);
  const url = new URL(source);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new PermanentPublishError(`image ${name}: only http(s) URLs are read`);
  let answer;
  try {
    answer = await from.http.request({
      method: 'GET',
      url,
      headers: { accept: IMAGE_TYPES.join(', ') },
      signal: from.signal,
      allowPrivateNetwork: from.allowPrivateNetwork,
      maxBodyBytes: limits.maxBytes,
    });
  } catch (e) {
    if (e instanceof HttpSendFailure) {
      if (e.addressRefused) {
        throw new PermanentPublishError(
          `image ${name}: refused to connect to a loopback, private or link-local address (SSRF protection); ` +
            'allow it with ALLOW_PRIVATE_NETWORK=true or the channel\'s allow_private_network',
        );
      }
      throw new RetryablePublishError(`image ${name}: ${e.timedOut ? 'no answer in time' : e.code ?? 'no answer'}`, null, false, false, e.timedOut ? 'timeout' : 'network');
    }
    throw new RetryablePublishError(`image ${name}: ${e instanceof Error ? e.name : 'no answer'}`, null, false, false, 'network');
  }
  if (answer.status >= 500 || answer.status === 429 || answer.status === 408) throw new RetryablePublishError(`image ${name}: HTTP ${answer.status}`);
  if (answer.status !== 200) throw new PermanentPublishError(`image ${name}: HTTP ${answer.status}`);
  if (answer.truncated) throw new PermanentPublishError(tooLarge(name, `more than ${limits.maxBytes} bytes`, limits));
  return answer.body;
}
