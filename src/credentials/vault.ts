import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

/**
 * Credentials at rest. A channel's credentials (tokens, passwords, a webhook's URL and
 * signing secret) are stored sealed: AES-256-GCM with the key of
 * POST_SCHEDULER_SECRET_KEY, a fresh 12-byte IV each time, and the id of the key that
 * sealed them, so that a wrong or rotated key is named, not guessed:
 *
 *   v1.<key id>.<iv>.<auth tag>.<ciphertext>     (base64url parts)
 *   plain.<json as base64url>                    (only with --insecure-plaintext)
 *
 * The key id is the first 8 hex digits of SHA-256 of the key: it names a key without
 * revealing it.
 */
export class CredentialsError extends Error {
  override name = 'CredentialsError';
}

export type Sealed = string;

export interface Vault {
  /** the id of the key this vault seals with, or null without a key */
  readonly keyId: string | null;
  /** seals credentials with the key; throws CredentialsError without one */
  seal(credentials: Record<string, unknown>): Sealed;
  /** stores credentials unencrypted (the operator's explicit choice) */
  sealPlain(credentials: Record<string, unknown>): Sealed;
  /** opens sealed credentials; throws CredentialsError naming the problem (never the content) */
  open(sealed: Sealed): Record<string, unknown>;
  /** how a sealed value is stored, as it may be shown: sealed with a key id, or plaintext */
  describe(sealed: Sealed): { readonly kind: 'sealed'; readonly keyId: string } | { readonly kind: 'plaintext' } | { readonly kind: 'unreadable' };
}

export function keyIdOf(key: Buffer): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 8);
}

const b64 = (b: Buffer): string => b.toString('base64url');
const unb64 = (s: string): Buffer => Buffer.from(s, 'base64url');

function parseObject(json: string): Record<string, unknown> {
  const value: unknown = JSON.parse(json);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new CredentialsError('sealed credentials are not an object');
  return value as Record<string, unknown>;
}

/** A vault over `key` (32 bytes) and, for opening only, older keys being rotated away from. */
export function makeVault(key: Buffer | null, oldKeys: readonly Buffer[] = []): Vault {
  const keys = new Map<string, Buffer>();
  for (const k of [...oldKeys, ...(key === null ? [] : [key])]) keys.set(keyIdOf(k), k);
  const keyId = key === null ? null : keyIdOf(key);
  return {
    keyId,
    seal(credentials) {
      if (key === null || keyId === null) {
        throw new CredentialsError('POST_SCHEDULER_SECRET_KEY is not set: credentials cannot be stored encrypted (set it, or pass --insecure-plaintext)');
      }
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', key, iv);
      const data = Buffer.concat([cipher.update(JSON.stringify(credentials), 'utf8'), cipher.final()]);
      return `v1.${keyId}.${b64(iv)}.${b64(cipher.getAuthTag())}.${b64(data)}`;
    },
    sealPlain(credentials) {
      return `plain.${b64(Buffer.from(JSON.stringify(credentials), 'utf8'))}`;
    },
    open(sealed) {
      const parts = sealed.split('.');
      if (parts[0] === 'plain' && parts.length === 2) {
        try {
          return parseObject(unb64(parts[1] ?? '').toString('utf8'));
        } catch {
          throw new CredentialsError('stored plaintext credentials are unreadable');
        }
      }
      if (parts[0] !== 'v1' || parts.length !== 5) throw new CredentialsError('stored credentials are in an unknown format');
      const [, id = '', iv = '', tag = '', data = ''] = parts;
      const k = keys.get(id);
      if (k === undefined) {
        const have = keyId === null ? 'POST_SCHEDULER_SECRET_KEY is not set' : `POST_SCHEDULER_SECRET_KEY is key ${keyId}`;
        throw new CredentialsError(`credentials are sealed with key ${id} and ${have} (rotating keys? see channels rekey)`);
      }
      try {
        const ivBytes = unb64(iv);
        const tagBytes = unb64(tag);
        // a full 16-byte tag and the 12-byte IV this vault writes: a shortened tag would
        // weaken the integrity check
        if (ivBytes.length !== 12 || tagBytes.length !== 16) throw new Error('bad lengths');
        const decipher = createDecipheriv('aes-256-gcm', k, ivBytes, { authTagLength: 16 });
        decipher.setAuthTag(tagBytes);
        return parseObject(Buffer.concat([decipher.update(unb64(data)), decipher.final()]).toString('utf8'));
      } catch {
        throw new CredentialsError(`credentials sealed with key ${id} fail their integrity check (altered in the database?)`);
      }
    },
    describe(sealed) {
      const parts = sealed.split('.');
      if (parts[0] === 'plain') return { kind: 'plaintext' };
      if (parts[0] === 'v1' && parts.length === 5) return { kind: 'sealed', keyId: parts[1] ?? '' };
      return { kind: 'unreadable' };
    },
  };
}

/**
 * A key as POST_SCHEDULER_SECRET_KEY gives it: 32 random bytes as 64 hex digits or as
 * base64 (for example `openssl rand -base64 32`). Null for an empty value; throws
 * CredentialsError (without echoing the value) for anything else.
 */
export function parseKey(value: string, name = 'POST_SCHEDULER_SECRET_KEY'): Buffer | null {
  const text = value.trim();
  if (text === '') return null;
  let key: Buffer | null = null;
  if (/^[0-9a-fA-F]{64}$/.test(text)) key = Buffer.from(text, 'hex');
  else if (/^[A-Za-z0-9+/_-]{42,44}={0,2}$/.test(text)) key = Buffer.from(text, text.includes('-') || text.includes('_') ? 'base64url' : 'base64');
  if (key?.length !== 32) throw new CredentialsError(`${name} must be 32 random bytes as 64 hex digits or base64 (openssl rand -base64 32)`);
  return key;
}
