import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { after, afterEach, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { CredentialsError, keyIdOf, makeVault, parseKey } from '../src/credentials/vault.ts';
import { openStore } from '../src/store/open.ts';
import { createTestDatabase, type TestDatabase } from './helpers/databases.ts';
import { killAll, run, testEnv } from './helpers/processes.ts';
import { startReceiver, type Receiver } from './helpers/receiver.ts';

describe('the credentials vault', () => {
  const key = randomBytes(32);
  const other = randomBytes(32);

  it('seals with AES-256-GCM and opens what it sealed, naming the key it used', () => {
    const vault = makeVault(key);
    const sealed = vault.seal({ access_token: 'tok-123', n: 1 });
    assert.match(sealed, new RegExp(`^v1\\.${keyIdOf(key)}\\.[\\w-]+\\.[\\w-]+\\.[\\w-]+$`));
    assert.doesNotMatch(sealed, /tok-123/);
    assert.notEqual(vault.seal({ access_token: 'tok-123', n: 1 }), sealed, 'a fresh IV each time');
    assert.deepEqual(vault.open(sealed), { access_token: 'tok-123', n: 1 });
    assert.deepEqual(vault.describe(sealed), { kind: 'sealed', keyId: keyIdOf(key) });
  });

  it('refuses a wrong key and an altered value with a message that names keys, never content', () => {
    const sealed = makeVault(key).seal({ access_token: 'tok-123' });
    assert.throws(() => makeVault(other).open(sealed), (e: Error) => {
      assert.ok(e instanceof CredentialsError);
      assert.equal(e.message, `credentials are sealed with key ${keyIdOf(key)} and POST_SCHEDULER_SECRET_KEY is key ${keyIdOf(other)} (rotating keys? see channels rekey)`);
      return true;
    });
    assert.deepEqual(makeVault(other, [key]).open(sealed), { access_token: 'tok-123' }, 'an old key opens during a rotation');
    const parts = sealed.split('.');
    const data = Buffer.from(parts[4] ?? '', 'base64url');
    data[0] = (data[0] ?? 0) ^ 1;
    parts[4] = data.toString('base64url');
    assert.throws(() => makeVault(key).open(parts.join('.')), /fail their integrity check/);
    const short = sealed.split('.');
    short[3] = Buffer.from(short[3] ?? '', 'base64url').subarray(0, 4).toString('base64url');
    assert.throws(() => makeVault(key).open(short.join('.')), /fail their integrity check/, 'a shortened tag is refused');
    assert.throws(() => makeVault(null).seal({ a: 1 }), /POST_SCHEDULER_SECRET_KEY is not set/);
  });

  it('reads a key as 64 hex digits or base64 of 32 bytes, and refuses anything else without echoing it', () => {
    assert.deepEqual(parseKey(key.toString('hex')), key);
    assert.deepEqual(parseKey(key.toString('base64')), key);
    assert.equal(parseKey(''), null);
    assert.throws(() => parseKey('my-password-123'), (e: Error) => !e.message.includes('my-password') && /32 random bytes/.test(e.message));
    assert.throws(() => parseKey(randomBytes(16).toString('hex')), /32 random bytes/);
  });
});

/** The CLI with real processes on SQLite: what lands in the database file, and what is shown. */
describe('channel credentials through the CLI', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    killAll();
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  after(() => killAll());

  const KEY_A = randomBytes(32).toString('base64');
  const KEY_B = randomBytes(32).toString('hex');
  const PATH_TOKEN = `T0${randomBytes(8).toString('hex')}`;
  const HOOK_SECRET = `whsec-${randomBytes(8).toString('hex')}`;

  async function setup(): Promise<{ db: TestDatabase; receiver: Receiver; url: string; outputs: string[] }> {
    const db = await createTestDatabase('sqlite');
    cleanups.push(() => db.drop());
    const receiver = await startReceiver(() => ({ status: 200 }));
    cleanups.push(() => receiver.close());
    return { db, receiver, url: `${receiver.url}/services/${PATH_TOKEN}?token=${PATH_TOKEN}`, outputs: [] };
  }

  /** every byte of the database's files */
  const databaseBytes = (db: TestDatabase): string => {
    const file = parseDatabaseUrl(db.url);
    if (file.dialect !== 'sqlite') throw new Error('sqlite expected');
    return ['', '-wal', '-shm']
      .map((suffix) => file.path + suffix)
      .filter((f) => fs.existsSync(f))
      .map((f) => fs.readFileSync(f).toString('latin1'))
      .join('');
  };

  it('seals a webhook URL and secret given from the environment: not in the database file, not shown, used to publish', async () => {
    const { db, receiver, url, outputs } = await setup();
    const env = testEnv(db.url, { POST_SCHEDULER_SECRET_KEY: KEY_A, HOOK_URL: url, HOOK_SECRET });
    const add = await run(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url-from', 'env:HOOK_URL', '--secret-from', 'env:HOOK_SECRET', '--on-unknown', 'retry'], env);
    outputs.push(add.stdout, add.stderr);
    assert.equal(add.code, 0, add.stderr);
    assert.equal((await run(['schedule', '--channel', 'hook', '--text', 'sealed hello'], env)).code, 0);
    const cycle = await run(['cron'], env, 60_000);
    outputs.push(cycle.stdout, cycle.stderr);
    assert.equal(cycle.code, 0, cycle.stdout);
    assert.equal(receiver.deliveries.length, 1);
    const { Webhook } = await import('standardwebhooks');
    const d = receiver.deliveries[0];
    const headers = Object.fromEntries(['webhook-id', 'webhook-timestamp', 'webhook-signature'].map((h) => [h, String(d?.headers[h] ?? '')]));
    assert.ok(new Webhook(HOOK_SECRET, { format: 'raw' }).verify(d?.body ?? '', headers), 'signed with the sealed secret');

    const list = await run(['channels', 'list'], env);
    const listJson = await run(['channels', 'list', '--json'], env);
    const status = await run(['status', '--json'], env);
    outputs.push(list.stdout, listJson.stdout, status.stdout);
    assert.match(list.stdout, new RegExp(`sealed \\(key ${keyIdOf(parseKey(KEY_A) ?? Buffer.alloc(0))}\\)`));
    const bytes = databaseBytes(db);
    for (const secret of [PATH_TOKEN, HOOK_SECRET]) {
      assert.ok(!bytes.includes(secret), `${secret} is not in the database file`);
      for (const out of outputs) assert.ok(!out.includes(secret), `${secret} is in no output`);
    }
  });

  it('refuses credentials without a key unless --insecure-plaintext, and then says so in channels list and status', async () => {
    const { db, url } = await setup();
    const env = testEnv(db.url, { HOOK_URL: url, POST_SCHEDULER_SECRET_KEY: '' });
    const refused = await run(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url-from', 'env:HOOK_URL'], env);
    assert.equal(refused.code, 1);
    assert.equal(refused.stderr.trim().split('\n').length, 1, refused.stderr);
    assert.match(refused.stderr, /POST_SCHEDULER_SECRET_KEY is not set: credentials are stored encrypted/);
    const plain = await run(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url-from', 'env:HOOK_URL', '--insecure-plaintext'], env);
    assert.equal(plain.code, 0, plain.stderr);
    const list = await run(['channels', 'list'], env);
    assert.match(list.stdout, /plaintext \(--insecure-plaintext\)/);
    const status = await run(['status'], env);
    assert.match(status.stdout, /Credentials: POST_SCHEDULER_SECRET_KEY is not set/);
    assert.match(status.stdout, /channel hook: credentials plaintext/);
    assert.ok(!list.stdout.includes(PATH_TOKEN) && !status.stdout.includes(PATH_TOKEN));
  });

  it('rotates the key with channels rekey, and seals the plaintext URL of a channel added before credentials were sealed', async () => {
    const { db, receiver, url } = await setup();
    const withA = testEnv(db.url, { POST_SCHEDULER_SECRET_KEY: KEY_A, HOOK_URL: url, RETRY_BASE_MS: '0', RETRY_MAX_MS: '0' });
    assert.equal((await run(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url-from', 'env:HOOK_URL', '--on-unknown', 'retry'], withA)).code, 0);
    // an older channel: its URL in settings, in plaintext
    const store = await openStore(parseDatabaseUrl(db.url));
    await store.migrate();
    await store.addChannel({ name: 'old', platform: 'webhook', settings: { url: `${receiver.url}/old/${PATH_TOKEN}` }, onUnknown: 'retry' });
    await store.close();

    const withB = testEnv(db.url, { POST_SCHEDULER_SECRET_KEY: KEY_B, OLD_KEY: KEY_A, RETRY_BASE_MS: '0', RETRY_MAX_MS: '0' });
    const before = await run(['status'], withB);
    assert.match(before.stdout, /channel hook: credentials sealed with another key/);
    assert.match(before.stdout, /channel old: credentials plaintext in settings \(run channels rekey\)/);
    const noOld = await run(['channels', 'rekey'], withB);
    assert.equal(noOld.code, 1, 'the old key is needed to open what it sealed');
    assert.match(noOld.stderr, /could not open the credentials of 1 channels \(hook: credentials are sealed with key/);
    assert.match(noOld.stdout, /Sealed the credentials of 1 channels/, 'what it could open it sealed (the old channel)');
    const rekey = await run(['channels', 'rekey', '--old-key-from', 'env:OLD_KEY'], withB);
    assert.equal(rekey.code, 0, rekey.stderr);
    assert.match(rekey.stdout, /Sealed the credentials of 1 channels with key [0-9a-f]{8}; 1 already were/);
    const list = await run(['channels', 'list', '--json'], withB);
    const channels = JSON.parse(list.stdout) as { name: string; settings: Record<string, unknown>; credentials: string }[];
    for (const c of channels) assert.match(c.credentials, /^sealed \(key [0-9a-f]{8}\)$/, c.name);
    assert.equal(channels.find((c) => c.name === 'old')?.settings['url'], undefined, 'the URL left the settings');
    for (const text of ['one', 'two']) {
      assert.equal((await run(['schedule', '--channel', text === 'one' ? 'hook' : 'old', '--text', text], withB)).code, 0);
    }
    const cycle = await run(['cron'], withB, 60_000);
    assert.equal(cycle.code, 0, cycle.stdout);
    assert.equal(receiver.deliveries.length, 2, 'both channels publish with the new key');
  });
});
