import fs from 'node:fs';
import path from 'node:path';
import * as v from 'valibot';
import { isUrlSource } from '../content/images.ts';
import type { ContentField } from '../content/check.ts';
import type { PostImage, PostPart } from '../types.ts';
import { CliError } from './context.ts';

/**
 * The content of `schedule` beyond its text: images (`--image PATH|URL`, `--alt TEXT`,
 * repeatable, the i-th --alt with the i-th --image) on the first part, replies (`--reply
 * TEXT`, repeatable: a thread of text parts after the first), or a whole thread from a
 * JSON file (`--thread-file PATH`). Relative image paths become absolute here (those of
 * a thread file: relative to the file's folder), so a worker anywhere reads the same file.
 */
export interface ContentFlags {
  readonly image: readonly string[];
  readonly alt: readonly string[];
  readonly reply: readonly string[];
  readonly threadFile?: string;
}

/** commander's collector of a repeatable option */
export const collect = (value: string, previous: string[]): string[] => [...previous, value];

/** An image source as stored: a URL as given, a path made absolute from `base`. */
function source(value: string, base: string): string {
  return isUrlSource(value) ? value : path.resolve(base, value);
}

/** The parts of a post whose first text is `text` (from --text or --text-file), with its images and replies. */
export function partsFromFlags(text: string, flags: ContentFlags, maxText: number): PostPart[] {
  if (flags.alt.length > flags.image.length) throw new CliError(`--alt: ${flags.alt.length} given for ${flags.image.length} --image; each --alt goes with the --image of the same rank`);
  const images: PostImage[] = flags.image.map((value, i) => {
    if (value.trim() === '') throw new CliError('--image: an empty path or URL');
    return { source: source(value, process.cwd()), alt: flags.alt[i] ?? '' };
  });
  const replies = flags.reply.map((reply, i): PostPart => {
    if (reply.trim() === '') throw new CliError(`--reply ${i + 1}: the text is empty`);
    if (reply.length > maxText) throw new CliError(`--reply ${i + 1}: the text is ${reply.length} characters; the most is ${maxText}`);
    return { text: reply, images: [] };
  });
  return [{ text, images }, ...replies];
}

/** The largest thread file read. */
const MAX_THREAD_FILE_BYTES = 10 * 1024 * 1024;

const threadSchema = (maxText: number) =>
  v.pipe(
    v.array(
      v.pipe(
        v.strictObject(
          {
            text: v.pipe(v.string('text must be a string'), v.maxLength(maxText, `text is longer than ${maxText} characters`)),
            images: v.optional(
              v.array(
                v.strictObject(
                  {
                    source: v.pipe(v.string('source must be a string'), v.minLength(1, 'source is empty')),
                    alt: v.optional(v.string('alt must be a string'), ''),
                  },
                  'each image is {"source": PATH or URL, "alt": TEXT}',
                ),
                'images must be a list',
              ),
              [],
            ),
          },
          'each part is {"text": TEXT, "images": [...]}',
        ),
        // a part of images alone may have no text, where its network takes that (checked with the channel)
        v.check((part) => part.text.trim() !== '' || part.images.length > 0, 'text is empty (only a part with images may have none)'),
      ),
      'a thread file holds a JSON list of parts: [{"text": "...", "images": [{"source": "...", "alt": "..."}]}, ...]',
    ),
    v.minLength(1, 'the thread has no parts'),
  );

/** A thread file's parts: one line naming the part and the field when it is not one. */
export function partsFromThreadFile(file: string, maxText: number): PostPart[] {
  const flag = `--thread-file ${file}`;
  let raw: string;
  try {
    const size = fs.statSync(file).size;
    if (size > MAX_THREAD_FILE_BYTES) throw new CliError(`${flag}: ${size} bytes; the most is ${MAX_THREAD_FILE_BYTES}`);
    raw = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if (e instanceof CliError) throw e;
    throw new CliError(`${flag}: cannot read it (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    throw new CliError(`${flag}: not JSON`);
  }
  const parsed = v.safeParse(threadSchema(maxText), json);
  if (!parsed.success) {
    const issue = parsed.issues[0];
    // [n] of the list is "part n+1", [n] of its images "image n+1"
    const keys = (issue.path ?? []).map((item) => item.key);
    const where = keys
      .flatMap((key, i) => {
        if (typeof key === 'number') return [i === 0 ? `part ${key + 1}` : `image ${key + 1}`];
        return key === 'images' && typeof keys[i + 1] === 'number' ? [] : [String(key)];
      })
      .join(' ');
    throw new CliError(`${flag}: ${where === '' ? '' : `${where}: `}${issue.message}`);
  }
  const base = path.dirname(path.resolve(file));
  return parsed.output.map((part) => ({ text: part.text, images: part.images.map((i) => ({ source: source(i.source, base), alt: i.alt })) }));
}

/** The flag a content problem is about, for the command's one-line error. */
export function flagOf(field: ContentField, flags: ContentFlags, message: string): string {
  if (flags.threadFile !== undefined) return `--thread-file ${flags.threadFile}`;
  switch (field) {
    case 'images':
      return '--image';
    case 'alt':
      return '--alt';
    case 'parts':
      return '--reply';
    case 'text':
      return /^part [2-9]|^part \d\d/.test(message) ? '--reply' : '--text';
  }
}
