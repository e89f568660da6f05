import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { loadConfig } from '../src/config.ts';
import { createLogger } from '../src/log.ts';
import { blueskyPublisher, rateLimitDelay } from '../src/publishers/bluesky.ts';
import { buildFacets, checkPostText, decodeTid, findSpans, graphemeCount, recordKeyFor, TID_SYNTAX } from '../src/publishers/bluesky-text.ts';
import type { HttpResponse } from '../src/publishers/http-client.ts';
import { imageSize } from '../src/publishers/image-size.ts';
import {
  CredentialsRejectedError,
  PermanentPublishError,
  RetryablePublishError,
  SettingsError,
  type LoadedImage,
  type Publisher,
  type PublishRequest,
  type PublishResult,
} from '../src/publishers/publisher.ts';
import { loadPublisherModule } from '../src/publishers/registry.ts';
import type { Channel, ClaimedPost, OnUnknown } from '../src/types.ts';
import { publishPost } from '../src/workers/publish-post.ts';
import { rulesFor } from '../src/content/rules.ts';
import { APP_PASSWORD, DID, HANDLE, POST, startPds, type Json, type Pds } from './helpers/fake-pds.ts';

/** a 1x1 PNG and a 1x1 GIF: real image bytes */
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==', 'base64');
const GIF = Buffer.from('R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7', 'base64');
const png = (alt: string, filename = 'a.png', bytes = PNG): LoadedImage => ({ bytes, mimeType: 'image/png', alt, filename });
const gif = (alt: string, filename = 'b.gif'): LoadedImage => ({ bytes: GIF, mimeType: 'image/gif', alt, filename });

/**
 * The bluesky publisher against a local PDS on 127.0.0.1 that speaks the XRPC
 * endpoints it uses as the lexicons and the reference PDS define them: sessions with
 * tokens that expire on command, createRecord that refuses a second record at a key
 * (the reference PDS answers 500 InternalServerError there), getRecord,
 * resolveHandle.
 */

