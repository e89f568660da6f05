import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, afterEach, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { makeVault, parseKey } from '../src/credentials/vault.ts';
import { openStore } from '../src/store/open.ts';
import { createTestDatabase, type TestDatabase } from './helpers/databases.ts';
import { startMastodon, TOKEN } from './helpers/fake-mastodon.ts';
import { startDiscord, WEBHOOK_TOKEN } from './helpers/fake-discord.ts';
import { APP_PASSWORD, HANDLE, startPds } from './helpers/fake-pds.ts';
import { GENERAL, startSlack, TOKEN as SLACK_TOKEN } from './helpers/fake-slack.ts';
import { BOT_TOKEN, CHANNEL, startTelegram } from './helpers/fake-telegram.ts';
import { killAll, run, TEST_SECRET_KEY, testEnv } from './helpers/processes.ts';

/**
 * The networks end to end, as an operator runs them: `channels add` with credentials
 * from the environment (checked with the network, sealed), `schedule`, `cron` with real
 * worker processes, against local servers that speak Mastodon's and the AT Protocol's
 * APIs. The credentials are in no output and nowhere in the database file.
 */
describe('network channels through the CLI (SQLite, real processes)', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    killAll();
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  after(() => killAll());

  const databaseBytes = (db: TestDatabase): string => {
    const target = parseDatabaseUrl(db.url);
    if (target.dialect !== 'sqlite') throw new Error('sqlite expected');
    return ['', '-wal']
      .map((suffix) => target.path + suffix)
      .filter((f) => fs.existsSync(f))
      .map((f) => fs.readFileSync(f).toString('latin1'))
      .join('');
  };

  /** makes every pending post due now (as if its wait had passed), on the test's database */
  async function dueNow(db: TestDatabase): Promise<void> {
    const target = parseDatabaseUrl(db.url);
    if (target.dialect !== 'sqlite') throw new Error('sqlite expected');
    const { default: Database } = await import('better-sqlite3');
    const raw = new Database(target.path);
    try {
      raw.prepare("UPDATE post_schedule SET run_at = 0 WHERE status = 'pending'").run();
    } finally {
      raw.close();
    }
  }

  async function fresh(): Promise<TestDatabase> {
    const db = await createTestDatabase('sqlite');
    cleanups.push(() => db.drop());
    return db;
  }

  it('mastodon: adds a channel whose token the instance accepts, publishes through it, and keeps the token sealed', async () => {
    const db = await fresh();
    const masto = await startMastodon();
    cleanups.push(() => masto.close());
    const env = testEnv(db.url, { MASTO: JSON.stringify({ access_token: TOKEN }) });
    const outputs: string[] = [];
    const add = await run(
      ['channels', 'add', '--name', 'masto', '--platform', 'mastodon', '--set', `instance=${masto.url}`, '--allow-private-network',
        '--set', 'visibility=unlisted', '--credentials-from', 'env:MASTO'],
      env,
    );
    outputs.push(add.stdout, add.stderr);
    assert.equal(add.code, 0, add.stdout + add.stderr);
    assert.match(add.stdout, /Credentials accepted by mastodon for @/);
    const wrong = await run(
      ['channels', 'add', '--name', 'bad', '--platform', 'mastodon', '--set', `instance=${masto.url}`, '--set', 'allow_private_network=true', '--credentials-from', 'env:BAD'],
      { ...env, BAD: JSON.stringify({ access_token: 'not-the-token' }) },
    );
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /mastodon did not accept the credentials: .* \(--no-verify skips this check\)/);
    assert.equal((await run(['schedule', '--channel', 'masto', '--text', 'Hello from the scheduler https://example.com/a'], env)).code, 0);
    const cycle = await run(['cron'], env, 60_000);
    outputs.push(cycle.stdout, cycle.stderr, (await run(['status', '--json'], env)).stdout, (await run(['channels', 'list', '--json'], env)).stdout);
    assert.equal(cycle.code, 0, cycle.stdout);
    assert.equal(masto.statuses.length, 1);
    assert.equal(masto.statuses[0]?.visibility, 'unlisted');
    const store = await openStore(parseDatabaseUrl(db.url));
    try {
      const [post] = (await store.status(1)).counts.published === 1 ? [await store.getPost(1)] : [];
      assert.equal(post?.externalId, masto.statuses[0]?.id);
      assert.equal(post?.externalUrl, masto.statuses[0]?.url);
    } finally {
      await store.close();
    }
    assert.ok(!databaseBytes(db).includes(TOKEN), 'the token is not in the database file');
    for (const out of outputs) assert.ok(!out.includes(TOKEN), 'the token is in no output');
  });

  it('bluesky: signs in with an app password, stores the session it got sealed, and publishes at a record key chosen before sending', async () => {
    const db = await fresh();
    const pds = await startPds();
    cleanups.push(() => pds.close());
    const env = testEnv(db.url, { BSKY: JSON.stringify({ identifier: HANDLE, app_password: APP_PASSWORD }) });
    const outputs: string[] = [];
    const add = await run(
      ['channels', 'add', '--name', 'sky', '--platform', 'bluesky', '--set', `service=${pds.url}`, '--set', 'allow_private_network=true',
        '--credentials-from', 'env:BSKY'],
      env,
    );
    outputs.push(add.stdout, add.stderr);
    assert.equal(add.code, 0, add.stdout + add.stderr);
    assert.match(add.stdout, new RegExp(`Credentials accepted by bluesky for @${HANDLE.replace('.', '\\.')}`));
    assert.equal((await run(['schedule', '--channel', 'sky', '--text', 'Hello 👋🏽 @alice.test see https://example.com/x'], env)).code, 0);
    const cycle = await run(['cron'], env, 60_000);
    outputs.push(cycle.stdout, cycle.stderr, (await run(['status', '--json'], env)).stdout, (await run(['channels', 'list', '--json'], env)).stdout);
    assert.equal(cycle.code, 0, cycle.stdout);
    assert.equal(pds.records.size, 1, cycle.stdout);
    assert.equal(pds.count('com.atproto.repo.createRecord'), 1, 'one write');
    const store = await openStore(parseDatabaseUrl(db.url));
    try {
      const post = await store.getPost(1);
      assert.equal(post?.status, 'published');
      assert.match(post?.externalId ?? '', /^at:\/\/did:plc:[a-z0-9]+\/app\.bsky\.feed\.post\/[2-7a-z]{13}$/);
      const channel = await store.findChannel('sky');
      const opened = makeVault(parseKey(TEST_SECRET_KEY)).open(channel?.credentials ?? '');
      assert.equal(typeof opened['access_jwt'], 'string', 'the session the worker got was stored back, sealed');
    } finally {
      await store.close();
    }
    const bytes = databaseBytes(db);
    for (const secret of [APP_PASSWORD, ...pds.issued]) {
      assert.ok(!bytes.includes(secret), 'no password or token in the database file');
      for (const out of outputs) assert.ok(!out.includes(secret), 'no password or token in any output');
    }
  });

  it('refuses a token given as a setting, and settings of another platform, in one line', async () => {
    const db = await fresh();
    const env = testEnv(db.url, { MASTO: JSON.stringify({ access_token: TOKEN }) });
    const base = ['channels', 'add', '--name', 'm', '--platform', 'mastodon', '--set', 'instance=https://mastodon.example', '--credentials-from', 'env:MASTO', '--no-verify'];
    const leaked = await run([...base, '--set', `access_token=${TOKEN}`], env);
    assert.equal(leaked.code, 1);
    assert.match(leaked.stderr, /unknown setting "access_token" for platform mastodon \(credentials go in --credentials-from\)/);
    assert.ok(!leaked.stderr.includes(TOKEN));
    const misplaced = await run([...base, '--max-length', '10'], env);
    assert.match(misplaced.stderr, /--max-length is not a setting of platform mastodon/);
    assert.equal((await run(['channels', 'list', '--json'], env)).stdout.includes(TOKEN), false);
  });

  it('a channel whose token the network refuses needs attention: its posts wait without using attempts, until new credentials', async () => {
    const db = await fresh();
    const masto = await startMastodon();
    cleanups.push(() => masto.close());
    const env = testEnv(db.url, { MASTO: JSON.stringify({ access_token: 'revoked-token' }), GOOD: JSON.stringify({ access_token: TOKEN }) });
    const add = await run(
      ['channels', 'add', '--name', 'masto', '--platform', 'mastodon', '--set', `instance=${masto.url}`, '--allow-private-network', '--credentials-from', 'env:MASTO', '--no-verify'],
      env,
    );
    assert.equal(add.code, 0, add.stderr);
    assert.equal((await run(['schedule', '--channel', 'masto', '--text', 'waits'], env)).code, 0);
    for (let i = 0; i < 2; i++) {
      const cycle = await run(['cron'], { ...env, RETRY_BASE_MS: '0' }, 60_000);
      assert.match(cycle.stdout, /waits for an operator: channel masto: credentials rejected/, cycle.stdout);
      await dueNow(db);
    }
    const status = await run(['status'], env);
    assert.match(status.stdout, /channel masto needs attention, its posts wait: channel masto: credentials rejected/);
    const store = await openStore(parseDatabaseUrl(db.url));
    try {
      const post = await store.getPost(1);
      assert.deepEqual([post?.status, post?.attempts], ['pending', 0], 'two refusals, no attempt used');
    } finally {
      await store.close();
    }
    const update = await run(['channels', 'update', '--name', 'masto', '--credentials-from', 'env:GOOD'], env);
    assert.equal(update.code, 0, update.stderr);
    assert.match(update.stdout, /Credentials accepted by mastodon/);
    assert.doesNotMatch((await run(['status'], env)).stdout, /needs attention/);
    assert.equal((await run(['cron'], env, 60_000)).code, 0);
    assert.equal(masto.statuses.length, 1, 'published with the new token');
  });

  // Telegram, Discord and Slack through the same operator path: add (checked with the
  // network, sealed), schedule, cron; what the fake received, and no secret anywhere.
  const simpleNetworks = [
    {
      platform: 'telegram',
      secret: BOT_TOKEN,
      start: async () => {
        const t = await startTelegram();
        return { close: () => t.close(), sets: [`api_url=${t.url}`, `chat_id=${CHANNEL}`], credentials: { bot_token: BOT_TOKEN }, sent: () => t.messages.length };
      },
    },
    {
      platform: 'discord',
      secret: WEBHOOK_TOKEN,
      start: async () => {
        const d = await startDiscord();
        return { close: () => d.close(), sets: [], credentials: { webhook_url: d.webhookUrl }, sent: () => d.messages.length };
      },
    },
    {
      platform: 'slack',
      secret: SLACK_TOKEN,
      start: async () => {
        const sl = await startSlack();
        return { close: () => sl.close(), sets: [`api_url=${sl.url}`, `channel=${GENERAL}`], credentials: { bot_token: SLACK_TOKEN }, sent: () => sl.messages.length };
      },
    },
  ] as const;

  for (const network of simpleNetworks) {
    it(`${network.platform}: adds a checked channel, publishes through it, keeps its secret sealed`, async () => {
      const db = await fresh();
      const fake = await network.start();
      cleanups.push(() => fake.close());
      const env = testEnv(db.url, { CREDS: JSON.stringify(fake.credentials) });
      const outputs: string[] = [];
      const add = await run(
        ['channels', 'add', '--name', 'n', '--platform', network.platform, ...fake.sets.flatMap((x) => ['--set', x]), '--allow-private-network', '--credentials-from', 'env:CREDS'],
        env,
      );
      outputs.push(add.stdout, add.stderr);
      assert.equal(add.code, 0, add.stdout + add.stderr);
      assert.match(add.stdout, new RegExp(`Credentials accepted by ${network.platform}`));
      assert.equal((await run(['schedule', '--channel', 'n', '--text', `hello ${network.platform}`], env)).code, 0);
      const cycle = await run(['cron'], env, 60_000);
      outputs.push(cycle.stdout, cycle.stderr, (await run(['status', '--json'], env)).stdout, (await run(['channels', 'list', '--json'], env)).stdout);
      assert.equal(cycle.code, 0, cycle.stdout);
      assert.equal(fake.sent(), 1);
      assert.ok(!databaseBytes(db).includes(network.secret), 'the secret is not in the database file');
      for (const out of outputs) assert.ok(!out.includes(network.secret), 'the secret is in no output');
    });
  }
});
