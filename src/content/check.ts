// node:fs, its promises API taken at the call: node:fs/promises is not loaded at start-up
import fs from 'node:fs';
import path from 'node:path';
import type { MediaLimits } from '../publishers/publisher.ts';
import type { PostPart } from '../types.ts';
import { imageBytesProblem, imageName, isUrlSource, MEDIA_PREFIX, MediaDirError, openImageFile, sniffImageType, SNIFF_BYTES, tooLarge } from './images.ts';

/**
 * What a channel takes: its platform's text check, the images one part may carry (null:
 * text only) and whether it publishes threads. From the platform's publisher module, or,
 * for a `module` channel, from the user's module (see content/rules.ts).
 */
export interface ContentRules {
  readonly platform: string;
  checkText(text: string, settings: Record<string, unknown>, images: number): string | null;
  readonly media: MediaLimits | null;
  readonly threads: boolean;
}

/** Which part of the content a problem is in: the CLI names the flag from it. */
export type ContentField = 'text' | 'parts' | 'images' | 'alt';

export interface ContentProblem {
  readonly field: ContentField;
  /** one line naming the part, the image and the limit */
  readonly message: string;
}

/**
 * The check of most posts, one part of text alone checked from its start, done without
 * waiting (a worker checks each post before sending it): its problem, or null. A post
 * of no parts gets its problem too; undefined for any other post, which contentProblem
 * checks.
 */
export function textOnlyProblem(rules: ContentRules, parts: readonly PostPart[], settings: Record<string, unknown>, from = 0): ContentProblem | null | undefined {
  if (parts.length === 0) return { field: 'text', message: 'the post has no content' };
  const only = parts.length === 1 && from === 0 ? parts[0] : undefined;
  if (only === undefined || only.images.length > 0) return undefined;
  const text = rules.checkText(only.text, settings, 0);
  return text === null ? null : { field: 'text', message: text };
}

/**
 * Why a post's content breaks its channel's limits, or null: each part's text, a thread
 * on a platform without threads, images on one without media, too many images, alt text
 * too long, a source that is neither an absolute file path nor an http(s) URL, a file
 * that is missing, too large or not an image (stat and first bytes; a URL is read only
 * when the part is sent). Checked when scheduling and again before sending.
 */
export async function contentProblem(
  rules: ContentRules,
  parts: readonly PostPart[],
  settings: Record<string, unknown>,
  /** the first part checked (a worker checks only the parts still to send) */
  from = 0,
  /** the last part checked (default: to the end) */
  to = parts.length - 1,
  /** where `media:` sources are (MEDIA_DIR), null: not set here */
  mediaDir: string | null = null,
): Promise<ContentProblem | null> {
  const count = parts.length;
  const quick = textOnlyProblem(rules, parts, settings, from);
  if (quick !== undefined) return quick;
  if (count > 1 && !rules.threads) {
    return { field: 'parts', message: `a thread of ${count} parts; ${rules.platform} publishes posts of one part only` };
  }
  for (const [index, part] of parts.entries()) {
    if (index < from || index > to) continue;
    const prefix = count > 1 ? `part ${index + 1} of ${count}: ` : '';
    const problem = await partProblem(rules, part, settings, mediaDir);
    if (problem !== null) return { field: problem.field, message: prefix + problem.message };
  }
  return null;
}

async function partProblem(rules: ContentRules, part: PostPart, settings: Record<string, unknown>, mediaDir: string | null): Promise<ContentProblem | null> {
  const text = rules.checkText(part.text, settings, part.images.length);
  if (text !== null) return { field: 'text', message: text };
  if (part.images.length === 0) return null;
  const media = rules.media;
  if (media === null) return { field: 'images', message: `${rules.platform} takes text only, no images` };
  if (part.images.length > media.maxImages) return { field: 'images', message: `${part.images.length} images; ${rules.platform} takes at most ${media.maxImages}` };
  for (const [i, image] of part.images.entries()) {
    const name = imageName(image.source);
    if (image.alt.length > media.maxAltLength) {
      return { field: 'alt', message: `the alt text of image ${i + 1} (${name}) is ${image.alt.length} characters; ${rules.platform} takes at most ${media.maxAltLength}` };
    }
    const problem = await sourceProblem(image.source, name, media, rules.platform, mediaDir);
    if (problem !== null) return { field: 'images', message: problem };
  }
  return null;
}

/** Why an image's source cannot be read as an image (URLs: only their form), or null. */
async function sourceProblem(source: string, name: string, media: MediaLimits, platform: string, mediaDir: string | null): Promise<string | null> {
  if (isUrlSource(source)) {
    if (!URL.canParse(source)) return `image ${name}: not a URL`;
    const protocol = new URL(source).protocol;
    return protocol === 'http:' || protocol === 'https:' ? null : `image ${name}: only a file path or an http(s) URL (not ${protocol})`;
  }
  if (!source.startsWith(MEDIA_PREFIX) && !path.isAbsolute(source)) return `image ${name}: not an absolute path`;
  let handle: fs.promises.FileHandle;
  try {
    handle = await openImageFile(source, name, mediaDir);
  } catch (e) {
    if (e instanceof MediaDirError) return e.message;
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? `image ${name}: no such file` : `image ${name}: cannot read it (${code ?? String(e)})`;
  }
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) return `image ${name}: not a file`;
    if (stat.size > media.maxBytes) return tooLarge(name, `${stat.size} bytes`, media);
    const head = Buffer.alloc(SNIFF_BYTES);
    const { bytesRead } = await handle.read(head, 0, SNIFF_BYTES, 0);
    return imageBytesProblem(name, sniffImageType(head.subarray(0, bytesRead)), media, platform);
  } finally {
    await handle.close();
  }
}
