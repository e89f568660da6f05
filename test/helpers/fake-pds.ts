import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { TID_SYNTAX } from '../../src/publishers/bluesky-text.ts';

/**
 * The bluesky publisher against a local PDS on 127.0.0.1 that speaks the XRPC
 * endpoints it uses as the lexicons and the reference PDS define them: sessions with
 * tokens that expire on command, uploadBlob (blobs addressed by their content),
 * createRecord that refuses a second record at a key (the reference PDS answers 500
 * InternalServerError there), getRecord, resolveHandle.
 *
 * createRecord checks a post as the reference PDS does: the record's shape (lexicon:
 * embed images with a blob ref and an `alt`, at most 4; reply with root and parent
 * strong refs) as 400 InvalidRequest; then the key; then the blobs it embeds (400
 * BlobNotFound when never uploaded, 400 BlobTooLarge over the lexicon's 1,000,000 bytes,
 * 400 InvalidMimeType). Stricter than a PDS, which takes a reply to any record
 * anywhere: reply refs must name a record of this repo with that cid (the AppView would
 * show a reply to nothing).
 */

export const APP_PASSWORD = 'abcd-efgh-ijkl-mnop';
export const DID = 'did:plc:alice7n2fbcxq4ydkm3abc';
export const HANDLE = 'alice.test';
export const POST = 'app.bsky.feed.post';

export interface Call {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  readonly authorization: string | undefined;
  readonly contentType: string | undefined;
  readonly body: unknown;
  /** the body as it came */
  readonly bytes: Buffer;
}

export interface StoredBlob {
  readonly cid: string;
  readonly mimeType: string;
  readonly bytes: Buffer;
}

/** app.bsky.embed.images#image `image`: maxSize */
export const IMAGE_MAX_BYTES = 1_000_000;

export interface StoredRecord {
  readonly uri: string;
  readonly cid: string;
  readonly value: Record<string, unknown>;
}

/** What the next createRecord does instead of its usual answer. */
export type CreateFault =
  /** answers as the PDS does (to let earlier calls through before a fault) */
  | { readonly kind: 'as-usual' }
  | { readonly kind: 'cut-after-write' }
  | { readonly kind: 'status'; readonly status: number; readonly body: unknown; readonly headers?: Record<string, string> };

export interface Pds {
  readonly url: string;
  readonly host: string;
  readonly calls: Call[];
  readonly records: Map<string, StoredRecord>;
  /** every token it ever issued (none may appear in an error) */
  readonly issued: string[];
  /** handle -> DID for resolveHandle */
  readonly handles: Map<string, string>;
  /** faults for the next createRecord calls, in order */
  readonly createFaults: CreateFault[];
  /** blobs uploaded, by CID */
  readonly blobs: Map<string, StoredBlob>;
  /** faults for the next uploadBlob calls, in order */
  readonly uploadFaults: CreateFault[];
  /** the most bytes uploadBlob takes (the PDS's blob upload limit) */
  uploadLimit: number;
  /** every access token issued so far answers ExpiredToken from now on */
  expireAccessTokens(): void;
  /** every refresh token issued so far answers ExpiredToken from now on */
  expireRefreshTokens(): void;
  count(nsid: string): number;
  close(): Promise<void>;
}

export type Json = Record<string, unknown>;

