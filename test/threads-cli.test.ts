import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import type { Post } from '../src/types.ts';
import { createTestDatabase, type TestDatabase } from './helpers/databases.ts';
import { startMastodon, TOKEN } from './helpers/fake-mastodon.ts';
import { APP_PASSWORD, HANDLE, startPds } from './helpers/fake-pds.ts';
import { killAll, run, testEnv } from './helpers/processes.ts';

/**
 * Threads and images on real network adapters, as an operator runs them: `schedule`
 * with --image/--alt/--reply, `cron` with real worker processes, against local servers
 * that speak Mastodon's and the AT Protocol's APIs. A part cut after it was sent is
 * looked up, never sent twice, and the thread resumes after it.
 */

// a PNG's signature and header chunk: what the type check and the fakes read
const PNG = Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), Buffer.from('0000000d49484452000000010000000108060000001f15c489', 'hex')]);

describe('threads and images through the CLI (SQLite, real processes)', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    killAll();
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  after(() => killAll());

  async function fresh(): Promise<TestDatabase> {
    const db = await createTestDatabase('sqlite');
    cleanups.push(() => db.drop());
    return db;
  }

  async function post(db: TestDatabase, id: number): Promise<Post | null> {
    const store = await openStore(parseDatabaseUrl(db.url));
    try {
      return await store.getPost(id);
    } finally {
      await store.close();
    }
  }

  it('mastodon: a thread of three whose first part carries an image with its alt text, each part replying to the one before', async () => {
    const db = await fresh();
    const masto = await startMastodon();
    cleanups.push(() => masto.close());
    const env = testEnv(db.url, { MASTO: JSON.stringify({ access_token: TOKEN }) });
    const add = await run(['channels', 'add', '--name', 'masto', '--platform', 'mastodon', '--set', `instance=${masto.url}`, '--allow-private-network', '--credentials-from', 'env:MASTO'], env);
    assert.equal(add.code, 0, add.stdout + add.stderr);
    fs.writeFileSync(path.join(db.dir, 'cat.png'), PNG);
    const scheduled = await run(
      ['schedule', '--channel', 'masto', '--text', 'A thread, 1/3', '--image', path.join(db.dir, 'cat.png'), '--alt', 'a cat asleep', '--reply', '2/3', '--reply', '3/3'],
      env,
    );
    assert.equal(scheduled.code, 0, scheduled.stderr);
    const cycle = await run(['cron'], env, 60_000);
    assert.equal(cycle.code, 0, cycle.stdout + cycle.stderr);

    assert.deepEqual(masto.statuses.map((s) => s.content), ['<p>A thread, 1/3</p>', '<p>2/3</p>', '<p>3/3</p>']);
    const [first, second, third] = masto.statuses;
    assert.equal(first?.in_reply_to_id, null);
    assert.equal(second?.in_reply_to_id, first?.id);
    assert.equal(third?.in_reply_to_id, second?.id);
    assert.equal(first?.media_ids.length, 1);
    const media = masto.media.find((m) => m.id === first?.media_ids[0]);
    assert.equal(media?.description, 'a cat asleep');
    assert.ok(media?.bytes.equals(PNG), 'the image went up as it is on disk');

    const stored = await post(db, Number(scheduled.stdout.trim()));
    assert.equal(stored?.status, 'published');
    assert.equal(stored?.externalId, first?.id, "the thread's address is its first part's");
    assert.deepEqual(
      stored?.publishedParts.map((p) => p.externalId),
      masto.statuses.map((s) => s.id),
      'every part on record with its id',
    );
  });

  it('bluesky: part 2 is written but its answer is cut; the next attempt finds it by its key and goes on with part 3', async () => {
    const db = await fresh();
    const pds = await startPds();
    cleanups.push(() => pds.close());
    const env = testEnv(db.url, { BSKY: JSON.stringify({ identifier: HANDLE, app_password: APP_PASSWORD }), RETRY_BASE_MS: '0', RETRY_MAX_MS: '0' });
    const add = await run(['channels', 'add', '--name', 'sky', '--platform', 'bluesky', '--set', `service=${pds.url}`, '--set', 'allow_private_network=true', '--credentials-from', 'env:BSKY'], env);
    assert.equal(add.code, 0, add.stdout + add.stderr);
    const scheduled = await run(['schedule', '--channel', 'sky', '--text', 'one', '--reply', 'two', '--reply', 'three'], env);
    assert.equal(scheduled.code, 0, scheduled.stderr);
    const id = Number(scheduled.stdout.trim());
    pds.createFaults.push({ kind: 'as-usual' }, { kind: 'cut-after-write' });

    const logs: string[] = [];
    for (let cycle = 0; cycle < 3 && (await post(db, id))?.status !== 'published'; cycle++) {
      const r = await run(['cron'], env, 60_000);
      logs.push(r.stdout, r.stderr);
    }
    const stored = await post(db, id);
    assert.equal(stored?.status, 'published', logs.join('\n'));
    assert.equal(pds.records.size, 3, 'three records: part 2 was not written twice');
    assert.equal(pds.count('com.atproto.repo.createRecord'), 3, 'parts 1, 2 (cut) and 3 sent once each');
    assert.ok(pds.count('com.atproto.repo.getRecord') >= 1, 'part 2 was looked up');
    const byText = new Map([...pds.records.values()].map((r) => [r.value['text'], r]));
    const [one, two, three] = ['one', 'two', 'three'].map((t) => byText.get(t));
    const reply = (r: typeof one) => r?.value['reply'] as { root: { uri: string; cid: string }; parent: { uri: string; cid: string } } | undefined;
    assert.equal(reply(one), undefined);
    assert.deepEqual(reply(two), { root: { uri: one?.uri, cid: one?.cid }, parent: { uri: one?.uri, cid: one?.cid } });
    assert.deepEqual(reply(three), { root: { uri: one?.uri, cid: one?.cid }, parent: { uri: two?.uri, cid: two?.cid } }, 'part 3 replies to the part 2 that was found');
    assert.deepEqual(stored?.publishedParts.map((p) => p.externalId), [one?.uri, two?.uri, three?.uri]);
    assert.equal(stored?.externalId, one?.uri);
  });
});
