import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { createTestDatabase, DIALECTS, type TestDatabase } from './helpers/databases.ts';
import { killAll, ROOT, run, runWithInput, testEnv } from './helpers/processes.ts';
import { startReceiver, type Receiver } from './helpers/receiver.ts';

/** Managing posts and channels from the command line: real processes, real databases, a real webhook receiver. */
for (const dialect of DIALECTS) {
  describe(`posts and channels management on ${dialect}`, () => {
    const dbs: TestDatabase[] = [];
    const receivers: Receiver[] = [];
    after(async () => {
      killAll();
      for (const r of receivers) await r.close();
      for (const db of dbs) await db.drop();
    });
    const fresh = async () => {
      const db = await createTestDatabase(dialect);
      dbs.push(db);
      const env = testEnv(db.url);
      const out = path.join(db.dir, 'out.jsonl');
      const r = await run(['channels', 'add', '--name', 'local', '--platform', 'file', '--path', out], env);
      assert.equal(r.code, 0, r.stderr);
      return { db, env, out };
    };
    const ok = async (args: string[], env: NodeJS.ProcessEnv) => {
      const r = await run(args, env);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      return r;
    };
    const schedule = async (env: NodeJS.ProcessEnv, ...args: string[]) => Number((await ok(['schedule', ...args], env)).stdout.trim());

    it('posts list: filters, both orders, pages by cursor, --json', async () => {
      const { env } = await fresh();
      const later = await schedule(env, '--channel', 'local', '--text', 'later one', '--at', '+2h');
      const soon = await schedule(env, '--channel', 'local', '--text', 'soon one\nsecond line', '--at', '+1h');
      const gone = await schedule(env, '--channel', 'local', '--text', 'cancelled one', '--at', '+3h');
      await ok(['cancel', String(gone)], env);
      let r = await ok(['posts', 'list', '--json'], env);
      let page = JSON.parse(r.stdout) as { posts: { id: number; text: string }[]; next: string | null };
      assert.deepEqual(page.posts.map((p) => p.id), [soon, later, gone]);
      assert.equal(page.next, null);
      r = await ok(['posts', 'list', '--order', 'newest', '--limit', '2', '--json'], env);
      page = JSON.parse(r.stdout) as typeof page;
      assert.deepEqual(page.posts.map((p) => p.id), [gone, later]);
      assert.ok(page.next !== null);
      r = await ok(['posts', 'list', '--order', 'newest', '--limit', '2', '--cursor', page.next ?? '', '--json'], env);
      page = JSON.parse(r.stdout) as typeof page;
      assert.deepEqual(page.posts.map((p) => p.id), [soon]);
      r = await ok(['posts', 'list', '--status', 'pending', '--to', '+90m'], env);
      assert.match(r.stdout, new RegExp(`^${soon} +pending +local .* soon one +\\n`, 'm'));
      assert.doesNotMatch(r.stdout, /later one|cancelled one|second line/);
      r = await ok(['posts', 'list', '--limit', '1'], env);
      assert.match(r.stdout, /^More: --cursor a\d+\.\d+$/m);
      r = await run(['posts', 'list', '--status', 'sent'], env);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^post-scheduler: invalid --status "sent": use pending, /);
      r = await run(['posts', 'list', '--limit', '1001'], env);
      assert.equal(r.code, 1);
      r = await run(['posts', 'list', '--channel', 'nope'], env);
      assert.equal(r.stderr, 'post-scheduler: no channel named "nope"\n');
    });

    it('posts show: every attempt with its outcome and error, then the external id; edit and cancel refuse what is not pending', async () => {
      const { env } = await fresh();
      let calls = 0;
      const receiver = await startReceiver(() => (++calls === 1 ? { status: 422, body: '{"error":"too spicy"}' } : { status: 200 }));
      receivers.push(receiver);
      await ok(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url', receiver.url], env);
      const id = await schedule(env, '--channel', 'hook', '--text', 'first try fails');
      await ok(['cron'], env);
      let r = await ok(['posts', 'show', String(id)], env);
      assert.match(r.stdout, new RegExp(`^Post ${id} on hook: failed$`, 'm'));
      assert.match(r.stdout, /^ {2}attempt 1 at \S+ \(\d+ ms\) by worker-\S+: failed \(rejected\): .*422/m, 'a 422: the network refused the post');
      r = await run(['posts', 'edit', String(id), '--text', 'again'], env);
      assert.equal(r.code, 1);
      assert.equal(r.stderr, `post-scheduler: post ${id} is failed; only pending posts can be edited\n`);
      await ok(['retry', String(id)], env);
      await ok(['cron'], env);
      r = await ok(['posts', 'show', String(id), '--json'], env);
      const shown = JSON.parse(r.stdout) as { status: string; channel: string; attempts: { attempt: number; outcome: string; reason: string | null; error: string | null }[]; idempotencyKey?: string };
      assert.equal(shown.status, 'published');
      assert.equal(shown.channel, 'hook');
      assert.deepEqual(shown.attempts.map((a) => [a.attempt, a.outcome, a.reason]), [[1, 'failed', 'rejected'], [2, 'published', null]]);
      assert.equal(shown.idempotencyKey, undefined);
      r = await run(['posts', 'show', '999999'], env);
      assert.equal(r.stderr, 'post-scheduler: no post with id 999999\n');
      const a = await schedule(env, '--channel', 'local', '--text', 'a', '--at', '+1h');
      const b = await schedule(env, '--channel', 'local', '--text', 'b', '--at', '+1h');
      r = await ok(['posts', 'edit', String(a), '--text', 'a, edited', '--at', '2031-01-02T03:04:05Z'], env);
      assert.equal(r.stdout, `Edited post ${a}: due 2031-01-02T03:04:05.000Z\n`);
      r = await ok(['posts', 'show', String(a)], env);
      assert.match(r.stdout, /^ {2}text: a, edited$/m);
      r = await run(['cancel', String(a), String(id), String(b)], env);
      assert.equal(r.code, 1);
      assert.equal(r.stderr, `post-scheduler: post ${id} is published; only pending or unknown posts can be cancelled (changed: ${a}, ${b})\n`);
    });

    it('schedule --key: the same key returns the same post, also when sent at once; other content under it is refused', async () => {
      const { env } = await fresh();
      const args = ['schedule', '--channel', 'local', '--text', 'once', '--key', 'order-42', '--at', '2031-01-01T00:00:00Z'];
      const first = await ok(args, env);
      const again = await ok(args, env);
      assert.equal(again.stdout, first.stdout);
      assert.match(again.stderr, /already scheduled with key order-42/);
      const racing = await Promise.all(Array.from({ length: 4 }, () => run(['schedule', '--channel', 'local', '--text', 'racer', '--key', 'race'], env)));
      assert.ok(racing.every((r) => r.code === 0));
      assert.equal(new Set(racing.map((r) => r.stdout)).size, 1);
      let r = await run(['schedule', '--channel', 'local', '--text', 'not once', '--key', 'order-42'], env);
      assert.equal(r.code, 1);
      assert.equal(r.stderr, `post-scheduler: schedule key "order-42" was used for post ${first.stdout.trim()} with another content: use a new key for a new post\n`);
      r = await run([...args.slice(0, -1), '2031-01-01T00:00:01Z'], env);
      assert.match(r.stderr, /with another time/);
      r = await ok(['posts', 'list', '--json'], env);
      assert.equal((JSON.parse(r.stdout) as { posts: unknown[] }).posts.length, 2);
    });

    it('channels pause: posts wait with their attempts; resume publishes them; scheduling on it warns', async () => {
      const { env, out } = await fresh();
      const id = await schedule(env, '--channel', 'local', '--text', 'wait for me');
      await ok(['channels', 'pause', 'local'], env);
      let r = await ok(['schedule', '--channel', 'local', '--text', 'me too'], env);
      assert.match(r.stderr, /warning: channel local is paused/);
      r = await ok(['channels', 'list'], env);
      assert.match(r.stdout, /local +file +paused/);
      await ok(['cron'], env);
      r = await ok(['posts', 'show', String(id), '--json'], env);
      assert.deepEqual(
        (({ status, attempts }: { status: string; attempts: unknown[] }) => [status, attempts.length])(JSON.parse(r.stdout) as { status: string; attempts: unknown[] }),
        ['pending', 0],
      );
      assert.equal(fs.existsSync(out), false);
      r = await ok(['status'], env);
      assert.match(r.stdout, /Paused by an operator .*\n {2}local since \d{4}-\d\d-\d\dT/);
      await ok(['channels', 'resume', 'local'], env);
      await ok(['cron'], env);
      r = await ok(['posts', 'list', '--status', 'published', '--json'], env);
      assert.equal((JSON.parse(r.stdout) as { posts: unknown[] }).posts.length, 2);
      r = await run(['channels', 'pause', 'nope'], env);
      assert.equal(r.stderr, 'post-scheduler: no channel named "nope"\n');
    });

    it('channels remove: refused with pending posts, --cancel-posts cancels them, history stays; unknown channels refuse scheduling', async () => {
      const { env } = await fresh();
      const done = await schedule(env, '--channel', 'local', '--text', 'published before');
      await ok(['cron'], env);
      const waiting = await schedule(env, '--channel', 'local', '--text', 'waiting', '--at', '+1h');
      let r = await run(['channels', 'remove', 'local'], env);
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'post-scheduler: channel local has posts (1 pending): cancel them first, or remove it with its posts cancelled (--cancel-posts; cancelPosts=true over the API)\n');
      r = await ok(['channels', 'remove', 'local', '--cancel-posts'], env);
      assert.equal(r.stdout, 'Removed channel local (cancelled 1 posts)\n');
      r = await ok(['posts', 'show', String(done)], env);
      assert.match(r.stdout, /^Post \d+ on local \(removed #\d+\): published$/m);
      r = await ok(['posts', 'show', String(waiting), '--json'], env);
      assert.equal((JSON.parse(r.stdout) as { status: string }).status, 'cancelled');
      r = await run(['schedule', '--channel', 'local', '--text', 'x'], env);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /no channel named "local"/);
    });

    it('channels update --url-from rotates a webhook; the URL shows in no output and never goes on argv', async () => {
      const { env } = await fresh();
      const old = await startReceiver();
      const rotated = await startReceiver();
      receivers.push(old, rotated);
      await ok(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url', old.url], env);
      await schedule(env, '--channel', 'hook', '--text', 'to the old one');
      await ok(['cron'], env);
      const secretUrl = `${rotated.url}?token=sekrit-123`;
      let r = await runWithInput(['channels', 'update', '--name', 'hook', '--url-from', 'stdin', '--secret-from', 'env:HOOK_SECRET'], { ...env, HOOK_SECRET: 'shh-456' }, secretUrl + '\n');
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'Channel hook: new URL and secret stored\n');
      await schedule(env, '--channel', 'hook', '--text', 'to the new one');
      r = await ok(['cron'], env);
      assert.doesNotMatch(r.stdout + r.stderr, /sekrit-123|shh-456/);
      assert.deepEqual(old.deliveries.map((d) => d.text), ['to the old one']);
      assert.deepEqual(rotated.deliveries.map((d) => d.text), ['to the new one']);
      assert.ok(rotated.deliveries[0]?.signature !== undefined);
      for (const args of [['channels', 'list', '--json'], ['posts', 'list', '--json'], ['status']]) {
        r = await ok(args, env);
        assert.doesNotMatch(r.stdout + r.stderr, /sekrit-123|shh-456/, args.join(' '));
      }
      r = await run(['channels', 'update', '--name', 'hook', '--url', secretUrl], env);
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'post-scheduler: --url puts the URL on the command line: use --url-from env:NAME, file:PATH or stdin\n');
    });
  });
}

describe('post-scheduler --version', () => {
  it('prints the version of package.json', async () => {
    const { version } = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const r = await run(['--version'], testEnv('sqlite::memory:'));
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `${version}\n`);
  });
});
