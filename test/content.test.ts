import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import type { Post } from '../src/types.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './helpers/databases.ts';
import { killAll, ROOT, run, testEnv, type RunResult } from './helpers/processes.ts';

/**
 * Images and threads through the built CLI and real worker processes: `schedule
 * --image/--alt/--reply/--thread-file`, a cycle, what the file platform wrote, what the
 * database holds; refusals when scheduling; a thread whose second part fails once; image
 * URLs served on 127.0.0.1 and refused by the SSRF guard.
 */

/** The smallest images of each kind, as their first bytes tell them. */
const PNG = Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), Buffer.from('0000000d49484452000000010000000108060000001f15c489', 'hex')]);
const GIF = Buffer.from('GIF89a\x01\x00\x01\x00\x00\x00\x00;', 'latin1');
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface Line {
  id: number;
  text: string;
  idempotency_key: string;
  part?: number;
  parts?: number;
  reply_to?: string | null;
  images?: { filename: string; type: string; bytes: number; sha256: string; alt: string }[];
}

const ok = (r: RunResult) => assert.equal(r.code, 0, r.stdout + r.stderr);
const readLines = (file: string): Line[] =>
  fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim().split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Line) : [];

async function postsOf(db: TestDatabase, ids: readonly number[]): Promise<(Post | null)[]> {
  const store = await openStore(parseDatabaseUrl(db.url));
  try {
    return await Promise.all(ids.map((id) => store.getPost(id)));
  } finally {
    await store.close();
  }
}

