import { createHash } from 'node:crypto';

/**
 * What a Bluesky post's text needs before it is sent, none of it over the network:
 * the length rules, the record key derived from the post's idempotency key, and
 * where links, mentions and hashtags sit in the text as UTF-8 byte offsets.
 */

/** app.bsky.feed.post `text`: maxGraphemes 300, maxLength 3000 (UTF-8 bytes). */
export const MAX_GRAPHEMES = 300;
export const MAX_BYTES = 3000;
/** app.bsky.richtext.facet#tag `tag`: maxGraphemes 64, maxLength 640. */
const MAX_TAG_GRAPHEMES = 64;
const MAX_TAG_BYTES = 640;

const graphemes = new Intl.Segmenter(undefined, { granularity: 'grapheme' });

/** User-perceived characters: an emoji with a skin tone or a family ZWJ sequence counts as one. */
export function graphemeCount(text: string): number {
  return Array.from(graphemes.segment(text)).length;
}

/** Why a text cannot be a Bluesky post, or null when it can. */
export function checkPostText(text: string): string | null {
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > MAX_BYTES) return `text is ${bytes} bytes (UTF-8); Bluesky takes at most ${MAX_BYTES}`;
  const count = graphemeCount(text);
  if (count > MAX_GRAPHEMES) return `text is ${count} characters (graphemes); Bluesky takes at most ${MAX_GRAPHEMES}`;
  return null;
}

/** base32-sortable, the TID alphabet (https://atproto.com/specs/tid) */
const S32 = '234567abcdefghijklmnopqrstuvwxyz';
/** A TID: top bit 0 (first character 2-7 or a-j), 13 characters. */
export const TID_SYNTAX = /^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$/;

/** 2000-01-01T00:00:00Z in microseconds: the start of the window derived keys fall in. */
const KEY_WINDOW_START_US = 946_684_800_000_000n;
/** 2^48 microseconds (about 8.9 years): the window ends in December 2008. */
const KEY_WINDOW_BITS = 48n;

/**
 * The record key of a post, chosen before it is sent and the same on every attempt: a
 * valid TID (the key type app.bsky.feed.post declares) derived from the idempotency key
 * by SHA-256. Its 53-bit timestamp lies in 2000-2008 (48 bits of the hash) and its
 * 10-bit clock identifier is 10 more bits of it: 58 bits tell posts apart. TIDs that
 * PDSes and clients generate from their clocks are later than 2022, so a record found
 * at this key was written from this idempotency key, never by anything else; and a
 * second createRecord with it cannot make a second post.
 */
export function recordKeyFor(idempotencyKey: string): string {
  const digest = createHash('sha256').update('post-scheduler/bluesky/rkey\0').update(idempotencyKey, 'utf8').digest();
  const bits = digest.readBigUInt64BE(0);
  const offset = (bits >> 10n) & ((1n << KEY_WINDOW_BITS) - 1n);
  const clockId = bits & 0x3ffn;
  return encodeTid(KEY_WINDOW_START_US + offset, clockId);
}

/** A TID from microseconds since the epoch (53 bits) and a clock identifier (10 bits). */
export function encodeTid(micros: bigint, clockId: bigint): string {
  let value = ((micros & ((1n << 53n) - 1n)) << 10n) | (clockId & 0x3ffn);
  let out = '';
  for (let i = 0; i < 13; i++) {
    out = S32.charAt(Number(value & 31n)) + out;
    value >>= 5n;
  }
  return out;
}

/** The microseconds and clock identifier a TID encodes. */
export function decodeTid(tid: string): { micros: bigint; clockId: bigint } {
  if (!TID_SYNTAX.test(tid)) throw new Error(`not a TID: ${tid}`);
  let value = 0n;
  for (const c of tid) value = (value << 5n) | BigInt(S32.indexOf(c));
  return { micros: value >> 10n, clockId: value & 0x3ffn };
}

/** A span of the text found to be a link, mention or hashtag (UTF-16 indices). */
export interface TextSpan {
  readonly kind: 'link' | 'mention' | 'tag';
  /** UTF-16 index of the first character, inclusive */
  readonly start: number;
  /** UTF-16 index after the last character */
  readonly end: number;
  /** link: the URL; mention: the handle (no @); tag: the tag (no #) */
  readonly value: string;
}

/** app.bsky.richtext.facet, its index in UTF-8 bytes of the text */
export interface Facet {
  readonly index: { readonly byteStart: number; readonly byteEnd: number };
  readonly features: readonly (
    | { readonly $type: 'app.bsky.richtext.facet#link'; readonly uri: string }
    | { readonly $type: 'app.bsky.richtext.facet#mention'; readonly did: string }
    | { readonly $type: 'app.bsky.richtext.facet#tag'; readonly tag: string }
  )[];
}

