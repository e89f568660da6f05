/**
 * The chaos receiver (chaos/receiver.ts) with real HTTP requests: idempotency replays,
 * plain duplicates, injected faults, switching faults off, hangs cut by the client's
 * timeout, and close() with sockets still open.
 * Run: node --import tsx --test test/chaos-receiver.test.ts
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startChaosReceiver, resolveRates, type ChaosReceiver, type ChaosReceiverOptions } from '../chaos/receiver.ts';
import { createRandom } from '../chaos/random.ts';

const NO_FAULTS = { status500: 0, status429: 0, hang: 0, reset: 0 };

interface Reply {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

/** POST of a webhook-shaped body (or `raw` text); rejects on a network error or after timeoutMs. */
function post(url: string, postId: number, key: string | undefined, timeoutMs = 1_000, raw?: string): Promise<Reply> {
  const body = raw ?? JSON.stringify({ id: postId, channel: 'c', text: `post ${postId}`, run_at: '2026-01-01T00:00:00Z', attempt: 1 });
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (key !== undefined) headers['idempotency-key'] = key;
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers, agent: false, timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

async function withReceiver(options: ChaosReceiverOptions, body: (receiver: ChaosReceiver) => Promise<void>): Promise<void> {
  const receiver = await startChaosReceiver(options);
  try {
    await body(receiver);
  } finally {
    await receiver.close();
  }
}

test('keyed endpoint: accepts a key once, then replays the stored answer', async () => {
  await withReceiver({ seed: 1, rates: NO_FAULTS }, async (r) => {
    const first = await post(`${r.url}/keyed/a`, 7, 'key-7');
    const second = await post(`${r.url}/keyed/a`, 7, 'key-7');
    assert.equal(first.status, 200);
    assert.deepEqual(JSON.parse(first.body), { id: 'ext-7', url: 'http://127.0.0.1/p/7' });
    assert.equal(second.status, 200);
    assert.equal(second.body, first.body);
    assert.equal(r.accepted.get(7), 1);
    assert.equal(r.sends.get(7), 2);
    assert.equal(r.replays.get(7), 1);
    assert.deepEqual([...(r.keysPerPost.get(7) ?? [])], ['key-7']);
  });
});

test('keyed endpoint: a second key for the same post is a new acceptance and shows in keysPerPost', async () => {
  await withReceiver({ seed: 1, rates: NO_FAULTS }, async (r) => {
    await post(`${r.url}/keyed/a`, 8, 'key-a');
    await post(`${r.url}/keyed/a`, 8, 'key-b');
    assert.equal(r.accepted.get(8), 2);
    assert.equal(r.replays.get(8), undefined);
    assert.deepEqual([...(r.keysPerPost.get(8) ?? [])].sort(), ['key-a', 'key-b']);
  });
});

test('plain endpoint: two sends of one post are two acceptances', async () => {
  await withReceiver({ seed: 1, rates: NO_FAULTS }, async (r) => {
    assert.equal((await post(`${r.url}/plain/a`, 9, 'key-9')).status, 200);
    assert.equal((await post(`${r.url}/plain/a`, 9, 'key-9')).status, 200);
    assert.equal(r.accepted.get(9), 2);
    assert.equal(r.replays.get(9), undefined);
  });
});

test('status500 at rate 1: every answer is 500, and about half were accepted first (a platform failing after it acted)', async () => {
  await withReceiver({ seed: 2, rates: { ...NO_FAULTS, status500: 1 } }, async (r) => {
    for (let id = 1; id <= 20; id++) assert.equal((await post(`${r.url}/plain/a`, id, `key-${id}`)).status, 500);
    assert.equal(r.faults.status500, 20);
    assert.ok(r.accepted.size > 0 && r.accepted.size < 20, `accepted ${r.accepted.size} of 20`);
  });
});

test('status429 carries Retry-After: 1', async () => {
  await withReceiver({ seed: 3, rates: { ...NO_FAULTS, status429: 1 } }, async (r) => {
    const reply = await post(`${r.url}/keyed/a`, 11, 'key-11');
    assert.equal(reply.status, 429);
    assert.equal(reply.headers['retry-after'], '1');
    assert.equal(r.accepted.size, 0);
  });
});

test('setFaults(false) turns faults off and setFaults(true) back on', async () => {
  await withReceiver({ seed: 4, rates: { ...NO_FAULTS, status500: 1 } }, async (r) => {
    r.setFaults(false);
    assert.equal((await post(`${r.url}/keyed/a`, 12, 'key-12')).status, 200);
    assert.equal(r.faults.status500, 0);
    r.setFaults(true);
    assert.equal((await post(`${r.url}/plain/a`, 13, 'key-13')).status, 500);
    assert.equal(r.accepted.get(12), 1);
    assert.equal(r.faults.status500, 1);
  });
});

test('reset after acceptance: the client sees an error, the retry with the same key is a replay', async () => {
  await withReceiver({ seed: 5, rates: { ...NO_FAULTS, reset: 1 } }, async (r) => {
    // half of the resets accept first: retry until one did (2^-20 chance of never)
    for (let i = 0; i < 20 && r.accepted.get(14) === undefined; i++) {
      await assert.rejects(post(`${r.url}/keyed/a`, 14, 'key-14'));
    }
    assert.equal(r.accepted.get(14), 1);
    r.setFaults(false);
    const retry = await post(`${r.url}/keyed/a`, 14, 'key-14');
    assert.equal(retry.status, 200);
    assert.equal(r.accepted.get(14), 1);
    assert.equal(r.replays.get(14), 1);
  });
});

test('a hang is cut by the client timeout, and close() destroys hanging sockets at once', async () => {
  const r = await startChaosReceiver({ seed: 6, rates: { ...NO_FAULTS, hang: 1 } });
  let closed = false;
  try {
    const started = Date.now();
    await assert.rejects(post(`${r.url}/keyed/a`, 15, 'key-15', 200), /timeout after 200 ms/);
    assert.ok(Date.now() - started < 1_000);
    const stillHanging = post(`${r.url}/plain/a`, 16, 'key-16', 5_000);
    while (r.sends.get(16) === undefined) await new Promise((resolve) => setTimeout(resolve, 5));
    const closing = Date.now();
    await r.close();
    closed = true;
    await assert.rejects(stillHanging, /socket hang up|ECONNRESET/);
    assert.ok(Date.now() - closing < 500, `close() took ${Date.now() - closing} ms`);
    assert.equal(r.faults.hang, 2);
  } finally {
    if (!closed) await r.close();
  }
});

test('a body that is not JSON gets 400 and counts nothing; unknown paths get 404', async () => {
  await withReceiver({ seed: 7, rates: { ...NO_FAULTS, status500: 1 } }, async (r) => {
    assert.equal((await post(`${r.url}/keyed/a`, 0, 'k', 1_000, 'not json')).status, 400);
    assert.equal((await post(`${r.url}/plain/a`, 0, 'k', 1_000, '{"id":"x"}')).status, 400);
    assert.equal((await post(`${r.url}/other`, 17, 'k')).status, 404);
    assert.equal(r.sends.size, 0);
    assert.equal(r.faults.status500, 0);
  });
});

test('the fault sequence is fixed by the seed; bad rates are refused', () => {
  const a = createRandom(42);
  const b = createRandom(42);
  const first = Array.from({ length: 5 }, () => a());
  assert.deepEqual(Array.from({ length: 5 }, () => b()), first);
  assert.ok(first.every((x) => x >= 0 && x < 1));
  assert.notDeepEqual(Array.from({ length: 5 }, createRandom(43)), first);
  assert.throws(() => resolveRates({ status500: 0.6, status429: 0.6 }), /add up to/);
  assert.throws(() => resolveRates({ hang: -0.1 }), /within 0\.\.1/);
  assert.throws(() => resolveRates({ hang: Number.NaN }), /within 0\.\.1/);
});
