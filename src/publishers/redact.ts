/**
 * What a publisher may show of a destination and of a platform's answer in
 * `last_error` and logs: nothing that can carry a credential.
 */

/** The most of an answer's body kept in an error (characters, after redaction). */
export const EXCERPT_CHARS = 120;

/** Key names whose values are credentials (matched inside longer names too: api_key, x-auth-token). */
const SECRET_KEY = String.raw`[A-Za-z0-9_.-]*(?:token|secret|passw(?:or)?d|pwd|key|authori[sz]ation|auth|bearer|credential|signature|session|cookie)[A-Za-z0-9_.-]*`;
/** `"key": "value"`, `key=value`, `key: value` (JSON, form, header-like text) */
const KEY_VALUE = new RegExp(String.raw`(["']?)(${SECRET_KEY})\1(\s*[:=]\s*)("(?:[^"\\]|\\.)*"?|'[^']*'?|[^\s,;&}\]"']+)`, 'gi');
/** `Bearer xyz`, `Basic xyz` */
const SCHEME_CREDENTIAL = /\b(bearer|basic|token)(\s+)[^\s,;"'}\]]+/gi;
/** long opaque strings (base64, base64url, hex, JWT-like): 24 or more such characters */
const OPAQUE = /[A-Za-z0-9+/=_.~-]{24,}/g;
// eslint-disable-next-line no-control-regex -- removing control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g;

/**
 * A short, single-line excerpt of an answer body with credential-looking values
 * replaced by ***: at most EXCERPT_CHARS characters, no control characters.
 */
export function answerExcerpt(body: string, max = EXCERPT_CHARS): string {
  // redact the whole text (up to a bound) before cutting, so a cut cannot expose half a secret
  const text = body
    .slice(0, 8 * 1024)
    .replace(CONTROL, ' ')
    .replace(SCHEME_CREDENTIAL, '$1$2***')
    .replace(KEY_VALUE, (_m, quote: string, key: string, sep: string, value: string) => {
      const shown = value.startsWith('"') ? '"***"' : value.startsWith("'") ? "'***'" : '***';
      return `${quote}${key}${quote}${sep}${shown}`;
    })
    .replace(OPAQUE, '***')
    .replace(/\s+/g, ' ')
    .trim();
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

/** A URL setting as `channels list` shows it: scheme://host/*** */
export function redactedUrl(value: string): string {
  try {
    const u = new URL(value);
    return `${u.protocol}//${u.host}/***`;
  } catch {
    return '***';
  }
}

/** Secrets shorter than this are not replaced in text: they would mangle common words. */
export const MIN_SCRUBBED_LENGTH = 8;

/**
 * The text with every known secret (a token, a password, a URL or the parts of one that
 * carry a token) replaced by ***, longest first so a URL goes whole before its token.
 * What a server echoes back is scrubbed with this before it is cut into an excerpt: a
 * short secret is not caught by answerExcerpt's patterns.
 */
export function withoutSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  const known = secrets.filter((s) => s.length >= MIN_SCRUBBED_LENGTH).sort((a, b) => b.length - a.length);
  for (const secret of known) out = out.split(secret).join('***');
  return out;
}

/**
 * The parts of a URL that may carry a credential, to scrub from what a server answers:
 * the URL itself, its path and query, every path segment and query value, its user name
 * and password (the scheme and host are shown, so they are not secrets).
 */
export function urlSecrets(value: string): string[] {
  if (!URL.canParse(value)) return [value];
  const u = new URL(value);
  const decoded = (s: string) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  };
  const parts = [value, u.href, u.pathname + u.search, u.pathname, u.search.slice(1), u.username, u.password, decoded(u.username), decoded(u.password)];
  for (const segment of u.pathname.split('/')) parts.push(segment, decoded(segment));
  for (const [, v] of u.searchParams) parts.push(v, encodeURIComponent(v));
  return [...new Set(parts.filter((p) => p !== ''))];
}