/** http(s) URLs, at the start, after white space or an opening parenthesis */
const LINK = /(?<=^|[\s(])https?:\/\/[^\s<>"]+/giu;
/** @handle, at the start, after white space or an opening parenthesis */
const MENTION = /(?<=^|[\s(])@([a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?)/gu;
/**
 * #tag after the start or white space (full-width ＃, U+FF03, too). Non-ASCII characters
 * are escaped in these expressions: one would make the bundles' whole source a two-byte
 * string, twice the memory in every process (scripts/bundle.mjs).
 */
const TAG = /(?<=^|\s)[#\uFF03]([^\s#\uFF03]+)/gu;
/** invisible characters that end a tag: soft hyphen, word joiner, hair space, zero-width space/joiners, enclosing keycap */
const TAG_END = new Set([0x00ad, 0x2060, 0x200a, 0x200b, 0x200c, 0x200d, 0x20e2]);
/** closing punctuation, the typographic quotes ’ and ” (U+2019, U+201D) too */
const TRAILING_PUNCTUATION = /[.,;:!?'"\u2019\u201D]+$/u;

/** A handle as the atproto handle syntax allows it: a domain name whose last label does not start with a digit. */
export function isHandle(handle: string): boolean {
  if (handle.length > 253) return false;
  const labels = handle.split('.');
  if (labels.length < 2) return false;
  if (!labels.every((l) => /^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/.test(l))) return false;
  return /^[a-zA-Z]/.test(labels[labels.length - 1] ?? '');
}

/** The links, mentions and hashtags of a text, in order, without overlaps. */
export function findSpans(text: string): TextSpan[] {
  const spans: TextSpan[] = [];
  for (const m of text.matchAll(LINK)) {
    let url = m[0].replace(TRAILING_PUNCTUATION, '');
    // a closing parenthesis belongs to the URL only when the URL opened one
    while (url.endsWith(')') && (url.match(/\(/g) ?? []).length < (url.match(/\)/g) ?? []).length) {
      url = url.slice(0, -1).replace(TRAILING_PUNCTUATION, '');
    }
    if (!URL.canParse(url) || new URL(url).hostname === '') continue;
    spans.push({ kind: 'link', start: m.index, end: m.index + url.length, value: url });
  }
  for (const m of text.matchAll(MENTION)) {
    const handle = m[1] ?? '';
    if (!isHandle(handle)) continue;
    spans.push({ kind: 'mention', start: m.index, end: m.index + 1 + handle.length, value: handle });
  }
  for (const m of text.matchAll(TAG)) {
    let tag = m[1] ?? '';
    // #️⃣ is a keycap emoji, not a tag
    if (tag.startsWith('\ufe0f') || tag.startsWith('\u20e3')) continue;
    const cut = Array.from(tag).findIndex((c) => TAG_END.has(c.codePointAt(0) ?? 0));
    if (cut >= 0) tag = Array.from(tag).slice(0, cut).join('');
    tag = tag.replace(/\p{P}+$/u, '');
    if (tag === '' || /^\d+$/.test(tag)) continue;
    if (graphemeCount(tag) > MAX_TAG_GRAPHEMES || Buffer.byteLength(tag) > MAX_TAG_BYTES) continue;
    spans.push({ kind: 'tag', start: m.index, end: m.index + 1 + tag.length, value: tag });
  }
  spans.sort((a, b) => a.start - b.start || b.end - a.end);
  const kept: TextSpan[] = [];
  for (const s of spans) {
    const last = kept[kept.length - 1];
    if (last === undefined || s.start >= last.end) kept.push(s);
  }
  return kept;
}

/** The UTF-8 byte offset of a UTF-16 index of the text. */
export function byteOffset(text: string, index: number): number {
  return Buffer.byteLength(text.slice(0, index), 'utf8');
}

/**
 * The facets of a text, on UTF-8 byte offsets (app.bsky.richtext.facet#byteSlice).
 * `resolve` turns a handle into its DID, or null when it does not resolve: such a
 * mention gets no facet (it stays plain text).
 */
export async function buildFacets(text: string, resolve: (handle: string) => Promise<string | null>): Promise<Facet[]> {
  const facets: Facet[] = [];
  const dids = new Map<string, string | null>();
  for (const span of findSpans(text)) {
    const index = { byteStart: byteOffset(text, span.start), byteEnd: byteOffset(text, span.end) };
    if (span.kind === 'link') {
      facets.push({ index, features: [{ $type: 'app.bsky.richtext.facet#link', uri: span.value }] });
    } else if (span.kind === 'tag') {
      facets.push({ index, features: [{ $type: 'app.bsky.richtext.facet#tag', tag: span.value }] });
    } else {
      const key = span.value.toLowerCase();
      let did = dids.get(key);
      if (did === undefined) {
        did = await resolve(key);
        dids.set(key, did);
      }
      if (did !== null) facets.push({ index, features: [{ $type: 'app.bsky.richtext.facet#mention', did }] });
    }
  }
  return facets;
}
