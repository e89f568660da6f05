import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './helpers/databases.ts';
import { killAll, run, start, testEnv, waitFor, type Running } from './helpers/processes.ts';
import { startReceiver } from './helpers/receiver.ts';

const TOKEN = 'api-test-token-0123456789abcdef';
const URL_TOKEN = 'urltoken-9f8e7d6c5b4a';
const SIGNING_SECRET = 'signing-secret-a1b2c3d4e5f6';

async function serve(env: NodeJS.ProcessEnv): Promise<{ proc: Running; url: string }> {
  const proc = start(['serve', '--port', '0'], env, 180_000);
  let url = '';
  await waitFor('serve prints its address', () => {
    url = /Listening on (http:\/\/\S+)/.exec(proc.output())?.[1] ?? '';
    return url !== '';
  });
  return { proc, url };
}

async function stop(proc: Running): Promise<void> {
  proc.child.kill('SIGTERM');
  const r = await proc.done;
  assert.equal(r.code, 0, r.stderr);
}

interface Answer {
  status: number;
  text: string;
  json: Record<string, unknown>;
}

/** One call of the API with the token; the raw text is kept (to look for secrets in it). */
function client(url: string, token: string | null) {
  return async (method: string, route: string, body?: unknown, headers: Record<string, string> = {}): Promise<Answer> => {
    const res = await fetch(`${url}${route}`, {
      method,
      headers: { ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    return { status: res.status, text, json: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) };
  };
}

/** One request with headers fetch will not send as given (Host, Origin, Sec-Fetch-Site): status and body. */
function raw(url: string, method: string, route: string, headers: Record<string, string>, body?: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${route}`, { method, headers: { ...headers, ...(method === 'GET' || method === 'HEAD' ? {} : { 'content-length': String(Buffer.byteLength(body ?? '')) }) }, timeout: 30_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${route}: no answer in 30 s`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** The first bytes of a PNG: enough for the type check. */
const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0]);

for (const dialect of DIALECTS) {
  describe(`HTTP API on ${dialect}`, () => {
    const dbs: TestDatabase[] = [];
    const media = fs.mkdtempSync(path.join(os.tmpdir(), 'api-media-'));
    const outside = fs.mkdtempSync(path.join(os.tmpdir(), 'api-outside-'));
    after(async () => {
      killAll();
      for (const db of dbs) await db.drop();
      fs.rmSync(media, { recursive: true, force: true });
      fs.rmSync(outside, { recursive: true, force: true });
    });

    it('schedules, lists, shows, edits, cancels, retries and marks published; manages channels; shows cycles and activity', async () => {
      const db = await createTestDatabase(dialect);
      dbs.push(db);
      fs.writeFileSync(path.join(outside, 'secret.png'), 'not yours');
      fs.symlinkSync(path.join(outside, 'secret.png'), path.join(media, 'link.png'));
      const env = testEnv(db.url, { API_TOKEN: TOKEN, MEDIA_DIR: media });
      const receiver = await startReceiver((d) => (d.body.includes('bad') ? { status: 400, body: '{"error":"no"}' } : { status: 200 }));
      const { proc, url } = await serve(env);
      const api = client(url, TOKEN);
      /** every answer scanned for secrets: the channels', the posts' with their attempts */
      const channelAnswers: string[] = [];
      try {
        let r = await run(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url', `${receiver.url}/in?token=${URL_TOKEN}`, '--secret', SIGNING_SECRET], env);
        assert.equal(r.code, 0, r.stderr);
        r = await run(['channels', 'add', '--name', 'spare', '--platform', 'file', '--path', path.join(outside, 'out.jsonl')], env);
        assert.equal(r.code, 0, r.stderr);

        // schedule: 201, the same key again 200 with the same id, another content 409
        const first = await api('POST', '/api/posts', { channel: 'hook', text: 'ok one', key: 'order-1' });
        assert.equal(first.status, 201, first.text);
        assert.equal(first.json['created'], true);
        assert.equal(first.json['channel'], 'hook');
        const again = await api('POST', '/api/posts', { channel: 'hook', text: 'ok one' }, { 'Idempotency-Key': 'order-1' });
        assert.equal(again.status, 200, again.text);
        assert.deepEqual([again.json['id'], again.json['created']], [first.json['id'], false]);
        const reused = await api('POST', '/api/posts', { channel: 'hook', text: 'something else', key: 'order-1' });
        assert.equal(reused.status, 409);
        assert.match(String(reused.json['error']), /order-1/);
        const both = await api('POST', '/api/posts', { channel: 'hook', text: 'ok', key: 'a' }, { 'Idempotency-Key': 'b' });
        assert.equal(both.status, 400);

        // bad input: 400 naming the field; unknown channel 404; images outside MEDIA_DIR 400
        const bad = await api('POST', '/api/posts', { channel: 'hook', text: 42 });
        assert.equal(bad.status, 400);
        assert.equal(bad.json['field'], 'text');
        assert.match(String(bad.json['error']), /^body\.text: /);
        const unknownField = await api('POST', '/api/posts', { channel: 'hook', text: 'x', colour: 'red' });
        assert.deepEqual([unknownField.status, unknownField.json['field']], [400, 'colour']);
        const badAt = await api('POST', '/api/posts', { channel: 'hook', text: 'x', at: 'next tuesday' });
        assert.deepEqual([badAt.status, badAt.json['field']], [400, 'at']);
        assert.equal((await api('POST', '/api/posts', { channel: 'nowhere', text: 'x' })).status, 404);
        for (const source of ['../' + path.basename(outside) + '/secret.png', path.join(outside, 'secret.png'), 'link.png', 'file:///etc/passwd']) {
          const escaped = await api('POST', '/api/posts', { channel: 'hook', text: 'x', images: [{ source }] });
          assert.equal(escaped.status, 400, `${source}: ${escaped.text}`);
          assert.equal(escaped.json['field'], 'images.0.source');
        }
        const notJson = await api('POST', '/api/posts', '{"channel":');
        assert.equal(notJson.status, 400);
        const huge = await api('POST', '/api/posts', { channel: 'hook', text: 'x'.repeat(1_100_000) });
        assert.equal(huge.status, 413);

        // a channel's own limits: webhooks take one part
        const thread = await api('POST', '/api/posts', { channel: 'hook', text: 'one', replies: ['two'] });
        assert.deepEqual([thread.status, thread.json['field']], [400, 'parts']);

        // more posts: two due (one fails), one given as parts, one later, one on the spare channel
        const ids: number[] = [Number(first.json['id'])];
        for (const body of [
          { channel: 'hook', text: 'bad one' },
          { channel: 'hook', parts: [{ text: 'in parts' }] },
          { channel: 'hook', text: 'later', at: '+2h' },
          { channel: 'spare', text: 'spare post', at: '+1d' },
        ]) {
          const made = await api('POST', '/api/posts', body);
          assert.equal(made.status, 201, made.text);
          ids.push(Number(made.json['id']));
        }
        const [okId, badId, threadId, laterId, spareId] = ids as [number, number, number, number, number];

        // list: filters and pages
        let list = await api('GET', '/api/posts?channel=hook&order=next&limit=2');
        assert.equal(list.status, 200);
        const page1 = list.json['posts'] as { id: number }[];
        assert.equal(page1.length, 2);
        const next = list.json['next'];
        assert.equal(typeof next, 'string');
        list = await api('GET', `/api/posts?channel=hook&order=next&limit=2&cursor=${encodeURIComponent(String(next))}`);
        const page2 = list.json['posts'] as { id: number }[];
        assert.equal(page2.length, 2);
        assert.equal(list.json['next'], null);
        assert.deepEqual([...page1, ...page2].map((p) => p.id).sort((a, b) => a - b), [okId, badId, threadId, laterId]);
        list = await api('GET', `/api/posts?from=${encodeURIComponent(new Date(Date.now() + 3_600_000).toISOString())}`);
        assert.deepEqual((list.json['posts'] as { id: number }[]).map((p) => p.id), [laterId, spareId]);
        assert.equal((await api('GET', '/api/posts?status=sleeping')).json['field'], 'status');
        assert.equal((await api('GET', '/api/posts?limit=5000')).status, 400);

        // edit: 200 while pending
        const edited = await api('PATCH', `/api/posts/${laterId}`, { text: 'later, edited', at: '+3h' });
        assert.equal(edited.status, 200, edited.text);
        assert.deepEqual((edited.json['post'] as { parts: unknown }).parts, [{ text: 'later, edited', images: [] }]);
        assert.equal((await api('PATCH', '/api/posts/999999', { text: 'x' })).status, 404);

        // a real cycle against the receiver
        r = await run(['cron'], env);
        assert.equal(r.code, 0, r.stdout + r.stderr);

        const shown = await api('GET', `/api/posts/${okId}`);
        assert.equal(shown.status, 200);
        channelAnswers.push(shown.text, (await api('GET', `/api/posts/${badId}`)).text);
        const post = shown.json['post'] as Record<string, unknown>;
        assert.equal(post['status'], 'published');
        assert.equal(typeof post['publishedAt'], 'string');
        const attempts = shown.json['attempts'] as { outcome: string; workerId: string }[];
        assert.deepEqual(attempts.map((a) => a.outcome), ['published']);
        assert.ok(attempts[0]?.workerId);
        assert.equal(((await api('GET', `/api/posts/${badId}`)).json['post'] as { status: string }).status, 'failed');
        assert.equal((await api('GET', '/api/posts/999999')).status, 404);
        assert.equal((await api('GET', '/api/posts/abc')).json['field'], 'id');

        // edit after publish: 409
        assert.equal((await api('PATCH', `/api/posts/${okId}`, { text: 'too late' })).status, 409);

        // retry, cancel, mark-published by id: new status, 409 naming the status, 404
        const retried = await api('POST', `/api/posts/${badId}/retry`);
        assert.deepEqual(retried.json, { id: badId, status: 'pending' });
        const notRetry = await api('POST', `/api/posts/${okId}/retry`);
        assert.equal(notRetry.status, 409);
        assert.match(String(notRetry.json['error']), /published/);
        assert.equal((await api('POST', '/api/posts/999999/cancel')).status, 404);
        assert.deepEqual((await api('POST', `/api/posts/${badId}/cancel`)).json, { id: badId, status: 'cancelled' });
        // an unknown outcome (held for an operator), put there through the store
        const store = await openStore(parseDatabaseUrl(db.url));
        try {
          await store.editPost(laterId, { runAt: new Date(Date.now() - 1000) });
          const [claimed] = await store.claim('test-worker', 1, 60_000);
          assert.equal(claimed?.id, laterId);
          await store.recordOutcomes('test-worker', [{ kind: 'unknown', postId: laterId, token: claimed.token, error: 'timed out' }]);
        } finally {
          await store.close();
        }
        assert.equal((await api('POST', `/api/posts/${okId}/mark-published`)).status, 409);
        assert.deepEqual((await api('POST', `/api/posts/${laterId}/mark-published`)).json, { id: laterId, status: 'published' });

        // in bulk
        const bulkCancel = await api('POST', '/api/posts/cancel', { ids: [spareId, okId] });
        assert.deepEqual(bulkCancel.json, { cancelled: [spareId], refused: [{ id: okId, status: 'published' }] });
        const bulkRetry = await api('POST', '/api/posts/retry', { ids: [okId] });
        assert.deepEqual(bulkRetry.json, { requeued: [], refused: [{ id: okId, status: 'published' }] });
        assert.deepEqual((await api('POST', '/api/posts/retry', { failed: true })).json, { requeued: [], refused: [] });
        assert.equal((await api('POST', '/api/posts/retry', {})).status, 400);

        // channels: list, pause, resume, update, remove (409 with posts)
        const channels = await api('GET', '/api/channels');
        channelAnswers.push(channels.text);
        assert.deepEqual(
          (channels.json['channels'] as { name: string; platform: string }[]).map((c) => [c.name, c.platform]),
          [['hook', 'webhook'], ['spare', 'file']],
        );
        const paused = await api('POST', '/api/channels/hook/pause');
        channelAnswers.push(paused.text);
        assert.equal(typeof (paused.json['channel'] as { pausedAt: unknown }).pausedAt, 'string');
        const resumed = await api('POST', '/api/channels/hook/resume');
        channelAnswers.push(resumed.text);
        assert.equal((resumed.json['channel'] as { pausedAt: unknown }).pausedAt, null);
        assert.equal((await api('POST', '/api/channels/none/pause')).status, 404);
        const rotated = await api('PATCH', '/api/channels/hook', { url: `${receiver.url}/new?token=${URL_TOKEN}2`, secret: `${SIGNING_SECRET}2` });
        channelAnswers.push(rotated.text);
        assert.equal(rotated.status, 200, rotated.text);
        assert.equal((await api('PATCH', '/api/channels/spare', { secret: 'x' })).status, 400);
        const pending = await api('POST', '/api/posts', { channel: 'hook', text: 'waits', at: '+1d' });
        assert.equal(pending.status, 201);
        const refusedRemove = await api('DELETE', '/api/channels/hook');
        assert.equal(refusedRemove.status, 409);
        assert.match(String(refusedRemove.json['error']), /1 pending/);
        const removed = await api('DELETE', '/api/channels/hook?cancelPosts=true');
        assert.deepEqual(removed.json, { removed: true, cancelled: 1 });
        channelAnswers.push((await api('GET', '/api/channels')).text);
        for (const text of channelAnswers) {
          for (const secret of [URL_TOKEN, SIGNING_SECRET, receiver.url, '/in?', '/new?']) assert.ok(!text.includes(secret), `a channel answer shows ${secret}: ${text}`);
        }

        // history: the cycle with its worker runs, activity, status
        const cycles = await api('GET', '/api/cycles?limit=5');
        const [cycle] = cycles.json['cycles'] as { state: string; pending: number; runs: { exitCode: number; published: number; durationMs: number }[] }[];
        assert.ok(cycle !== undefined);
        assert.equal(cycle.state, 'finished');
        assert.equal(cycle.pending, 3);
        assert.ok(cycle.runs.length >= 1);
        assert.equal(cycle.runs.reduce((n, run) => n + run.published, 0), 2, 'ok one and the one in parts');
        assert.ok(cycle.runs.every((run) => run.exitCode === 0 && run.durationMs >= 0));
        const activity = await api('GET', '/api/activity?hours=1');
        assert.equal(activity.json['bucketMs'], 60_000);
        const sum = (key: string) => (activity.json[key] as { posts: number }[]).reduce((n, x) => n + x.posts, 0);
        // published: ok one, the one in parts, the post marked published; bad one was retried then cancelled
        assert.equal(sum('published'), 3);
        assert.equal(sum('failed'), 0);
        assert.deepEqual((activity.json['backlog'] as { due: number }[]).map((b) => b.due), [3]);
        assert.equal((await api('GET', '/api/activity?hours=49')).json['field'], 'hours');
        const status = await api('GET', '/api/status');
        // no secret in what the status, a post's attempts or the server's log show
        for (const text of [status.text, ...channelAnswers, proc.output()]) {
          for (const secret of [URL_TOKEN, SIGNING_SECRET, TOKEN, '/in?', '/new?']) assert.ok(!text.includes(secret), `an answer or the log shows ${secret}: ${text.slice(0, 2000)}`);
        }
        r = await run(['status', '--json'], env);
        const cli = JSON.parse(r.stdout) as { counts: unknown; database: string };
        assert.deepEqual(status.json['counts'], cli.counts);
        assert.equal(status.json['database'], cli.database);
      } finally {
        await stop(proc);
        await receiver.close();
      }
    });

    it('needs the token (not /healthz, /openapi.json); refuses image paths without MEDIA_DIR; /openapi.json lists every route and its invalid requests get 400', async () => {
      const db = await createTestDatabase(dialect);
      dbs.push(db);
      // a server whose local time is not UTC (from/to below)
      const env = testEnv(db.url, { API_TOKEN: TOKEN, TZ: 'Asia/Tokyo' });
      const { proc, url } = await serve(env);
      try {
        const r = await run(['channels', 'add', '--name', 'spare', '--platform', 'file', '--path', path.join(outside, 'out2.jsonl')], env);
        assert.equal(r.code, 0, r.stderr);
        const anonymous = client(url, null);
        for (const route of ['/api/posts', '/api/channels', '/api/status', '/api/cycles', '/api/activity']) assert.equal((await anonymous('GET', route)).status, 401, route);
        assert.equal((await client(url, 'wrong-token-0123456789abc')('POST', '/api/posts', { channel: 'spare', text: 'x' })).status, 401);
        assert.equal((await anonymous('GET', '/healthz')).status, 200);
        const doc = await anonymous('GET', '/openapi.json');
        assert.equal(doc.status, 200);
        assert.equal(doc.json['openapi'], '3.1.0');

        const api = client(url, TOKEN);
        const noMedia = await api('POST', '/api/posts', { channel: 'spare', text: 'x', images: [{ source: path.join(outside, 'x.png') }] });
        assert.equal(noMedia.status, 400);
        assert.match(String(noMedia.json['error']), /MEDIA_DIR/);

        // every /api/ route of the contract is in the document with its method
        const paths = doc.json['paths'] as Record<string, Record<string, { requestBody?: { content: { 'application/json': { schema: { required?: string[] } } } }; parameters: { in: string }[] }>>;
        const routes = [
          ['get', '/api/posts'],
          ['post', '/api/posts'],
          ['get', '/api/posts/{id}'],
          ['patch', '/api/posts/{id}'],
          ['post', '/api/posts/{id}/retry'],
          ['post', '/api/posts/{id}/mark-published'],
          ['post', '/api/posts/{id}/cancel'],
          ['post', '/api/posts/cancel'],
          ['post', '/api/posts/retry'],
          ['get', '/api/channels'],
          ['post', '/api/channels/{name}/pause'],
          ['post', '/api/channels/{name}/resume'],
          ['delete', '/api/channels/{name}'],
          ['patch', '/api/channels/{name}'],
          ['get', '/api/status'],
          ['get', '/api/cycles'],
          ['get', '/api/activity'],
        ] as const;
        const documented = Object.entries(paths).flatMap(([p, methods]) => Object.keys(methods).map((m) => `${m} ${p}`));
        assert.deepEqual(documented.sort(), routes.map(([m, p]) => `${m} ${p}`).sort());
        // each required body field the document names: leaving it out is answered 400 naming it
        for (const [method, p] of routes) {
          const required = paths[p]?.[method]?.requestBody?.content['application/json'].schema.required ?? [];
          for (const field of required) {
            const concrete = p.replace('{id}', '1').replace('{name}', 'spare');
            const answer = await api(method.toUpperCase(), concrete, {});
            assert.equal(answer.status, 400, `${method} ${p} without ${field}: ${answer.text}`);
            assert.equal(answer.json['field'], field);
          }
        }
        assert.ok((paths['/api/posts']?.['post']?.requestBody?.content['application/json'].schema.required ?? []).includes('channel'));
        // the answers that happen are listed
        const answers = (m: string, p: string) => Object.keys((doc.json['paths'] as Record<string, Record<string, { responses: object }>>)[p]?.[m]?.responses ?? {}).sort();
        assert.deepEqual(answers('post', '/api/posts'), ['200', '201', '400', '401', '403', '404', '409', '413', '415']);
        assert.deepEqual(answers('patch', '/api/channels/{name}'), ['200', '400', '401', '403', '404', '409', '413', '415']);
        assert.deepEqual(answers('get', '/api/status'), ['200', '401']);

        // from/to as `at` reads them: UTC when no zone is given, whatever the server's TZ; never a number
        const later = await api('POST', '/api/posts', { channel: 'spare', text: 'in 2030', at: '2030-01-01T10:00:00Z' });
        assert.equal(later.status, 201, later.text);
        const listed = (query: string) => api('GET', `/api/posts?${query}`);
        assert.deepEqual(((await listed('from=2030-01-01T10:30')).json['posts'] as unknown[]).length, 0, 'read as 10:30 UTC, not 10:30 in Tokyo');
        assert.deepEqual(((await listed('from=2030-01-01T09:30')).json['posts'] as { id: number }[]).map((p) => p.id), [Number(later.json['id'])]);
        for (const bad of ['from=1', 'to=1', 'from=tomorrow', 'to=%2B1h']) assert.equal((await listed(bad)).status, 400, bad);
        assert.ok((paths['/api/posts/cancel']?.['post']?.requestBody?.content['application/json'].schema.required ?? []).includes('ids'));
      } finally {
        await stop(proc);
      }
    });
    it('without API_TOKEN: answers only to a loopback Host, refuses requests from other sites, takes HEAD and bodyless POSTs', async () => {
      const db = await createTestDatabase(dialect);
      dbs.push(db);
      const env = testEnv(db.url, {});
      delete env['API_TOKEN'];
      const { proc, url } = await serve(env);
      try {
        const r = await run(['channels', 'add', '--name', 'spare', '--platform', 'file', '--path', path.join(outside, 'out3.jsonl')], env);
        assert.equal(r.code, 0, r.stderr);
        const api = client(url, null);
        const made = await api('POST', '/api/posts', { channel: 'spare', text: 'x', at: '+1d' });
        assert.equal(made.status, 201, made.text);
        const id = Number(made.json['id']);
        const host = new URL(url).host;
        const port = new URL(url).port;
        // a page of another site: a form-like text/plain body, an Origin, Sec-Fetch-Site
        const refusals: [Record<string, string>, string | undefined][] = [
          [{ host, 'content-type': 'text/plain', origin: 'https://evil.example' }, 'x'],
          [{ host, 'content-type': 'text/plain' }, '{}'],
          [{ host, 'content-type': 'application/x-www-form-urlencoded' }, 'a=b'],
          [{ host, 'content-type': 'application/json', origin: 'https://evil.example' }, '{}'],
          [{ host, origin: 'https://evil.example' }, undefined],
          [{ host, 'sec-fetch-site': 'cross-site' }, undefined],
          [{ host, 'sec-fetch-site': 'same-site' }, undefined],
          [{ host, origin: `http://localhost:${Number(port) + 1}` }, undefined],
        ];
        for (const [headers, body] of refusals) {
          const answer = await raw(url, 'POST', `/api/posts/${id}/cancel`, headers, body);
          assert.equal(answer.status, 403, `${JSON.stringify(headers)}: ${answer.text}`);
          assert.match(answer.text, /^\{"error":"forbidden: [^\n]+"\}$/);
        }
        // DNS rebinding: another name for this address is refused, reads too
        for (const name of ['evil.example', `evil.example:${port}`, `127.0.0.1.evil.example:${port}`]) {
          assert.equal((await raw(url, 'GET', '/api/posts', { host: name })).status, 403, name);
        }
        for (const name of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, 'localhost']) {
          assert.equal((await raw(url, 'GET', '/api/posts', { host: name })).status, 200, name);
        }
        assert.equal(((await api('GET', `/api/posts/${id}`)).json['post'] as { status: string }).status, 'pending', 'none of them cancelled it');
        // the same origin (the dashboard) and clients that send no Origin: taken
        const head = await raw(url, 'HEAD', '/api/posts', { host });
        assert.equal(head.status, 200);
        const same = await raw(url, 'POST', '/api/posts', { host, 'content-type': 'application/json', origin: `http://${host}`, 'sec-fetch-site': 'same-origin' }, JSON.stringify({ channel: 'spare', text: 'y', at: '+1d' }));
        assert.equal(same.status, 201, same.text);
        const bodyless = await api('POST', `/api/posts/${id}/cancel`);
        assert.deepEqual(bodyless.json, { id, status: 'cancelled' });
      } finally {
        await stop(proc);
      }
    });

    it('image paths: inside MEDIA_DIR published; outside refused alike before any file is read; a symlink swapped in after scheduling is refused at publish time', async () => {
      const db = await createTestDatabase(dialect);
      dbs.push(db);
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'api-media2-'));
      const elsewhere = fs.mkdtempSync(path.join(os.tmpdir(), 'api-elsewhere-'));
      try {
        fs.mkdirSync(path.join(dir, 'pics'));
        fs.writeFileSync(path.join(dir, 'pics', 'ok.png'), PNG);
        fs.mkdirSync(path.join(dir, 'swap'));
        fs.writeFileSync(path.join(dir, 'swap', 'x.png'), PNG);
        fs.writeFileSync(path.join(elsewhere, 'x.png'), Buffer.concat([PNG, Buffer.from('private')]));
        const out = path.join(elsewhere, 'out.jsonl');
        const env = testEnv(db.url, { API_TOKEN: TOKEN, MEDIA_DIR: dir });
        const { proc, url } = await serve(env);
        try {
          const r = await run(['channels', 'add', '--name', 'pics', '--platform', 'file', '--path', out], env);
          assert.equal(r.code, 0, r.stderr);
          const api = client(url, TOKEN);
          // outside: one answer whether the file exists or not; an unknown channel is answered first
          const exists = await api('POST', '/api/posts', { channel: 'pics', text: 'x', images: [{ source: '../../../../../../etc/passwd' }] });
          const missing = await api('POST', '/api/posts', { channel: 'pics', text: 'x', images: [{ source: '../../../../../../etc/nonexistent' }] });
          assert.deepEqual([exists.status, missing.status], [400, 400]);
          assert.equal(exists.json['error'], missing.json['error']);
          assert.equal(exists.json['error'], 'body.images.0.source: not a file inside MEDIA_DIR');
          assert.equal((await api('POST', '/api/posts', { channel: 'nowhere', text: 'x', images: [{ source: '../../../../../../etc/passwd' }] })).status, 404);

          const good = await api('POST', '/api/posts', { channel: 'pics', text: 'with a picture', images: [{ source: 'pics/ok.png', alt: 'ok' }] });
          assert.equal(good.status, 201, good.text);
          const swapped = await api('POST', '/api/posts', { channel: 'pics', text: 'swapped', images: [{ source: path.join(dir, 'swap', 'x.png') }] });
          assert.equal(swapped.status, 201, swapped.text);
          // after scheduling, the directory becomes a symlink to a directory outside
          fs.rmSync(path.join(dir, 'swap'), { recursive: true });
          fs.symlinkSync(elsewhere, path.join(dir, 'swap'));

          const cron = await run(['cron'], env);
          assert.ok(cron.code === 0 || cron.code === 1, cron.stdout + cron.stderr);
          const published = await api('GET', `/api/posts/${Number(good.json['id'])}`);
          assert.equal((published.json['post'] as { status: string }).status, 'published', published.text);
          const lines = fs.readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { text: string; images?: { filename: string; bytes: number }[] });
          assert.deepEqual(lines.map((l) => [l.text, l.images?.map((i) => [i.filename, i.bytes])]), [['with a picture', [['ok.png', PNG.length]]]], 'the refused image was never published');
          const refused = await api('GET', `/api/posts/${Number(swapped.json['id'])}`);
          const post = refused.json['post'] as { status: string; lastError: string };
          assert.equal(post.status, 'failed', refused.text);
          assert.match(post.lastError, /not a file inside MEDIA_DIR/);
          assert.ok(!refused.text.includes(elsewhere), 'the answer does not name where the symlink leads');
        } finally {
          await stop(proc);
        }
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
        fs.rmSync(elsewhere, { recursive: true, force: true });
      }
    });

    it('a webhook whose credentials cannot be opened (the key was lost) is rotated by giving both a new URL and a new secret', async () => {
      const db = await createTestDatabase(dialect);
      dbs.push(db);
      const lostKey = Buffer.alloc(32, 9).toString('base64'); // not the tests' own key
      const r = await run(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url', `http://127.0.0.1:9/in?token=${URL_TOKEN}`, '--secret', SIGNING_SECRET], testEnv(db.url, { POST_SCHEDULER_SECRET_KEY: lostKey }));
      assert.equal(r.code, 0, r.stderr);
      const env = testEnv(db.url, { API_TOKEN: TOKEN });
      const { proc, url } = await serve(env);
      try {
        const api = client(url, TOKEN);
        const one = await api('PATCH', '/api/channels/hook', { secret: 'a-new-signing-secret' });
        assert.equal(one.status, 409, one.text);
        assert.match(String(one.json['error']), /give both a new URL and a new secret/);
        assert.ok(!String(one.json['error']).includes('--'), `no CLI flag in an API answer: ${one.text}`);
        const both = await api('PATCH', '/api/channels/hook', { url: 'http://127.0.0.1:9/new', secret: 'a-new-signing-secret' });
        assert.equal(both.status, 200, both.text);
      } finally {
        await stop(proc);
      }
    });
  });
}