export async function startPds(): Promise<Pds> {
  const calls: Call[] = [];
  const records = new Map<string, StoredRecord>();
  const issued: string[] = [];
  const handles = new Map<string, string>([[HANDLE, DID]]);
  const createFaults: CreateFault[] = [];
  const blobs = new Map<string, StoredBlob>();
  const uploadFaults: CreateFault[] = [];
  const limits = { upload: 5 * 1024 * 1024 };
  /** token -> expired */
  const access = new Map<string, boolean>();
  const refresh = new Map<string, boolean>();
  let n = 0;

  const issue = () => {
    n++;
    const accessJwt = `eyJhbGciOi.access${n}.${randomBytes(12).toString('hex')}`;
    const refreshJwt = `eyJhbGciOi.refresh${n}.${randomBytes(12).toString('hex')}`;
    access.set(accessJwt, false);
    refresh.set(refreshJwt, false);
    issued.push(accessJwt, refreshJwt);
    return { accessJwt, refreshJwt, handle: HANDLE, did: DID, active: true };
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://pds');
      const bytes = Buffer.concat(chunks);
      const raw = bytes.toString('utf8');
      let body: unknown = null;
      if (raw !== '' && req.headers['content-type']?.startsWith('application/json') === true) {
        try {
          body = JSON.parse(raw);
        } catch {
          body = raw;
        }
      }
      calls.push({
        method: req.method ?? '',
        path: url.pathname,
        query: url.searchParams,
        authorization: req.headers.authorization,
        contentType: req.headers['content-type'],
        body,
        bytes,
      });
      const answer = (status: number, json: unknown, headers: Record<string, string> = {}) => {
        res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
        res.end(JSON.stringify(json));
      };
      const xrpcError = (status: number, error: string, message: string) => answer(status, { error, message });
      const bearer = (): string | null => {
        const h = req.headers.authorization;
        return h?.startsWith('Bearer ') === true ? h.slice('Bearer '.length) : null;
      };
      const post = (): boolean => {
        if (req.method !== 'POST') {
          xrpcError(405, 'MethodNotImplemented', 'Method Not Implemented');
          return false;
        }
        return true;
      };
      const get = (): boolean => {
        if (req.method !== 'GET') {
          xrpcError(405, 'MethodNotImplemented', 'Method Not Implemented');
          return false;
        }
        return true;
      };
      const json = (): Json | null => {
        if (req.headers['content-type']?.startsWith('application/json') !== true || typeof body !== 'object' || body === null) {
          xrpcError(400, 'InvalidRequest', 'Request encoding (Content-Type) required but not provided');
          return null;
        }
        return body as Json;
      };

      /** the request's access token is a live one; else answers as the PDS does and returns false */
      const access_ = (): boolean => {
        const token = bearer();
        if (token === null) {
          xrpcError(401, 'AuthenticationRequired', 'Authentication Required');
          return false;
        }
        const expired = access.get(token);
        if (expired === undefined) {
          xrpcError(400, 'InvalidToken', 'Malformed token');
          return false;
        }
        if (expired) {
          xrpcError(400, 'ExpiredToken', 'Token has expired');
          return false;
        }
        return true;
      };

      switch (url.pathname) {
        case '/xrpc/com.atproto.repo.uploadBlob': {
          if (!post()) return;
          if (!access_()) return;
          const type = req.headers['content-type'];
          if (type === undefined || type === '') {
            xrpcError(400, 'InvalidRequest', 'Request encoding (Content-Type) required but not provided');
            return;
          }
          if (bytes.length > limits.upload) {
            // the XRPC server's body limit, before the handler
            xrpcError(413, 'PayloadTooLarge', 'request entity too large');
            return;
          }
          const fault = uploadFaults.shift();
          if (fault?.kind === 'status') {
            answer(fault.status, fault.body, fault.headers);
            return;
          }
          // a CID of the raw bytes (sha-256): the same bytes are the same blob
          const cid = `bafkrei${createHash('sha256').update(bytes).digest('hex').slice(0, 52)}`;
          const mimeType = type.split(';')[0]!.trim();
          blobs.set(cid, { cid, mimeType, bytes });
          if (fault?.kind === 'cut-after-write') {
            req.socket.destroy();
            return;
          }
          answer(200, { blob: { $type: 'blob', ref: { $link: cid }, mimeType, size: bytes.length } });
          return;
        }
        case '/xrpc/com.atproto.server.createSession': {
          if (!post()) return;
          const input = json();
          if (input === null) return;
          if (typeof input['identifier'] !== 'string' || typeof input['password'] !== 'string') {
            xrpcError(400, 'InvalidRequest', 'Input must have the property "identifier"');
            return;
          }
          const who = input['identifier'];
          if ((who !== HANDLE && who !== DID) || input['password'] !== APP_PASSWORD) {
            xrpcError(401, 'AuthenticationRequired', 'Invalid identifier or password');
            return;
          }
          answer(200, issue());
          return;
        }
        case '/xrpc/com.atproto.server.refreshSession': {
          if (!post()) return;
          const token = bearer();
          if (token === null) {
            xrpcError(401, 'AuthenticationRequired', 'Authentication Required');
            return;
          }
          const expired = refresh.get(token);
          if (expired === undefined) {
            xrpcError(400, 'InvalidToken', 'Token could not be verified');
            return;
          }
          if (expired) {
            xrpcError(400, 'ExpiredToken', 'Token has expired');
            return;
          }
          // the PDS rotates: the old refresh token is spent
          refresh.set(token, true);
          answer(200, issue());
          return;
        }
        case '/xrpc/com.atproto.repo.createRecord': {
          if (!post()) return;
          if (!access_()) return;
          const input = json();
          if (input === null) return;
          const { repo, collection, rkey, record } = input;
          if (repo !== DID) {
            xrpcError(401, 'AuthenticationRequired', 'Authentication Required');
            return;
          }
          if (collection !== POST || typeof record !== 'object' || record === null || (record as Json)['$type'] !== POST) {
            xrpcError(400, 'InvalidRequest', 'Invalid app.bsky.feed.post record: Record/$type must be app.bsky.feed.post');
            return;
          }
          if (typeof rkey !== 'string' || !TID_SYNTAX.test(rkey)) {
            xrpcError(400, 'InvalidRequest', 'Invalid record key for app.bsky.feed.post: must be a valid TID');
            return;
          }
          const shape = lexiconProblem(record as Json);
          if (shape !== null) {
            xrpcError(400, 'InvalidRequest', `Invalid app.bsky.feed.post record: ${shape}`);
            return;
          }
          const fault = createFaults.shift();
          if (fault?.kind === 'status') {
            answer(fault.status, fault.body, fault.headers);
            return;
          }
          if (records.has(rkey)) {
            // the reference PDS: its MST refuses the key ("There is already a value at
            // key"), a plain error the XRPC server answers as a 500 without details
            xrpcError(500, 'InternalServerError', 'Internal Server Error');
            return;
          }
          const blobProblem = embeddedBlobProblem(record as Json, blobs);
          if (blobProblem !== null) {
            xrpcError(400, blobProblem.error, blobProblem.message);
            return;
          }
          const replyProblem = replyRefProblem(record as Json, records);
          if (replyProblem !== null) {
            xrpcError(400, 'InvalidRequest', replyProblem);
            return;
          }
          const uri = `at://${DID}/${POST}/${rkey}`;
          const cid = `bafyrei${randomBytes(16).toString('hex')}`;
          records.set(rkey, { uri, cid, value: record as Json });
          if (fault?.kind === 'cut-after-write') {
            // written, then the connection is cut before any answer
            req.socket.destroy();
            return;
          }
          answer(200, { uri, cid, commit: { cid: `bafyrei${randomBytes(8).toString('hex')}`, rev: '3l25zusnsfctk' }, validationStatus: 'valid' });
          return;
        }
        case '/xrpc/com.atproto.repo.getRecord': {
          if (!get()) return;
          const repo = url.searchParams.get('repo');
          const collection = url.searchParams.get('collection');
          const rkey = url.searchParams.get('rkey');
          if (repo === null || collection === null || rkey === null) {
            xrpcError(400, 'InvalidRequest', 'Params must have the property "rkey"');
            return;
          }
          const found = repo === DID && collection === POST ? records.get(rkey) : undefined;
          if (found === undefined) {
            xrpcError(400, 'RecordNotFound', `Could not locate record: at://${repo}/${collection}/${rkey}`);
            return;
          }
          answer(200, found);
          return;
        }
        case '/xrpc/com.atproto.identity.resolveHandle': {
          if (!get()) return;
          const did = handles.get(url.searchParams.get('handle') ?? '');
          if (did === undefined) {
            xrpcError(400, 'HandleNotFound', 'Unable to resolve handle');
            return;
          }
          answer(200, { did });
          return;
        }
        default:
          xrpcError(404, 'XRPCNotSupported', 'XRPCNotSupported');
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    calls,
    records,
    issued,
    handles,
    createFaults,
    blobs,
    uploadFaults,
    get uploadLimit() {
      return limits.upload;
    },
    set uploadLimit(value: number) {
      limits.upload = value;
    },
    expireAccessTokens: () => {
      for (const k of access.keys()) access.set(k, true);
    },
    expireRefreshTokens: () => {
      for (const k of refresh.keys()) refresh.set(k, true);
    },
    count: (nsid) => calls.filter((c) => c.path === `/xrpc/${nsid}`).length,
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}


const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** What the lexicons say of a post's embed and reply (the shapes only), as the PDS words it; null when valid. */
function lexiconProblem(record: Json): string | null {
  const embed = record['embed'];
  if (embed !== undefined) {
    if (!isObject(embed) || embed['$type'] !== 'app.bsky.embed.images') return 'Record/embed must be an object which includes the "$type" property';
    const images = embed['images'];
    if (!Array.isArray(images)) return 'Record/embed must have the property "images"';
    if (images.length > 4) return 'Record/embed/images must not have more than 4 elements';
    for (const [i, image] of images.entries()) {
      if (!isObject(image)) return `Record/embed/images/${i} must be an object`;
      if (typeof image['alt'] !== 'string') return `Record/embed/images/${i} must have the property "alt"`;
      const blob = image['image'];
      if (!isObject(blob) || blob['$type'] !== 'blob' || !isObject(blob['ref']) || typeof blob['ref']['$link'] !== 'string' || typeof blob['mimeType'] !== 'string' || typeof blob['size'] !== 'number') {
        return `Record/embed/images/${i}/image should be a blob ref`;
      }
      const ratio = image['aspectRatio'];
      if (ratio !== undefined) {
        const positive = (n: unknown) => typeof n === 'number' && Number.isInteger(n) && n >= 1;
        if (!isObject(ratio) || !positive(ratio['width']) || !positive(ratio['height'])) return `Record/embed/images/${i}/aspectRatio/width must be an integer of at least 1`;
      }
    }
  }
  const reply = record['reply'];
  if (reply !== undefined) {
    if (!isObject(reply)) return 'Record/reply must be an object';
    for (const which of ['root', 'parent']) {
      const ref = reply[which];
      if (!isObject(ref)) return `Record/reply must have the property "${which}"`;
      if (typeof ref['uri'] !== 'string' || !ref['uri'].startsWith('at://')) return `Record/reply/${which}/uri must be a valid at-uri`;
      if (typeof ref['cid'] !== 'string' || ref['cid'] === '') return `Record/reply/${which} must have the property "cid"`;
    }
  }
  return null;
}

/** The blobs a post embeds against those uploaded, as the PDS checks them when it writes the record. */
function embeddedBlobProblem(record: Json, blobs: Map<string, StoredBlob>): { error: string; message: string } | null {
  const embed = record['embed'];
  if (!isObject(embed) || !Array.isArray(embed['images'])) return null;
  for (const image of embed['images'] as Json[]) {
    const blob = image['image'] as Json;
    const cid = (blob['ref'] as Json)['$link'] as string;
    const found = blobs.get(cid);
    if (found === undefined) return { error: 'BlobNotFound', message: `Could not find blob: ${cid}` };
    if (found.bytes.length > IMAGE_MAX_BYTES) {
      const kb = (n: number) => `${(n / 1024).toFixed(2)}KB`;
      return { error: 'BlobTooLarge', message: `This file is too large. It is ${kb(found.bytes.length)} but the maximum size is ${kb(IMAGE_MAX_BYTES)}.` };
    }
    if (blob['mimeType'] !== found.mimeType) {
      return { error: 'InvalidMimeType', message: `Referenced Mimetype does not match stored blob. Expected: ${found.mimeType}, Got: ${String(blob['mimeType'])}` };
    }
  }
  return null;
}

/** A reply's root and parent must be records written here, at the cid given (see the module comment). */
function replyRefProblem(record: Json, records: Map<string, StoredRecord>): string | null {
  const reply = record['reply'];
  if (!isObject(reply)) return null;
  for (const which of ['root', 'parent']) {
    const ref = reply[which] as Json;
    const found = [...records.values()].find((r) => r.uri === ref['uri']);
    if (found === undefined) return `reply ${which} ${String(ref['uri'])} not found`;
    if (found.cid !== ref['cid']) return `reply ${which} ${String(ref['uri'])}: cid ${String(ref['cid'])} is not the record's (${found.cid})`;
  }
  return null;
}
