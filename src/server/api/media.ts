import fs from 'node:fs/promises';
import path from 'node:path';
import { isUrlSource, MEDIA_PREFIX } from '../../content/images.ts';
import { ApiError } from './errors.ts';

/**
 * An image `source` given over the API, as it is stored: an http(s) URL as given, or a
 * file inside MEDIA_DIR (relative paths are taken from it) as `media:<its path relative
 * to MEDIA_DIR>`, which the worker opens in its own MEDIA_DIR and checks again once
 * opened (a symlink swapped in since cannot lead out: content/images.ts openImageFile).
 * A path that leaves MEDIA_DIR as written is refused before any file is looked at, and
 * with the same message as a missing file or one a symlink leads out of, so an answer
 * tells nothing of the files outside. Without MEDIA_DIR every path is refused: the API's
 * callers may not read the server's files. (The CLI takes any path: the operator's own.)
 */
export async function confinedSource(source: string, mediaDir: string | null, field: string): Promise<string> {
  if (isUrlSource(source)) {
    if (!/^https?:\/\//i.test(source)) throw new ApiError(400, `body.${field}: only http(s) URLs or paths inside MEDIA_DIR`, field);
    return source;
  }
  if (mediaDir === null) throw new ApiError(400, `body.${field}: file paths are refused over the API while MEDIA_DIR is not set (give an http(s) URL)`, field);
  const refused = new ApiError(400, `body.${field}: not a file inside MEDIA_DIR`, field);
  const base = path.resolve(mediaDir);
  const rel = path.relative(base, path.resolve(base, source));
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) throw refused;
  let root: string;
  try {
    root = await fs.realpath(base);
  } catch {
    throw new ApiError(400, `body.${field}: MEDIA_DIR cannot be read`, field);
  }
  let real: string;
  try {
    real = await fs.realpath(path.join(root, rel));
  } catch {
    throw refused;
  }
  if (!real.startsWith(root + path.sep)) throw refused;
  return MEDIA_PREFIX + path.relative(root, real);
}
