import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { TID_SYNTAX } from '../../src/publishers/bluesky-text.ts';

/**
 * The bluesky publisher against a local PDS on 127.0.0.1 that speaks the XRPC
 * endpoints it uses as the lexicons and the reference PDS define them: sessions with
 * tokens that expire on command, createRecord that refuses a second record at a key
 * (the reference PDS answers 500 InternalServerError there), getRecord,
 * resolveHandle.
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
}

export interface StoredRecord {
  readonly uri: string;
  readonly cid: string;
  readonly value: Record<string, unknown>;
}

/** What the next createRecord does instead of its usual answer. */
export type CreateFault =
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
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: unknown = null;
      if (raw !== '') {
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

      switch (url.pathname) {
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
          const token = bearer();
          if (token === null) {
            xrpcError(401, 'AuthenticationRequired', 'Authentication Required');
            return;
          }
          const expired = access.get(token);
          if (expired === undefined) {
            xrpcError(400, 'InvalidToken', 'Malformed token');
            return;
          }
          if (expired) {
            xrpcError(400, 'ExpiredToken', 'Token has expired');
            return;
          }
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

