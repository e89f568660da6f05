import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { after, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import type { Post } from '../src/types.ts';
import { createTestDatabase, type TestDatabase } from './helpers/databases.ts';
import { CLI, killAll, ROOT, run, testEnv, type RunResult } from './helpers/processes.ts';
import { startReceiver, type Receiver } from './helpers/receiver.ts';

const SSRF_REASON = /refused to connect to a loopback, private or link-local address \(SSRF protection\); allow it for this channel with `channels add --allow-private-network`, or for all with ALLOW_PRIVATE_NETWORK=true/;

/**
 * The SSRF guard through the real CLI. Nothing here ever sends to an address other
 * than 127.0.0.1: the metadata address is only used inside an empty network namespace
 * (`unshare -n`, loopback only), where no packet can leave the machine even if the
 * guard were broken.
 */
describe('webhook SSRF guard through the CLI', () => {
  const dbs: TestDatabase[] = [];
  const receivers: Receiver[] = [];
  const children = new Set<ReturnType<typeof spawn>>();
  after(async () => {
    for (const child of children) child.kill('SIGKILL');
    killAll();
    for (const r of receivers) await r.close();
    for (const db of dbs) await db.drop();
  });
  const fresh = async (extra: Record<string, string> = {}) => {
    const db = await createTestDatabase('sqlite');
    dbs.push(db);
    // the guard on (testEnv turns it off for the other tests' local receivers)
    return { db, env: testEnv(db.url, { ALLOW_PRIVATE_NETWORK: 'false', MAX_ATTEMPTS: '1', ...extra }) };
  };
  const ok = (r: RunResult) => assert.equal(r.code, 0, r.stdout + r.stderr);
  const posts = async (db: TestDatabase, ids: number[]): Promise<(Post | null)[]> => {
    const store = await openStore(parseDatabaseUrl(db.url));
    try {
      return await Promise.all(ids.map((id) => store.getPost(id)));
    } finally {
      await store.close();
    }
  };
  const schedule = async (env: NodeJS.ProcessEnv, channel: string) => {
    const r = await run(['schedule', '--channel', channel, '--text', `to ${channel}`], env);
    ok(r);
    return Number(r.stdout.trim());
  };

  /** `cron` inside a new network namespace with only loopback up; bounded, reaped */
  const cronInEmptyNetwork = (env: NodeJS.ProcessEnv) =>
    new Promise<RunResult>((resolve) => {
      const child = spawn('unshare', ['-n', 'sh', '-c', 'ip link set lo up && exec "$0" "$@"', process.execPath, CLI, 'cron'], {
        env,
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      children.add(child);
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        children.delete(child);
        resolve({ code, signal, stdout, stderr });
      });
    });

  it('refuses the metadata address and loopback inside an isolated network namespace, with the SSRF reason', async () => {
    try {
      execFileSync('unshare', ['-n', 'sh', '-c', 'ip link set lo up'], { stdio: 'pipe', timeout: 10_000 });
    } catch (e) {
      assert.fail(
        `this test needs \`unshare -n\` and \`ip\` (root or CAP_SYS_ADMIN) to isolate the network; it cannot run here: ${(e as Error).message.split('\n')[0]}`,
      );
    }
    const { db, env } = await fresh();
    const add = (name: string, url: string, ...more: string[]) => run(['channels', 'add', '--name', name, '--platform', 'webhook', '--url', url, ...more], env);
    ok(await add('metadata', 'http://169.254.169.254/latest/meta-data/iam?token=abc'));
    ok(await add('loopback', 'http://127.0.0.1:9/hook'));
    ok(await add('opted-in', 'http://127.0.0.1:9/hook', '--allow-private-network', '--on-unknown', 'retry'));
    const ids = [await schedule(env, 'metadata'), await schedule(env, 'loopback'), await schedule(env, 'opted-in')];

    const cycle = await cronInEmptyNetwork(env);
    assert.equal(cycle.code, 0, cycle.stdout + cycle.stderr);
    const [metadata, loopback, optedIn] = await posts(db, ids);
    for (const [post, host] of [
      [metadata, '169.254.169.254'],
      [loopback, '127.0.0.1:9'],
    ] as const) {
      assert.equal(post?.status, 'failed', cycle.stdout);
      assert.equal(post.attempts, 1);
      assert.ok(post.lastError?.startsWith(`webhook channel ${post.id === ids[0] ? 'metadata' : 'loopback'} (${host}): `), post.lastError ?? '');
      assert.match(post.lastError ?? '', SSRF_REASON);
      assert.doesNotMatch(post.lastError ?? '', /ENETUNREACH|ECONNREFUSED|EHOSTUNREACH|meta-data|token/);
    }
    // the opt-in turns the guard off: inside the namespace, nothing listens on 127.0.0.1:9
    assert.equal(optedIn?.status, 'failed');
    assert.match(optedIn.lastError ?? '', /ECONNREFUSED/);
    assert.doesNotMatch(cycle.stdout + cycle.stderr, /meta-data|token=abc/);
  });

  it('delivers to 127.0.0.1 for a channel added with --allow-private-network, or with ALLOW_PRIVATE_NETWORK=true', async () => {
    const receiver = await startReceiver();
    receivers.push(receiver);
    const { db, env } = await fresh();
    ok(await run(['channels', 'add', '--name', 'guarded', '--platform', 'webhook', '--url', receiver.url], env));
    ok(await run(['channels', 'add', '--name', 'opted-in', '--platform', 'webhook', '--url', receiver.url, '--allow-private-network'], env));
    const guarded = await schedule(env, 'guarded');
    const optedIn = await schedule(env, 'opted-in');
    ok(await run(['cron'], env));
    assert.deepEqual(
      receiver.deliveries.map((d) => d.postId),
      [optedIn],
      'only the opted-in channel reached the receiver',
    );
    const [g, o] = await posts(db, [guarded, optedIn]);
    assert.equal(o?.status, 'published');
    assert.equal(g?.status, 'failed');
    assert.match(g.lastError ?? '', SSRF_REASON);

    const again = await schedule(env, 'guarded');
    ok(await run(['cron'], { ...env, ALLOW_PRIVATE_NETWORK: 'true' }));
    assert.equal((await posts(db, [again]))[0]?.status, 'published');
    assert.deepEqual(receiver.deliveries.map((d) => d.postId), [optedIn, again]);
  });
});
