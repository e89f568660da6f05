import fs from 'node:fs/promises';
import path from 'node:path';
import { isUrlSource } from '../../content/images.ts';
import { ApiError } from './errors.ts';

/**
 * An image `source` given over the API, as it is stored: an http(s) URL as given, or a
 * file inside MEDIA_DIR (relative paths are taken from it), resolved with realpath so
 * that `..` and symlinks cannot leave it. Without MEDIA_DIR every path is refused: the
 * API's callers may not read the server's files. (The CLI takes any path: the operator's own.)
 */
export async function confinedSource(source: string, mediaDir: string | null, field: string): Promise<string> {
  if (isUrlSource(source)) {
    if (!/^https?:\/\//i.test(source)) throw new ApiError(400, `body.${field}: only http(s) URLs or paths inside MEDIA_DIR`, field);
    return source;
  }
  if (mediaDir === null) throw new ApiError(400, `body.${field}: file paths are refused over the API while MEDIA_DIR is not set (give an http(s) URL)`, field);
  let root: string;
  try {
    root = await fs.realpath(mediaDir);
  } catch {
    throw new ApiError(400, `body.${field}: MEDIA_DIR cannot be read`, field);
  }
  let real: string;
  try {
    real = await fs.realpath(path.resolve(root, source));
  } catch {
    throw new ApiError(400, `body.${field}: no such file inside MEDIA_DIR`, field);
  }
  if (!real.startsWith(root + path.sep)) throw new ApiError(400, `body.${field}: the path leaves MEDIA_DIR`, field);
  return real;
}