describe('bluesky publisher', () => {
  const servers: Pds[] = [];
  const publishers: Publisher[] = [];
  /** every error message and log line the tests saw: none may hold a secret */
  const shown: string[] = [];
  after(async () => {
    for (const p of publishers) await p.close();
    for (const s of servers) await s.close();
    const secrets = [APP_PASSWORD, ...servers.flatMap((s) => s.issued)];
    for (const text of shown) {
      for (const secret of secrets) assert.ok(!text.includes(secret), `a secret appeared in: ${text}`);
    }
  });

  async function pds(): Promise<Pds> {
    const s = await startPds();
    servers.push(s);
    return s;
  }

  /** the local PDS is on 127.0.0.1: channels opt in (the SSRF guard is tested on its own) */
  function publisher(allowPrivateNetwork = false): Publisher {
    const p = blueskyPublisher.createPublisher({ timeoutMs: 2_000, concurrency: 2, allowPrivateNetwork });
    publishers.push(p);
    return p;
  }

  const channel = (settings: Record<string, unknown>, onUnknown: OnUnknown = 'check', id = 7): Channel => ({
    id,
    name: 'sky',
    platform: 'bluesky',
    onUnknown,
    settings,
    enabled: true,
    credentials: 'sealed',
    attention: null,
    createdAt: new Date(),
  });

  /** A request whose saveCredentials stores into `store.credentials` (as the worker seals and stores them). */
  function request(
    server: Pds,
    store: { credentials: Record<string, unknown> },
    overrides: Partial<Omit<PublishRequest, 'saveCredentials'>> & { settings?: Record<string, unknown>; channelId?: number } = {},
  ): PublishRequest & { saved: Record<string, unknown>[] } {
    const saved: Record<string, unknown>[] = [];
    const { settings, channelId, ...rest } = overrides;
    return {
      postId: 42,
      attempt: 1,
      text: 'Hello from the scheduler',
      runAt: new Date('2020-01-02T03:04:05.000Z'),
      idempotencyKey: 'c5a1e3d4-0000-4000-8000-000000000042',
      images: [],
      part: { index: 0, count: 1 },
      replyTo: null,
      channel: channel(settings ?? { service: server.url, allow_private_network: true }, 'check', channelId ?? 7),
      credentials: { ...store.credentials },
      signal: new AbortController().signal,
      saved,
      saveCredentials: async (fresh) => {
        saved.push(fresh);
        store.credentials = { ...fresh };
      },
      ...rest,
    };
  }

  /** runs `fn`, which must throw an error of `type`; its message is kept for the secret check */
  async function rejects<E extends Error>(fn: () => Promise<unknown>, type: new (...args: never[]) => E): Promise<E> {
    try {
      await fn();
    } catch (e) {
      assert.ok(e instanceof type, `expected ${type.name}, got ${String(e)}`);
      shown.push(e.message);
      return e;
    }
    assert.fail(`expected ${type.name}, nothing was thrown`);
  }

  const fresh = () => ({ credentials: { identifier: HANDLE, app_password: APP_PASSWORD } as Record<string, unknown> });

  it('is registered as platform bluesky, defaults to check, can look up, takes images and threads', async () => {
    const module = await loadPublisherModule('bluesky');
    assert.equal(module, blueskyPublisher);
    assert.equal(blueskyPublisher.canLookUp, true);
    assert.equal(blueskyPublisher.defaultOnUnknown, 'check');
    assert.equal(blueskyPublisher.threads, true);
    assert.deepEqual(blueskyPublisher.media, { maxImages: 4, maxBytes: 1_000_000, maxAltLength: 2000, types: ['image/jpeg', 'image/png', 'image/gif', 'image/webp'] });
  });

  it('first publish: creates a session, saves its tokens, writes the record at the key derived from the idempotency key', async () => {
    const server = await pds();
    const store = fresh();
    const req = request(server, store, { settings: { service: server.url, allow_private_network: true, langs: ['en', 'pt-BR'] } });
    const result = await publisher().publish(req);

    const rkey = recordKeyFor(req.idempotencyKey);
    const uri = `at://${DID}/${POST}/${rkey}`;
    // replyRef: what a reply to it needs, the record's uri and the cid the PDS answered
    assert.deepEqual(result, { externalId: uri, externalUrl: `https://bsky.app/profile/${DID}/post/${rkey}`, replyRef: { uri, cid: server.records.get(rkey)?.cid } });

    assert.deepEqual(
      server.calls.map((c) => `${c.method} ${c.path}`),
      ['POST /xrpc/com.atproto.server.createSession', 'POST /xrpc/com.atproto.repo.createRecord'],
    );
    const [session, create] = server.calls;
    assert.deepEqual(session!.body, { identifier: HANDLE, password: APP_PASSWORD });
    assert.match(session!.contentType ?? '', /^application\/json/);
    assert.equal(session!.authorization, undefined);

    // the tokens went to saveCredentials, with what the channel had
    assert.equal(req.saved.length, 1);
    const saved = req.saved[0]!;
    assert.equal(saved['identifier'], HANDLE);
    assert.equal(saved['app_password'], APP_PASSWORD);
    assert.equal(saved['did'], DID);
    assert.equal(saved['access_jwt'], server.issued[0]);
    assert.equal(saved['refresh_jwt'], server.issued[1]);

    assert.equal(create!.authorization, `Bearer ${server.issued[0]!}`);
    const body = create!.body as Json;
    assert.equal(body['repo'], DID);
    assert.equal(body['collection'], POST);
    assert.equal(body['rkey'], rkey);
    const record = body['record'] as Json;
    assert.equal(record['$type'], POST);
    assert.equal(record['text'], req.text);
    assert.deepEqual(record['langs'], ['en', 'pt-BR']);
    assert.equal(record['facets'], undefined);
    // createdAt is when it is written, not the time it was scheduled for
    assert.equal(typeof record['createdAt'], 'string');
    assert.equal(new Date(record['createdAt'] as string).toISOString(), record['createdAt']);
    assert.notEqual(record['createdAt'], req.runAt.toISOString());
    assert.equal(server.records.size, 1);
  });

  it('uses the stored tokens without a new session', async () => {
    const server = await pds();
    const store = fresh();
    await publisher().publish(request(server, store));
    // another worker (a new publisher) with the stored credentials
    const req = request(server, store, { idempotencyKey: 'second-post' });
    await publisher().publish(req);
    assert.equal(server.count('com.atproto.server.createSession'), 1);
    assert.equal(server.count('com.atproto.server.refreshSession'), 0);
    assert.equal(req.saved.length, 0);
    assert.equal(server.records.size, 2);
  });

  it('an expired access token is refreshed once, the new tokens saved, and the record written with them', async () => {
    const server = await pds();
    const store = fresh();
    await publisher().publish(request(server, store));
    const oldRefresh = store.credentials['refresh_jwt'] as string;
    server.expireAccessTokens();

    const req = request(server, store, { idempotencyKey: 'after-expiry' });
    const result = await publisher().publish(req);
    assert.ok(result.externalId?.startsWith(`at://${DID}/${POST}/`));

    const refreshes = server.calls.filter((c) => c.path === '/xrpc/com.atproto.server.refreshSession');
    assert.equal(refreshes.length, 1);
    assert.equal(refreshes[0]!.authorization, `Bearer ${oldRefresh}`);
    assert.equal(refreshes[0]!.body, null);
    assert.equal(server.count('com.atproto.server.createSession'), 1);
    assert.equal(req.saved.length, 1);
    const [newAccess, newRefresh] = server.issued.slice(-2);
    assert.equal(req.saved[0]!['access_jwt'], newAccess);
    assert.equal(req.saved[0]!['refresh_jwt'], newRefresh);
    assert.equal(req.saved[0]!['app_password'], APP_PASSWORD);
    const creates = server.calls.filter((c) => c.path === '/xrpc/com.atproto.repo.createRecord');
    assert.equal(creates.at(-1)!.authorization, `Bearer ${newAccess!}`);
    assert.equal(server.records.size, 2);
  });

  it('posts of one worker that meet one expired token share a single refresh', async () => {
    const server = await pds();
    const store = fresh();
    const p = publisher();
    await p.publish(request(server, store));
    server.expireAccessTokens();
    // claimed together: both carry the same (now expired) tokens
    const a = request(server, store, { idempotencyKey: 'together-a' });
    const b = request(server, store, { idempotencyKey: 'together-b' });
    await Promise.all([p.publish(a), p.publish(b)]);
    assert.equal(server.count('com.atproto.server.refreshSession'), 1);
    assert.equal(server.count('com.atproto.server.createSession'), 1);
    assert.equal(server.records.size, 3);
  });

  it('an expired refresh token too: a new session from the app password, saved', async () => {
    const server = await pds();
    const store = fresh();
    await publisher().publish(request(server, store));
    server.expireAccessTokens();
    server.expireRefreshTokens();

    const req = request(server, store, { idempotencyKey: 'after-both-expired' });
    await publisher().publish(req);
    assert.deepEqual(
      server.calls.slice(2).map((c) => c.path.replace('/xrpc/', '')),
      ['com.atproto.repo.createRecord', 'com.atproto.server.refreshSession', 'com.atproto.server.createSession', 'com.atproto.repo.createRecord'],
    );
    assert.equal(req.saved.length, 1);
    const [newAccess, newRefresh] = server.issued.slice(-2);
    assert.equal(req.saved[0]!['access_jwt'], newAccess);
    assert.equal(req.saved[0]!['refresh_jwt'], newRefresh);
    assert.equal(server.records.size, 2);
  });

  it('a wrong app password: CredentialsRejectedError with the PDS reason, never the password', async () => {
    const server = await pds();
    const store = { credentials: { identifier: HANDLE, app_password: 'wrong-pass-word-9999' } as Record<string, unknown> };
    const req = request(server, store);
    const e = await rejects(() => publisher().publish(req), CredentialsRejectedError);
    assert.match(e.message, /channel sky/);
    assert.ok(e.message.includes(server.host), e.message);
    assert.match(e.message, /Invalid identifier or password/);
    assert.ok(!e.message.includes('wrong-pass-word-9999'));
    assert.equal(server.count('com.atproto.repo.createRecord'), 0);
    assert.equal(req.saved.length, 0);

    // `channels add` verification says the same
    const v = await rejects(
      () => blueskyPublisher.verify!({ service: server.url, allow_private_network: true }, store.credentials, { timeoutMs: 2_000, concurrency: 1 }),
      CredentialsRejectedError,
    );
    assert.ok(!v.message.includes('wrong-pass-word-9999'));
  });

  it('missing credentials are refused before anything is sent', async () => {
    const server = await pds();
    await rejects(() => publisher().publish({ ...request(server, fresh()), credentials: null }), CredentialsRejectedError);
    const e = await rejects(() => publisher().publish(request(server, { credentials: { identifier: HANDLE } })), CredentialsRejectedError);
    assert.match(e.message, /app_password/);
    assert.equal(server.calls.length, 0);
  });

  it('verify answers with the account handle', async () => {
    const server = await pds();
    const account = await blueskyPublisher.verify!({ service: server.url, allow_private_network: true }, fresh().credentials, { timeoutMs: 2_000, concurrency: 1 });
    assert.deepEqual(account, { account: `@${HANDLE}` });
  });

  it('a repeat with the same idempotency key creates no second record and succeeds with the first one', async () => {
    const server = await pds();
    const store = fresh();
    const first = await publisher().publish(request(server, store));
    const again = await publisher().publish(request(server, store, { attempt: 2 }));
    assert.deepEqual(again, first);
    assert.equal(server.records.size, 1);
    const creates = server.calls.filter((c) => c.path === '/xrpc/com.atproto.repo.createRecord');
    assert.equal(creates.length, 2);
    assert.equal((creates[0]!.body as Json)['rkey'], (creates[1]!.body as Json)['rkey']);
  });

  it('a connection cut after sending: maybe delivered; the lookup finds the record, and the check policy publishes once', async () => {
    const server = await pds();
    const store = fresh();
    const p = publisher();
    server.createFaults.push({ kind: 'cut-after-write' });
    const req = request(server, store);
    const e = await rejects(() => p.publish(req), RetryablePublishError);
    assert.equal(e.maybeDelivered, true);
    assert.match(e.message, /channel sky/);
    assert.equal(server.records.size, 1);

    const found = await p.lookup!(req);
    const rkey = recordKeyFor(req.idempotencyKey);
    const uri = `at://${DID}/${POST}/${rkey}`;
    assert.deepEqual(found, { externalId: uri, externalUrl: `https://bsky.app/profile/${DID}/post/${rkey}`, replyRef: { uri, cid: server.records.get(rkey)?.cid } });
    const get = server.calls.at(-1)!;
    assert.equal(get.method, 'GET');
    assert.equal(get.path, '/xrpc/com.atproto.repo.getRecord');
    assert.deepEqual(Object.fromEntries(get.query), { repo: DID, collection: POST, rkey });

    // nothing at another key: null (RecordNotFound)
    assert.equal(await p.lookup!(request(server, store, { idempotencyKey: 'never-sent' })), null);
  });

  it('through the worker rules: a cut on a check channel, then the next attempt finds it and sends nothing', async () => {
    const server = await pds();
    const store = fresh();
    const p = publisher();
    const lines: string[] = [];
    const log = createLogger('WORKER test', 'text', (line) => lines.push(line));
    const config = loadConfig({}, { MAX_ATTEMPTS: '5' });
    const ch: Channel = { ...channel({ service: server.url, allow_private_network: true }, 'check'), credentials: 'sealed' };
    const post = (attempt: number, unconfirmed: boolean): ClaimedPost => ({
      id: 42,
      runAt: new Date('2020-01-02T03:04:05.000Z'),
      scheduledAt: new Date('2020-01-02T03:04:05.000Z'),
      attempt,
      attemptsBase: 0,
      token: attempt,
      idempotencyKey: 'worker-rules-key',
      unconfirmed,
      text: 'Through the worker',
      parts: [{ text: 'Through the worker', images: [] }],
      publishedParts: [],
      channel: ch,
    });
    const deps = {
      config,
      log,
      publisherFor: async () => p,
      signal: new AbortController().signal,
      openCredentials: () => ({ ...store.credentials }),
      saveCredentials: async (_id: number, c: Record<string, unknown>) => {
        store.credentials = { ...c };
      },
      setAttention: async () => undefined,
      contentRules: (c: Channel) => rulesFor(c, null),
      loadImage: () => Promise.reject(new Error('a text post has no images')),
      recordPart: () => Promise.reject(new Error('a post of one part records no parts')),
    };
    server.createFaults.push({ kind: 'cut-after-write' });
    const first = await publishPost(post(1, false), deps);
    assert.equal(first.kind, 'retry');
    assert.equal(first.kind === 'retry' && first.unconfirmed, true);
    const second = await publishPost(post(2, true), deps);
    assert.equal(second.kind, 'published');
    const rkey = recordKeyFor('worker-rules-key');
    assert.equal(second.kind === 'published' && second.externalId, `at://${DID}/${POST}/${rkey}`);
    assert.equal(server.count('com.atproto.repo.createRecord'), 1);
    assert.equal(server.records.size, 1);
    shown.push(...lines);
    if (first.kind === 'retry') shown.push(first.error);
  });

  it('facets on UTF-8 byte offsets: emoji and accented text before a link, a mention and a hashtag', async () => {
    const server = await pds();
    server.handles.set('bob.test', 'did:plc:bob2222222222222222222');
    const text = 'Olá, café 👋🏽 — veja https://example.com/path?q=1, fale com @bob.test e @ghost.test #lançamento!';
    const req = request(server, fresh(), { text });
    await publisher().publish(req);

    const resolves = server.calls.filter((c) => c.path === '/xrpc/com.atproto.identity.resolveHandle');
    assert.deepEqual(
      resolves.map((c) => [c.method, c.query.get('handle')]),
      [
        ['GET', 'bob.test'],
        ['GET', 'ghost.test'],
      ],
    );
    const create = server.calls.find((c) => c.path === '/xrpc/com.atproto.repo.createRecord')!;
    const facets = ((create.body as Json)['record'] as Json)['facets'];
    const bytes = Buffer.from(text, 'utf8');
    const at = (s: string) => {
      const start = bytes.indexOf(Buffer.from(s, 'utf8'));
      assert.ok(start >= 0);
      return { byteStart: start, byteEnd: start + Buffer.byteLength(s) };
    };
    assert.deepEqual(facets, [
      { index: at('https://example.com/path?q=1'), features: [{ $type: 'app.bsky.richtext.facet#link', uri: 'https://example.com/path?q=1' }] },
      { index: at('@bob.test'), features: [{ $type: 'app.bsky.richtext.facet#mention', did: 'did:plc:bob2222222222222222222' }] },
      // @ghost.test does not resolve: no facet
      { index: at('#lançamento'), features: [{ $type: 'app.bsky.richtext.facet#tag', tag: 'lançamento' }] },
    ]);
    // UTF-16 indices would be wrong: the bytes are further along
    const link = (facets as { index: { byteStart: number } }[])[0]!.index.byteStart;
    assert.notEqual(link, text.indexOf('https://'));
    assert.equal(bytes.subarray(link, link + 8).toString('utf8'), 'https://');
  });

  it('finds links, mentions and tags as a person reads them', async () => {
    const spans = (text: string) => findSpans(text).map((s) => [s.kind, s.value]);
    assert.deepEqual(spans('(see https://a.example/x_(y)) and https://b.example/z.'), [
      ['link', 'https://a.example/x_(y)'],
      ['link', 'https://b.example/z'],
    ]);
    assert.deepEqual(spans('mail me@example.com or @alice.test. #1 #️⃣ #ok_tag, x#no'), [
      ['mention', 'alice.test'],
      ['tag', 'ok_tag'],
    ]);
    assert.deepEqual(spans('@nodot @trailing-.test @123.45'), []);
    // a full-width ＃ starts a tag; typographic closing quotes end one
    assert.deepEqual(spans('a \uFF03weekend\u2019 and #done\u201D then #x'), [
      ['tag', 'weekend'],
      ['tag', 'done'],
      ['tag', 'x'],
    ]);
    // a mention is looked up once per handle
    let lookups = 0;
    const facets = await buildFacets('@Bob.test and @bob.test', async () => {
      lookups++;
      return 'did:plc:bob';
    });
    assert.equal(facets.length, 2);
    assert.equal(lookups, 1);
  });

  it('checkText: 300 graphemes (an emoji with a skin tone is one) and 3000 bytes', async () => {
    const thumbs = '👍🏽';
    assert.equal(graphemeCount(thumbs), 1);
    assert.equal(thumbs.length, 4); // UTF-16 units
    assert.equal(blueskyPublisher.checkText(thumbs.repeat(300), {}), null);
    assert.match(blueskyPublisher.checkText(thumbs.repeat(301), {}) ?? '', /301 characters \(graphemes\).*at most 300/);
    assert.equal(blueskyPublisher.checkText('é'.repeat(300), {}), null);
    assert.match(blueskyPublisher.checkText('a'.repeat(301), {}) ?? '', /at most 300/);
    // 130 family emoji: 130 graphemes, 3250 bytes
    const family = '👨‍👩‍👧‍👦'.repeat(130);
    assert.equal(graphemeCount(family), 130);
    assert.match(checkPostText(family) ?? '', /3250 bytes.*at most 3000/);

    // a text too long fails at once, nothing sent
    const server = await pds();
    const e = await rejects(() => publisher().publish(request(server, fresh(), { text: thumbs.repeat(301) })), PermanentPublishError);
    assert.match(e.message, /channel sky/);
    assert.equal(server.calls.length, 0);
  });

  it('429: retried after ratelimit-reset, not delivered', async () => {
    const server = await pds();
    const store = fresh();
    const resetAt = Math.floor(Date.now() / 1000) + 3600;
    server.createFaults.push({
      kind: 'status',
      status: 429,
      body: { error: 'RateLimitExceeded', message: 'Rate Limit Exceeded' },
      headers: { 'ratelimit-limit': '5000', 'ratelimit-remaining': '0', 'ratelimit-reset': String(resetAt), 'ratelimit-policy': '5000;w=3600' },
    });
    const e = await rejects(() => publisher().publish(request(server, store)), RetryablePublishError);
    assert.equal(e.maybeDelivered, false);
    assert.ok(e.retryAfterMs !== null && e.retryAfterMs > 60_000 && e.retryAfterMs <= 3_600_000, String(e.retryAfterMs));
    assert.match(e.message, /HTTP 429 RateLimitExceeded/);
    assert.equal(server.records.size, 0);

    const response = (headers: Record<string, string>) => ({ status: 429, headers, body: Buffer.alloc(0), truncated: false, text: () => '', json: () => null }) as HttpResponse;
    assert.equal(rateLimitDelay(response({ 'ratelimit-reset': '1000' }), 990_000), 10_000);
    assert.equal(rateLimitDelay(response({ 'ratelimit-reset': '1000' }), 2_000_000), 0);
    assert.equal(rateLimitDelay(response({ 'retry-after': '30' }), 0), 30_000);
    assert.equal(rateLimitDelay(response({}), 0), null);
  });

  it('500: maybe delivered after a look-up that finds nothing', async () => {
    const server = await pds();
    server.createFaults.push({ kind: 'status', status: 500, body: { error: 'InternalServerError', message: 'Internal Server Error' } });
    const e = await rejects(() => publisher().publish(request(server, fresh())), RetryablePublishError);
    assert.equal(e.maybeDelivered, true);
    assert.match(e.message, /HTTP 500/);
    assert.equal(server.calls.at(-1)!.path, '/xrpc/com.atproto.repo.getRecord');
  });

  it('400 InvalidRequest: permanent, with a redacted excerpt', async () => {
    const server = await pds();
    const store = fresh();
    server.createFaults.push({
      kind: 'status',
      status: 400,
      body: { error: 'InvalidRequest', message: `Invalid app.bsky.feed.post record; token=${'x'.repeat(40)}` },
    });
    const e = await rejects(() => publisher().publish(request(server, store)), PermanentPublishError);
    assert.match(e.message, /^bluesky channel sky \(127\.0\.0\.1:\d+\): com\.atproto\.repo\.createRecord: HTTP 400 InvalidRequest: Invalid app\.bsky\.feed\.post record/);
    assert.ok(!e.message.includes('x'.repeat(40)));
  });

  it('an account the PDS refuses (401 AccountTakedown) on a write: credentials rejected, the post waits', async () => {
    const server = await pds();
    server.createFaults.push({ kind: 'status', status: 401, body: { error: 'AccountTakedown', message: 'Account has been taken down' } });
    const e = await rejects(() => publisher().publish(request(server, fresh())), CredentialsRejectedError);
    assert.match(e.message, /AccountTakedown: Account has been taken down/);
    assert.equal(server.count('com.atproto.server.refreshSession'), 0);
  });

  it('no secret in an error that echoes one', async () => {
    const server = await pds();
    const store = fresh();
    await publisher().publish(request(server, store));
    const token = store.credentials['access_jwt'] as string;
    // a PDS (or a proxy) that echoes the token and the password back
    server.createFaults.push({ kind: 'status', status: 403, body: { error: 'Forbidden', message: `no: ${token} ${APP_PASSWORD}` } });
    const e = await rejects(() => publisher().publish(request(server, store, { idempotencyKey: 'echo' })), PermanentPublishError);
    assert.ok(!e.message.includes(token));
    assert.ok(!e.message.includes(APP_PASSWORD));
  });

  it('SSRF: a PDS on a loopback address is refused unless the channel opts in, naming channel and host', async () => {
    const server = await pds();
    const e = await rejects(
      () => publisher().publish(request(server, fresh(), { settings: { service: server.url.replace('http:', 'https:') } })),
      PermanentPublishError,
    );
    assert.match(e.message, /channel sky \(127\.0\.0\.1:\d+\)/);
    assert.match(e.message, /channels add --allow-private-network/);
    assert.equal(server.calls.length, 0);
  });

  it('settings and credentials are validated, naming the field, never its value', () => {
    const parse = (s: Record<string, unknown>) => () => blueskyPublisher.parseSettings(s);
    assert.throws(parse({}), (e: unknown) => e instanceof SettingsError && /needs a service/.test(e.message));
    assert.throws(parse({ service: 'ftp://pds.example' }), SettingsError);
    assert.throws(parse({ service: 'http://pds.example' }), /https:\/\/ URL/);
    assert.doesNotThrow(parse({ service: 'http://10.0.0.5:2583', allow_private_network: true }));
    assert.doesNotThrow(parse({ service: 'https://bsky.social', langs: ['en', 'ja', 'pt-BR'] }));
    assert.throws(parse({ service: 'https://bsky.social', langs: ['en', 'ja', 'pt', 'de'] }), /at most 3/);
    assert.throws(parse({ service: 'https://bsky.social', langs: ['not a tag'] }), /BCP-47/);
    assert.throws(parse({ service: 'https://user:pw@bsky.social' }), /user or password/);
    const creds = (c: Record<string, unknown>) => () => blueskyPublisher.parseCredentials!(c);
    assert.doesNotThrow(creds({ identifier: HANDLE, app_password: APP_PASSWORD }));
    assert.throws(creds({ identifier: HANDLE }), (e: unknown) => e instanceof SettingsError && /app_password/.test(e.message));
    assert.throws(creds({ app_password: APP_PASSWORD }), (e: unknown) => e instanceof SettingsError && /identifier/.test(e.message) && !e.message.includes(APP_PASSWORD));
  });

  it('record keys: valid TIDs, the same for the same key, apart from clock-made TIDs', () => {
    const a = recordKeyFor('c5a1e3d4-0000-4000-8000-000000000042');
    assert.match(a, TID_SYNTAX);
    assert.equal(a.length, 13);
    assert.equal(recordKeyFor('c5a1e3d4-0000-4000-8000-000000000042'), a);
    const keys = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const k = recordKeyFor(`key-${i}`);
      assert.match(k, TID_SYNTAX);
      keys.add(k);
      const { micros } = decodeTid(k);
      // 2000-01-01 .. 2009-01-01: before any PDS made a TID from its clock
      assert.ok(micros >= 946_684_800_000_000n && micros < 1_230_768_000_000_000n, k);
    }
    assert.equal(keys.size, 2000);
    // the spec's example decodes as a 2023 timestamp
    assert.ok(decodeTid('3jzfcijpj2z2a').micros > 1_600_000_000_000_000n);
  });

  const createBodies = (server: Pds) => server.calls.filter((c) => c.path === '/xrpc/com.atproto.repo.createRecord').map((c) => c.body as Json);

  it('images: each uploaded with uploadBlob (raw bytes, their type), then embedded in the record with their alt text', async () => {
    const server = await pds();
    const req = request(server, fresh(), { images: [png('A red dot on white'), gif('')] });
    const result = await publisher().publish(req);
    assert.deepEqual(
      server.calls.map((c) => `${c.method} ${c.path.replace('/xrpc/', '')}`),
      ['POST com.atproto.server.createSession', 'POST com.atproto.repo.uploadBlob', 'POST com.atproto.repo.uploadBlob', 'POST com.atproto.repo.createRecord'],
    );
    const uploads = server.calls.filter((c) => c.path === '/xrpc/com.atproto.repo.uploadBlob');
    assert.deepEqual(
      uploads.map((c) => [c.authorization, c.contentType, c.bytes.toString('base64'), [...c.query.keys()]]),
      [
        [`Bearer ${server.issued[0]!}`, 'image/png', PNG.toString('base64'), []],
        [`Bearer ${server.issued[0]!}`, 'image/gif', GIF.toString('base64'), []],
      ],
    );
    const [pngBlob, gifBlob] = [...server.blobs.values()];
    const record = createBodies(server)[0]!['record'] as Json;
    assert.deepEqual(record['embed'], {
      $type: 'app.bsky.embed.images',
      images: [
        { image: { $type: 'blob', ref: { $link: pngBlob!.cid }, mimeType: 'image/png', size: PNG.length }, alt: 'A red dot on white', aspectRatio: { width: 1, height: 1 } },
        { image: { $type: 'blob', ref: { $link: gifBlob!.cid }, mimeType: 'image/gif', size: GIF.length }, alt: '', aspectRatio: { width: 1, height: 1 } },
      ],
    });
    assert.equal(record['reply'], undefined);
    const rkey = recordKeyFor(req.idempotencyKey);
    assert.equal(result.replyRef?.['cid'], server.records.get(rkey)?.cid);
  });

  /** the parts of a thread as the core sends them: each replying to the first and to the one before */
  function part(server: Pds, store: { credentials: Record<string, unknown> }, published: PublishResult[], index: number, count: number) {
    const root = published[0];
    const parent = published[index - 1];
    return request(server, store, {
      text: `${index + 1}/${count} of a thread`,
      idempotencyKey: index === 0 ? 'post-9' : `post-9.${index}`,
      part: { index, count },
      replyTo: index === 0 || root === undefined || parent === undefined ? null : { root, parent },
    });
  }

  it('a 3-part thread: each record replies to the root and to the part before (uri and cid), at its own derived key', async () => {
    const server = await pds();
    const store = fresh();
    const p = publisher();
    const published: PublishResult[] = [];
    for (let index = 0; index < 3; index++) published.push(await p.publish(part(server, store, published, index, 3)));
    const refs = published.map((r) => r.replyRef);
    const rkeys = ['post-9', 'post-9.1', 'post-9.2'].map(recordKeyFor);
    assert.deepEqual(
      refs,
      rkeys.map((rkey) => ({ uri: `at://${DID}/${POST}/${rkey}`, cid: server.records.get(rkey)?.cid })),
    );
    const replies = rkeys.map((rkey) => server.records.get(rkey)?.value['reply']);
    assert.deepEqual(replies, [undefined, { root: refs[0], parent: refs[0] }, { root: refs[0], parent: refs[1] }]);
    assert.deepEqual(
      createBodies(server).map((b) => b['rkey']),
      rkeys,
    );
  });

  it('a cut after part 2 was sent: the lookup of part 2 finds it (uri and cid); part 2 again makes no second record; part 3 replies to it', async () => {
    const server = await pds();
    const store = fresh();
    const p = publisher();
    const published: PublishResult[] = [await p.publish(part(server, store, [], 0, 3))];
    server.createFaults.push({ kind: 'cut-after-write' });
    const second = part(server, store, published, 1, 3);
    const cut = await rejects(() => p.publish(second), RetryablePublishError);
    assert.equal(cut.maybeDelivered, true);
    assert.equal(server.records.size, 2);

    const rkey = recordKeyFor('post-9.1');
    const uri = `at://${DID}/${POST}/${rkey}`;
    const found = await p.lookup!(second);
    assert.deepEqual(found, { externalId: uri, externalUrl: `https://bsky.app/profile/${DID}/post/${rkey}`, replyRef: { uri, cid: server.records.get(rkey)?.cid } });

    // the retry policy instead: the same key again; the PDS refuses the key, the record is found
    const again = await p.publish(part(server, store, published, 1, 3));
    assert.deepEqual(again, found);
    assert.equal(server.records.size, 2, 'no second part 2');

    published.push(again);
    const third = await p.publish(part(server, store, published, 2, 3));
    assert.deepEqual(server.records.get(recordKeyFor('post-9.2'))?.value['reply'], { root: published[0]!.replyRef, parent: found.replyRef });
    assert.equal(third.replyRef?.['uri'], `at://${DID}/${POST}/${recordKeyFor('post-9.2')}`);
  });

  it('a part replying to a part without uri and cid fails before anything is sent', async () => {
    const server = await pds();
    const bare = { externalId: `at://${DID}/${POST}/3jzfcijpj2z2a`, externalUrl: null };
    const e = await rejects(() => publisher().publish(request(server, fresh(), { part: { index: 1, count: 2 }, replyTo: { root: bare, parent: bare } })), PermanentPublishError);
    assert.match(e.message, /part 2 of 2 replies to a part without its record's uri and cid/);
    assert.equal(server.calls.length, 0);
  });

  it("blob errors: over the PDS's upload limit (413) or the lexicon's 1,000,000 bytes (400 BlobTooLarge) fail the post naming the image", async () => {
    const server = await pds();
    const store = fresh();
    const p = publisher();
    server.uploadLimit = 100;
    const big = png('big', 'big.png', Buffer.concat([PNG, Buffer.alloc(200)]));
    const e413 = await rejects(() => p.publish(request(server, store, { images: [png('ok'), big] })), PermanentPublishError);
    assert.match(e413.message, /image 2 of 2 \(big\.png\): com\.atproto\.repo\.uploadBlob: HTTP 413 PayloadTooLarge: request entity too large/);
    assert.equal(server.count('com.atproto.repo.createRecord'), 0);

    server.uploadLimit = 5 * 1024 * 1024;
    const huge = png('huge', 'huge.png', Buffer.concat([PNG, Buffer.alloc(1_000_001 - PNG.length)]));
    const e400 = await rejects(() => p.publish(request(server, store, { idempotencyKey: 'huge', images: [png('ok'), huge] })), PermanentPublishError);
    assert.match(e400.message, /image 2 of 2 \(huge\.png\) too large for Bluesky \(at most 1000000 bytes\): com\.atproto\.repo\.createRecord: HTTP 400 BlobTooLarge: This file is too large/);
    assert.equal(server.records.size, 0);
  });

  it('blob upload: a 5xx or a cut is retried and never maybe delivered; an expired token is refreshed first', async () => {
    const server = await pds();
    const store = fresh();
    const p = publisher();
    server.uploadFaults.push({ kind: 'status', status: 502, body: { error: 'UpstreamFailure', message: 'Upstream Failure' } });
    const busy = await rejects(() => p.publish(request(server, store, { images: [png('dot')] })), RetryablePublishError);
    assert.equal(busy.maybeDelivered, false);
    assert.match(busy.message, /image 1 of 1 \(a\.png\): com\.atproto\.repo\.uploadBlob: HTTP 502/);

    server.uploadFaults.push({ kind: 'cut-after-write' });
    const cut = await rejects(() => p.publish(request(server, store, { images: [png('dot')] })), RetryablePublishError);
    assert.equal(cut.maybeDelivered, false, 'no record was written');
    assert.equal(server.records.size, 0);

    server.expireAccessTokens();
    const result = await publisher().publish(request(server, store, { images: [png('dot')] }));
    assert.ok(result.replyRef !== undefined, 'the published record has a replyRef');
    assert.deepEqual(
      server.calls.slice(-4).map((c) => c.path.replace('/xrpc/', '')),
      ['com.atproto.repo.uploadBlob', 'com.atproto.server.refreshSession', 'com.atproto.repo.uploadBlob', 'com.atproto.repo.createRecord'],
    );
    assert.equal(server.records.size, 1);
  });

  it("aspect ratio: width and height from a PNG, GIF, JPEG or WebP header; none from what is not one", async () => {
    const be16 = (n: number) => [n >> 8, n & 0xff];
    const le16 = (n: number) => [n & 0xff, n >> 8];
    const le24 = (n: number) => [n & 0xff, (n >> 8) & 0xff, n >> 16];
    const ascii = (s: string) => [...Buffer.from(s, 'latin1')];
    const png640x480 = Buffer.from([0x89, ...ascii('PNG\r\n\x1a\n'), 0, 0, 0, 13, ...ascii('IHDR'), 0, 0, ...be16(640), 0, 0, ...be16(480), 8, 6, 0, 0, 0]);
    const gif3x2 = Buffer.from([...ascii('GIF89a'), ...le16(3), ...le16(2), 0, 0, 0]);
    // SOI, an APP0 segment (skipped), then SOF2 (progressive): height 1080, width 1920
    const jpeg = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 16, ...ascii('JFIF\0'), 1, 1, 0, 0, 1, 0, 1, 0, 0, 0xff, 0xc2, 0, 17, 8, ...be16(1080), ...be16(1920), 3]);
    const vp8x = Buffer.from([...ascii('RIFF'), 0, 0, 0, 0, ...ascii('WEBPVP8X'), 10, 0, 0, 0, 0, 0, 0, 0, ...le24(799), ...le24(599), 0, 0]);
    // VP8L: a signature byte, then 14 bits width-1 and 14 bits height-1
    const bits = 99 | (49 << 14);
    const vp8l = Buffer.from([...ascii('RIFF'), 0, 0, 0, 0, ...ascii('WEBPVP8L'), 5, 0, 0, 0, 0x2f, bits & 0xff, (bits >> 8) & 0xff, (bits >> 16) & 0xff, (bits >>> 24) & 0xff, 0, 0, 0, 0, 0]);
    assert.deepEqual(
      [png640x480, gif3x2, jpeg, vp8x, vp8l, PNG, Buffer.from('not an image at all, just text'), png640x480.subarray(0, 20)].map(imageSize),
      [{ width: 640, height: 480 }, { width: 3, height: 2 }, { width: 1920, height: 1080 }, { width: 800, height: 600 }, { width: 100, height: 50 }, { width: 1, height: 1 }, null, null],
    );
    // in the record: none when the header does not tell
    const server = await pds();
    await publisher().publish(request(server, fresh(), { images: [png('wide', 'wide.png', png640x480), { bytes: Buffer.from('????'), mimeType: 'image/jpeg', alt: 'odd', filename: 'odd.jpg' }] }));
    const images = ((createBodies(server)[0]!['record'] as Json)['embed'] as Json)['images'] as Json[];
    assert.deepEqual(images[0]!['aspectRatio'], { width: 640, height: 480 });
    assert.equal('aspectRatio' in images[1]!, false);
  });
});