/** A local image server: /pic.png, /pic.gif, /missing (404), /broken (500), /text (not an image). */
async function imageServer(): Promise<{ url: string; hits: string[]; close(): Promise<void> }> {
  const hits: string[] = [];
  const server = http.createServer((req, res) => {
    hits.push(req.url ?? '');
    const p = (req.url ?? '').split('?')[0];
    if (p === '/pic.png') res.writeHead(200, { 'content-type': 'text/plain' }).end(PNG);
    else if (p === '/pic.gif') res.writeHead(200).end(GIF);
    else if (p === '/broken') res.writeHead(500).end('no');
    else if (p === '/text') res.writeHead(200, { 'content-type': 'image/png' }).end('not an image at all');
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    hits,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

for (const dialect of DIALECTS) {
  describe(`content on ${dialect}`, () => {
    const dbs: TestDatabase[] = [];
    const servers: { close(): Promise<void> }[] = [];
    after(async () => {
      killAll();
      for (const s of servers) await s.close();
      for (const db of dbs) await db.drop();
    });
    const fresh = async (extra: Record<string, string> = {}) => {
      const db = await createTestDatabase(dialect);
      dbs.push(db);
      const env = testEnv(db.url, { MAX_ATTEMPTS: '3', RETRY_BASE_MS: '0', ...extra });
      ok(await run(['migrate'], env));
      return { db, env };
    };

    it('publishes images and threads to a file channel: every part in order, replying to the one before, on record', async () => {
      const { db, env } = await fresh();
      const server = await imageServer();
      servers.push(server);
      const out = path.join(db.dir, 'out.jsonl');
      ok(await run(['channels', 'add', '--name', 'local', '--platform', 'file', '--path', out], env));
      fs.writeFileSync(path.join(db.dir, 'cat.png'), PNG);
      fs.mkdirSync(path.join(db.dir, 'pics'));
      fs.writeFileSync(path.join(db.dir, 'pics', 'dog.gif'), GIF);
      // a relative --image: from the working directory (the CLI runs in ROOT), stored absolute
      const relative = path.relative(ROOT, path.join(db.dir, 'cat.png'));
      let r = await run(['schedule', '--channel', 'local', '--text', 'with a cat', '--image', relative, '--alt', 'a cat', '--image', `${server.url}/pic.gif?sig=SECRET`], env);
      ok(r);
      const pictured = Number(r.stdout.trim());
      r = await run(['schedule', '--channel', 'local', '--text', 'one', '--reply', 'two', '--reply', 'three'], env);
      ok(r);
      assert.match(r.stderr, /^Scheduled thread of 3 parts \d+ on local/);
      const replies = Number(r.stdout.trim());
      // a thread file: image paths relative to the file's folder
      const threadFile = path.join(db.dir, 'thread.json');
      fs.writeFileSync(
        threadFile,
        JSON.stringify([{ text: 'A' }, { text: 'B', images: [{ source: 'pics/dog.gif', alt: 'a dog' }, { source: `${server.url}/pic.png` }] }]),
      );
      r = await run(['schedule', '--channel', 'local', '--thread-file', threadFile], env);
      ok(r);
      const fromFile = Number(r.stdout.trim());

      const [before] = await postsOf(db, [pictured]);
      assert.deepEqual(before?.parts, [
        {
          text: 'with a cat',
          images: [
            { source: path.join(db.dir, 'cat.png'), alt: 'a cat' },
            { source: `${server.url}/pic.gif?sig=SECRET`, alt: '' },
          ],
        },
      ]);

      ok(await run(['cron'], env));
      const lines = readLines(out);
      const [p, t, f] = await postsOf(db, [pictured, replies, fromFile]);
      assert.deepEqual([p?.status, t?.status, f?.status], ['published', 'published', 'published'], JSON.stringify([p?.lastError, t?.lastError, f?.lastError]));

      const cat = lines.filter((l) => l.id === pictured);
      assert.equal(cat.length, 1);
      assert.equal(cat[0]?.part, undefined, 'a post of one part is written as before');
      assert.deepEqual(cat[0]?.images, [
        { filename: 'cat.png', type: 'image/png', bytes: PNG.length, sha256: sha(PNG), alt: 'a cat' },
        // the type from the bytes (the server said text/plain for the PNG; nothing for this GIF), the name without the query
        { filename: 'pic.gif', type: 'image/gif', bytes: GIF.length, sha256: sha(GIF), alt: '' },
      ]);

      const thread = lines.filter((l) => l.id === replies);
      assert.deepEqual(
        thread.map((l) => [l.text, l.part, l.parts]),
        [
          ['one', 1, 3],
          ['two', 2, 3],
          ['three', 3, 3],
        ],
      );
      const key = t?.idempotencyKey ?? '';
      assert.deepEqual(
        thread.map((l) => [l.idempotency_key, l.reply_to]),
        [
          [key, null],
          [`${key}.1`, key],
          [`${key}.2`, `${key}.1`],
        ],
      );
      assert.deepEqual(
        t?.publishedParts.map((x) => x.externalId),
        [key, `${key}.1`, `${key}.2`],
        'each part on record with its external id',
      );
      assert.equal(t?.externalId, key, "the thread's address is its first part's");

      const second = lines.find((l) => l.id === fromFile && l.part === 2);
      assert.deepEqual(second?.images, [
        { filename: 'dog.gif', type: 'image/gif', bytes: GIF.length, sha256: sha(GIF), alt: 'a dog' },
        { filename: 'pic.png', type: 'image/png', bytes: PNG.length, sha256: sha(PNG), alt: '' },
      ]);
      assert.equal(f?.publishedParts.length, 2);
    });

    it('refuses content a channel cannot take when scheduling, in one line naming the flag and the limit, and inserts nothing', async () => {
      const { db, env } = await fresh();
      const out = path.join(db.dir, 'out.jsonl');
      ok(await run(['channels', 'add', '--name', 'local', '--platform', 'file', '--path', out], env));
      ok(await run(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url', 'http://127.0.0.1:9/x', '--secret', 's'], env));
      const png = path.join(db.dir, 'ok.png');
      fs.writeFileSync(png, PNG);
      const notImage = path.join(db.dir, 'notes.png');
      fs.writeFileSync(notImage, 'just text, whatever the name says');
      const missing = path.join(db.dir, 'missing.png');
      const big = path.join(db.dir, 'big.png');
      fs.writeFileSync(big, Buffer.concat([PNG, Buffer.alloc(10 * 1024 * 1024)]));
      const threadFile = path.join(db.dir, 'bad.json');
      fs.writeFileSync(threadFile, JSON.stringify([{ text: 'fine' }, { text: '', images: [] }]));
      const cases: [string[], string][] = [
        [['--channel', 'hook', '--text', 'x', '--image', png], '--image does not fit channel hook: webhook takes text only, no images'],
        [['--channel', 'hook', '--text', 'x', '--reply', 'y'], '--reply does not fit channel hook: a thread of 2 parts; webhook publishes posts of one part only'],
        [
          ['--channel', 'local', '--text', 'x', '--image', png, '--alt', 'a'.repeat(1501)],
          `--alt does not fit channel local: the alt text of image 1 (${png}) is 1501 characters; file takes at most 1500`,
        ],
        [['--channel', 'local', '--text', 'x', '--image', missing], `--image does not fit channel local: image ${missing}: no such file`],
        [['--channel', 'local', '--text', 'x', '--image', notImage], `--image does not fit channel local: image ${notImage} is not a JPEG, PNG, GIF or WebP image`],
        [['--channel', 'local', '--text', 'x', '--image', big], `--image does not fit channel local: image ${big} is ${PNG.length + 10 * 1024 * 1024} bytes; the most is ${10 * 1024 * 1024} bytes`],
        [
          ['--channel', 'local', '--text', 'x', '--reply', 'y', '--image', 'ftp://example.com/a.png'],
          '--image does not fit channel local: part 1 of 2: image ftp://example.com/a.png: only a file path or an http(s) URL (not ftp:)',
        ],
        [['--channel', 'local', '--text', 'x', '--alt', 'lonely'], '--alt: 1 given for 0 --image; each --alt goes with the --image of the same rank'],
        [['--channel', 'local', '--thread-file', threadFile, '--text', 'x'], '--thread-file gives the whole content: leave out --text'],
        [['--channel', 'local', '--thread-file', threadFile], `--thread-file ${threadFile}: part 2: text is empty (only a part with images may have none)`],
        [['--channel', 'local', '--text', 'x', '--reply', ' '], '--reply 1: the text is empty'],
      ];
      for (const [args, message] of cases) {
        const r = await run(['schedule', ...args], env);
        assert.equal(r.stderr, `post-scheduler: ${message}\n`, args.join(' '));
        assert.equal(r.code, 1);
        assert.equal(r.stdout, '');
      }
      const r = await run(['status', '--json'], env);
      ok(r);
      const counts = (JSON.parse(r.stdout) as { counts: Record<string, number> }).counts;
      assert.ok(Object.values(counts).every((n) => n === 0), JSON.stringify(counts));
    });

    it('content that got in anyway fails alone when it is due, for good, naming the limit', async () => {
      const { db, env } = await fresh();
      const out = path.join(db.dir, 'out.jsonl');
      ok(await run(['channels', 'add', '--name', 'local', '--platform', 'file', '--path', out], env));
      ok(await run(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url', 'http://127.0.0.1:9/x', '--secret', 's'], env));
      const png = path.join(db.dir, 'gone.png');
      fs.writeFileSync(png, PNG);
      let r = await run(['schedule', '--channel', 'local', '--text', 'its image will be gone', '--image', png], env);
      ok(r);
      const gone = Number(r.stdout.trim());
      fs.rmSync(png);
      r = await run(['schedule', '--channel', 'local', '--text', 'fine'], env);
      ok(r);
      const fine = Number(r.stdout.trim());
      // past the CLI: a thread with an image on a text-only channel
      const store = await openStore(parseDatabaseUrl(db.url));
      let sneaked: number;
      try {
        const hook = await store.findChannel('hook');
        [sneaked = 0] = await store.schedulePosts([
          { channelId: hook?.id ?? 0, text: 'a', runAt: new Date(), parts: [{ text: 'a', images: [] }, { text: 'b', images: [] }] },
        ]);
      } finally {
        await store.close();
      }
      ok(await run(['cron'], env));
      const [g, f, s] = await postsOf(db, [gone, fine, sneaked]);
      assert.deepEqual([g?.status, g?.attempts, g?.lastError], ['failed', 1, `content does not fit channel local: image ${png}: no such file`]);
      assert.deepEqual([s?.status, s?.attempts, s?.lastError], ['failed', 1, 'content does not fit channel hook: a thread of 2 parts; webhook publishes posts of one part only']);
      assert.equal(f?.status, 'published');
      assert.deepEqual(readLines(out).map((l) => l.id), [fine]);
    });

    it('a thread whose second part fails once resumes from it: the first part is never sent twice, every id ends on record', async () => {
      const { db, env: base } = await fresh();
      const moduleDir = path.join(db.dir, 'modules');
      fs.mkdirSync(moduleDir);
      const calls = path.join(db.dir, 'calls.jsonl');
      const failedOnce = path.join(db.dir, 'failed-once');
      fs.writeFileSync(
        path.join(moduleDir, 'thread.mjs'),
        `
import { appendFileSync, existsSync, writeFileSync } from 'node:fs';
class RetryablePublishError extends Error { name = 'RetryablePublishError'; }
export default {
  threads: true,
  createPublisher() {
    return {
      async publish(request) {
        appendFileSync(${JSON.stringify(calls)}, JSON.stringify({ index: request.part.index, count: request.part.count, text: request.text,
          key: request.idempotencyKey, root: request.replyTo?.root.externalId ?? null, parent: request.replyTo?.parent.externalId ?? null }) + '\\n');
        if (request.part.index === 1 && !existsSync(${JSON.stringify(failedOnce)})) {
          writeFileSync(${JSON.stringify(failedOnce)}, '');
          throw new RetryablePublishError('the network is busy');
        }
        return { externalId: 'x-' + request.part.index, externalUrl: 'https://net.example/' + request.part.index };
      },
      async close() {},
    };
  },
};
`,
      );
      const env = { ...base, MODULE_DIR: moduleDir };
      ok(await run(['channels', 'add', '--name', 'mod', '--platform', 'module', '--module', path.join(moduleDir, 'thread.mjs'), '--on-unknown', 'hold'], env));
      const r = await run(['schedule', '--channel', 'mod', '--text', 'one', '--reply', 'two', '--reply', 'three'], env);
      ok(r);
      const id = Number(r.stdout.trim());
      let post: Post | null | undefined = null;
      for (let cycle = 0; cycle < 5; cycle++) {
        ok(await run(['cron'], env));
        [post] = await postsOf(db, [id]);
        if (post?.status === 'published') break;
      }
      assert.equal(post?.status, 'published', post?.lastError ?? '');
      const sent = readLines(calls) as unknown as { index: number; count: number; text: string; key: string; root: string | null; parent: string | null }[];
      assert.deepEqual(
        sent.map((s) => s.index),
        [0, 1, 1, 2],
        'part 1 once; part 2 failed and was sent again; then part 3',
      );
      assert.deepEqual(sent[3], { index: 2, count: 3, text: 'three', key: `${post.idempotencyKey}.2`, root: 'x-0', parent: 'x-1' });
      assert.equal(post.lastError, 'part 2 of 3: the network is busy');
      assert.equal(post.attempts, 2);
      assert.deepEqual(post.publishedParts, [
        { externalId: 'x-0', externalUrl: 'https://net.example/0' },
        { externalId: 'x-1', externalUrl: 'https://net.example/1' },
        { externalId: 'x-2', externalUrl: 'https://net.example/2' },
      ]);
      assert.deepEqual([post.externalId, post.externalUrl], ['x-0', 'https://net.example/0']);
    });

    it('a thread part that may have been delivered is looked up under the check policy, and not sent again when found', async () => {
      const { db, env: base } = await fresh();
      const moduleDir = path.join(db.dir, 'modules');
      fs.mkdirSync(moduleDir);
      const calls = path.join(db.dir, 'calls.jsonl');
      const delivered = path.join(db.dir, 'delivered.jsonl');
      fs.writeFileSync(
        path.join(moduleDir, 'checking.mjs'),
        `
import { appendFileSync, existsSync, readFileSync } from 'node:fs';
class RetryablePublishError extends Error {
  name = 'RetryablePublishError';
  constructor(message) { super(message); this.maybeDelivered = true; }
}
const log = (what, request) => appendFileSync(${JSON.stringify(calls)}, JSON.stringify({ what, index: request.part.index, key: request.idempotencyKey }) + '\\n');
const sent = () => existsSync(${JSON.stringify(delivered)}) ? readFileSync(${JSON.stringify(delivered)}, 'utf8').trim().split('\\n').map((l) => JSON.parse(l)) : [];
export default {
  threads: true,
  canLookUp: true,
  createPublisher() {
    return {
      async publish(request) {
        log('publish', request);
        const result = { key: request.idempotencyKey, externalId: 'y-' + request.part.index, externalUrl: null };
        appendFileSync(${JSON.stringify(delivered)}, JSON.stringify(result) + '\\n');
        // the second part goes out, and its answer is lost
        if (request.part.index === 1 && sent().filter((r) => r.key === request.idempotencyKey).length === 1) throw new RetryablePublishError('no answer after the request was sent');
        return { externalId: result.externalId, externalUrl: null };
      },
      async lookup(request) {
        log('lookup', request);
        const found = sent().find((r) => r.key === request.idempotencyKey);
        return found === undefined ? null : { externalId: found.externalId, externalUrl: null };
      },
      async close() {},
    };
  },
};
`,
      );
      const env = { ...base, MODULE_DIR: moduleDir };
      ok(await run(['channels', 'add', '--name', 'mod', '--platform', 'module', '--module', path.join(moduleDir, 'checking.mjs'), '--on-unknown', 'check'], env));
      const r = await run(['schedule', '--channel', 'mod', '--text', 'one', '--reply', 'two', '--reply', 'three'], env);
      ok(r);
      const id = Number(r.stdout.trim());
      let post: Post | null | undefined = null;
      for (let cycle = 0; cycle < 5; cycle++) {
        ok(await run(['cron'], env));
        [post] = await postsOf(db, [id]);
        if (post?.status === 'published') break;
      }
      assert.equal(post?.status, 'published', post?.lastError ?? '');
      const key = post.idempotencyKey;
      assert.deepEqual(
        readLines(calls).map((l) => l as unknown as { what: string; index: number; key: string }).map((c) => [c.what, c.index, c.key]),
        [
          ['publish', 0, key],
          ['publish', 1, `${key}.1`],
          ['lookup', 1, `${key}.1`],
          ['publish', 2, `${key}.2`],
        ],
      );
      assert.equal(post.lastError, 'part 2 of 3: no answer after the request was sent');
      assert.deepEqual(post.publishedParts.map((p) => p.externalId), ['y-0', 'y-1', 'y-2']);
    });

    it('reads image URLs on 127.0.0.1 only when private addresses are allowed; a 404 or a non-image fails the post, a 500 is retried', async () => {
      const server = await imageServer();
      servers.push(server);
      const guarded = await fresh({ ALLOW_PRIVATE_NETWORK: 'false', MAX_ATTEMPTS: '1' });
      const out = path.join(guarded.db.dir, 'out.jsonl');
      ok(await run(['channels', 'add', '--name', 'local', '--platform', 'file', '--path', out], guarded.env));
      const schedule = async (env: NodeJS.ProcessEnv, url: string) => {
        const r = await run(['schedule', '--channel', 'local', '--text', 'x', '--image', url], env);
        ok(r);
        return Number(r.stdout.trim());
      };
      const refused = await schedule(guarded.env, `${server.url}/pic.png?token=SECRET`);
      ok(await run(['cron'], guarded.env));
      const [r0] = await postsOf(guarded.db, [refused]);
      assert.equal(r0?.status, 'failed');
      assert.equal(
        r0?.lastError,
        `image ${server.url}/pic.png: refused to connect to a loopback, private or link-local address (SSRF protection); allow it with ALLOW_PRIVATE_NETWORK=true or the channel's allow_private_network`,
      );
      assert.deepEqual(server.hits, [], 'nothing reached the server');
      assert.deepEqual(readLines(out), []);

      const open = await fresh({ MAX_ATTEMPTS: '2', RETRY_BASE_MS: '600000', RETRY_MAX_MS: '600000' });
      const out2 = path.join(open.db.dir, 'out.jsonl');
      ok(await run(['channels', 'add', '--name', 'local', '--platform', 'file', '--path', out2], open.env));
      const ids = [
        await schedule(open.env, `${server.url}/pic.png`),
        await schedule(open.env, `${server.url}/missing.png?k=SECRET`),
        await schedule(open.env, `${server.url}/text`),
        await schedule(open.env, `${server.url}/broken`),
      ];
      ok(await run(['cron'], open.env));
      const [good, missing, text, broken] = await postsOf(open.db, ids);
      assert.equal(good?.status, 'published', good?.lastError ?? '');
      assert.deepEqual([missing?.status, missing?.lastError], ['failed', `image ${server.url}/missing.png: HTTP 404`]);
      assert.deepEqual([text?.status, text?.lastError], ['failed', `image ${server.url}/text is not a JPEG, PNG, GIF or WebP image`]);
      assert.equal(broken?.status, 'pending', 'a 5xx may pass: retried later');
      assert.match(broken?.lastError ?? '', new RegExp(`^image ${server.url}/broken: HTTP 500$`));
      assert.deepEqual(readLines(out2).map((l) => [l.id, l.images?.[0]?.sha256]), [[ids[0], sha(PNG)]]);
    });
  });
}
