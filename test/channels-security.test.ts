import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { makeVault, parseKey } from '../src/credentials/vault.ts';
import { openStore } from '../src/store/open.ts';
import { createTestDatabase, type TestDatabase } from './helpers/databases.ts';
import { CLI, killAll, run, start, TEST_SECRET_KEY, testEnv, type RunResult } from './helpers/processes.ts';
import { startReceiver, type Receiver } from './helpers/receiver.ts';

/**
 * Channel credentials and settings through the real CLI: secret sources, what is
 * shown of a webhook URL and of a receiver's answer, file channel paths.
 */
describe('channels: credentials, what is shown, file paths', () => {
  const dbs: TestDatabase[] = [];
  const receivers: Receiver[] = [];
  after(async () => {
    killAll();
    for (const r of receivers) await r.close();
    for (const db of dbs) await db.drop();
  });
  const fresh = async (extra: Record<string, string> = {}) => {
    const db = await createTestDatabase('sqlite');
    dbs.push(db);
    return { db, env: testEnv(db.url, { RETRY_BASE_MS: '0', RETRY_MAX_MS: '0', ...extra }) };
  };
  /** a channel's settings with its credentials, opened with the tests' key */
  const settingsOf = async (db: TestDatabase, name: string) => {
    const store = await openStore(parseDatabaseUrl(db.url));
    try {
      const channel = await store.findChannel(name);
      const vault = makeVault(parseKey(TEST_SECRET_KEY));
      return { ...channel?.settings, ...(channel?.credentials == null ? {} : vault.open(channel.credentials)) };
    } finally {
      await store.close();
    }
  };
  const ok = (r: RunResult) => assert.equal(r.code, 0, r.stdout + r.stderr);
  /** a one-line error, exit 1 */
  const refused = (r: RunResult, message: RegExp) => {
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /^post-scheduler: [^\n]+\n$/);
    assert.match(r.stderr, message);
  };

  it('reads a URL and secret from env:NAME, file:PATH and stdin, one trailing newline dropped', async () => {
    const { db, env } = await fresh({ HOOK_URL: 'http://127.0.0.1:9/from-env', HOOK_SECRET: 'env-secret\n' });
    const secretFile = path.join(db.dir, 'secret.txt');
    fs.writeFileSync(secretFile, 'file-secret\n\n');
    ok(await run(['channels', 'add', '--name', 'a', '--platform', 'webhook', '--url-from', 'env:HOOK_URL', '--secret-from', `file:${secretFile}`], env));
    assert.deepEqual(await settingsOf(db, 'a'), { url: 'http://127.0.0.1:9/from-env', secret: 'file-secret\n' });
    ok(await start(['channels', 'add', '--name', 'b', '--platform', 'webhook', '--url', 'http://127.0.0.1:9/b', '--secret-from', 'stdin'], env, 30_000, CLI, undefined, 'stdin-secret\r\n').done);
    assert.deepEqual(await settingsOf(db, 'b'), { url: 'http://127.0.0.1:9/b', secret: 'stdin-secret' });
    ok(await start(['channels', 'add', '--name', 'c', '--platform', 'webhook', '--url-from', 'stdin', '--secret-from', 'env:HOOK_SECRET'], env, 30_000, CLI, undefined, 'http://127.0.0.1:9/c\n').done);
    assert.deepEqual(await settingsOf(db, 'c'), { url: 'http://127.0.0.1:9/c', secret: 'env-secret' });
  });

  it('refuses a bad secret source with one line that never quotes the value', async () => {
    const { db, env } = await fresh({ EMPTY_SECRET: '', NEWLINE_ONLY: '\n' });
    const emptyFile = path.join(db.dir, 'empty.txt');
    fs.writeFileSync(emptyFile, '\n');
    const add = ['channels', 'add', '--name', 'x', '--platform', 'webhook'];
    refused(await run([...add, '--url', 'http://127.0.0.1:9/x', '--secret', 's1', '--secret-from', 'env:HOOK_SECRET'], env), /give --secret or --secret-from, not both/);
    refused(await run([...add, '--url', 'http://127.0.0.1:9/x', '--url-from', 'env:HOOK_URL'], env), /give --url or --url-from, not both/);
    const pasted = await run([...add, '--url', 'http://127.0.0.1:9/x', '--secret-from', 'sk_live_pasted_by_mistake'], env);
    refused(pasted, /--secret-from takes env:NAME, file:PATH or stdin/);
    assert.doesNotMatch(pasted.stderr, /sk_live/);
    refused(await run([...add, '--url', 'http://127.0.0.1:9/x', '--secret-from', 'env:NOT_SET_ANYWHERE_42'], env), /--secret-from env:NOT_SET_ANYWHERE_42: the variable is not set/);
    refused(await run([...add, '--url', 'http://127.0.0.1:9/x', '--secret-from', 'env:EMPTY_SECRET'], env), /--secret-from env:EMPTY_SECRET: the value is empty/);
    refused(await run([...add, '--url', 'http://127.0.0.1:9/x', '--secret-from', 'env:NEWLINE_ONLY'], env), /the value is empty/);
    refused(await run([...add, '--url', 'http://127.0.0.1:9/x', '--secret-from', `file:${emptyFile}`], env), /--secret-from file:.*empty\.txt: the value is empty/);
    refused(await run([...add, '--url', 'http://127.0.0.1:9/x', '--secret-from', `file:${path.join(db.dir, 'missing')}`], env), /cannot read it \(ENOENT\)/);
    refused(await run([...add, '--url-from', 'stdin'], env), /--url-from stdin: the value is empty/);
    refused(
      await start([...add, '--url-from', 'stdin', '--secret-from', 'stdin'], env, 30_000, CLI, undefined, 'http://127.0.0.1:9/x\n').done,
      /only one flag can read stdin/,
    );
    assert.equal((await run(['channels', 'list', '--json'], env)).stdout.trim(), '[]', 'nothing was added');
  });

  it('shows neither the webhook URL path and query, nor secrets, nor credentials in answers: list, status, cycle output', async () => {
    const answers: Record<string, { status: number; body?: string }> = {
      ok: { status: 200 },
      boom: { status: 500, body: '{"error":"internal","token":"sk_live_abcdef1234567890abcdef"}' },
      bad: { status: 400, body: '{"error":"bad request","token":"sk_live_abcdef1234567890abcdef"}\n[injected] log line' },
    };
    const r = await startReceiver((d) => answers[d.text] ?? { status: 200 });
    receivers.push(r);
    const port = new URL(r.url).port;
    const { db, env } = await fresh({ HOOK_URL: `http://127.0.0.1:${port}/services/T000/B000/XXXXSECRETXXXX?token=abc` });
    fs.writeFileSync(path.join(db.dir, 'secret'), 'whsec_hunter2hunter2');
    ok(await run(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url-from', 'env:HOOK_URL', '--secret-from', `file:${path.join(db.dir, 'secret')}`], env));
    for (const text of Object.keys(answers)) ok(await run(['schedule', '--channel', 'hook', '--text', text], env));
    const cycle = await run(['cron'], { ...env, MAX_ATTEMPTS: '1' });
    assert.equal(r.deliveries.length, 3, cycle.stdout + cycle.stderr);
    const signed = r.deliveries.find((d) => d.text === 'ok');
    assert.equal(signed?.signature, 'sha256=' + createHmac('sha256', 'whsec_hunter2hunter2').update(signed?.body ?? '').digest('hex'));

    const outputs = [
      cycle.stdout + cycle.stderr,
      (await run(['status'], env)).stdout,
      (await run(['status', '--json'], env)).stdout,
      (await run(['channels', 'list'], env)).stdout,
      (await run(['channels', 'list', '--json'], env)).stdout,
    ];
    for (const out of outputs) {
      assert.doesNotMatch(out, /services|T000|B000|XXXXSECRETXXXX|token=abc|hunter2|sk_live|abcdef1234567890/, out);
      assert.doesNotMatch(out, /^\[injected\]/m, 'an answer cannot start a log line of its own');
    }
    const [cycleOut, status, statusJson, list, listJson] = outputs as [string, string, string, string, string];
    assert.match(cycleOut, new RegExp(`webhook channel hook \\(127\\.0\\.0\\.1:${port}\\): HTTP 400`));
    assert.match(status, /HTTP 400: \{"error":"bad request","token":"\*\*\*"\}/);
    assert.match(statusJson, /HTTP 500/, 'the 500 is held as an unknown outcome, with its reason');
    // the URL and the secret are sealed credentials: shown as that, never as values
    assert.match(list, /hook +webhook +yes +hold +sealed \(key [0-9a-f]{8}\) +- +\{\}/);
    const shown = (JSON.parse(listJson) as { settings: Record<string, unknown>; credentials: string }[])[0];
    assert.deepEqual([shown?.settings, shown?.credentials.startsWith('sealed (key ')], [{}, true]);
    assert.ok(!list.includes(`:${port}`), 'not even the host:port of a sealed URL');
  });

  it('stores a file channel path absolute, so a cycle started elsewhere writes the same file', async () => {
    const { db, env } = await fresh();
    const addDir = path.join(db.dir, 'add-here');
    const cycleDir = path.join(db.dir, 'cycle-here');
    fs.mkdirSync(addDir);
    fs.mkdirSync(cycleDir);
    ok(await start(['channels', 'add', '--name', 'local', '--platform', 'file', '--path', 'out/published.jsonl'], env, 30_000, CLI, addDir).done);
    const expected = path.join(addDir, 'out', 'published.jsonl');
    assert.deepEqual(await settingsOf(db, 'local'), { path: expected });
    ok(await run(['schedule', '--channel', 'local', '--text', 'hello'], env));
    ok(await start(['cron'], env, 60_000, CLI, cycleDir).done);
    assert.equal(fs.readFileSync(expected, 'utf8').trim().split('\n').length, 1);
    assert.equal(fs.existsSync(path.join(cycleDir, 'out')), false);
  });

  it('refuses to write a file channel through a symlink, leaving its target untouched', async () => {
    const { db, env } = await fresh();
    const victim = path.join(db.dir, 'victim.txt');
    fs.writeFileSync(victim, 'original\n');
    const link = path.join(db.dir, 'published.jsonl');
    fs.symlinkSync(victim, link);
    ok(await run(['channels', 'add', '--name', 'linked', '--platform', 'file', '--path', link], env));
    const id = Number((await run(['schedule', '--channel', 'linked', '--text', 'hello'], env)).stdout.trim());
    const cycle = await run(['cron'], env);
    assert.equal(fs.readFileSync(victim, 'utf8'), 'original\n');
    const store = await openStore(parseDatabaseUrl(db.url));
    try {
      const post = await store.getPost(id);
      assert.equal(post?.status, 'failed', cycle.stdout + cycle.stderr);
      assert.match(post?.lastError ?? '', /^channel linked: refusing to follow a symlink/);
    } finally {
      await store.close();
    }
  });
});
