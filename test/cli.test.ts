import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './helpers/databases.ts';
import { killAll, ROOT, run, runWithInput, start, testEnv, waitFor } from './helpers/processes.ts';
import { startReceiver } from './helpers/receiver.ts';

/** The command line as a user meets it: real processes, real databases. */
for (const dialect of DIALECTS) {
  describe(`cli on ${dialect}`, () => {
    const dbs: TestDatabase[] = [];
    after(async () => {
      killAll();
      for (const db of dbs) await db.drop();
    });
    const fresh = async () => {
      const db = await createTestDatabase(dialect);
      dbs.push(db);
      return { db, env: testEnv(db.url) };
    };

    it('adds channels, lists them with secrets hidden, schedules, cancels and retries posts', async () => {
      const { db, env } = await fresh();
      const out = path.join(db.dir, 'out.jsonl');
      let r = await run(['channels', 'add', '--name', 'local', '--platform', 'file', '--path', out], env);
      assert.equal(r.code, 0, r.stderr);
      r = await run(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url', 'http://bot:pa55word@127.0.0.1:9/x', '--secret', 'sekret'], env);
      assert.equal(r.code, 0, r.stderr);
      r = await run(['channels', 'add', '--name', 'short', '--platform', 'webhook', '--url', 'http://127.0.0.1:9/s', '--max-length', '10', '--on-unknown', 'retry'], env);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Added channel short \(webhook, on unknown outcome: retry\)/);
      r = await run(['schedule', '--channel', 'short', '--text', 'eleven char'], env);
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'post-scheduler: --text does not fit channel short: text is 11 characters; the channel takes at most 10\n');
      r = await run(['channels', 'update', '--name', 'short', '--on-unknown', 'hold', '--disable'], env);
      assert.equal(r.stdout, 'Channel short: on unknown outcome hold, disabled\n');
      r = await run(['channels', 'list'], env);
      assert.match(r.stdout, /local +file +yes +check/);
      assert.match(r.stdout, /hook +webhook +yes +hold/);
      assert.match(r.stdout, /short +webhook +no +hold/);
      assert.doesNotMatch(r.stdout, /sekret|pa55word/);
      r = await run(['channels', 'list', '--json'], env);
      assert.doesNotMatch(r.stdout, /sekret|pa55word/);
      assert.equal((JSON.parse(r.stdout) as unknown[]).length, 3);

      r = await run(['channels', 'add', '--name', 'local', '--platform', 'file', '--path', out], env);
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'post-scheduler: a channel named "local" already exists\n');

      r = await run(['schedule', '--channel', 'local', '--text', 'hello world'], env);
      assert.equal(r.code, 0, r.stderr);
      const dueId = Number(r.stdout.trim());
      assert.ok(dueId > 0);
      r = await run(['schedule', '--channel', 'local', '--text', 'later', '--at', '+2h'], env);
      const laterId = Number(r.stdout.trim());
      r = await run(['status', '--json'], env);
      const status = JSON.parse(r.stdout) as { counts: Record<string, number> };
      assert.equal(status.counts['duePending'], 1);
      assert.equal(status.counts['scheduledLater'], 1);

      r = await run(['cancel', String(laterId)], env);
      assert.equal(r.code, 0, r.stderr);
      r = await run(['cancel', String(laterId)], env);
      assert.equal(r.code, 1);
      assert.equal(r.stderr, `post-scheduler: post ${laterId} is cancelled; only pending or unknown posts can be cancelled\n`);

      r = await run(['cron'], env);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const lines = fs.readFileSync(out, 'utf8').trim().split('\n');
      assert.equal(lines.length, 1);
      assert.equal((JSON.parse(lines[0] ?? '{}') as { text: string }).text, 'hello world');

      r = await run(['retry', String(dueId)], env);
      assert.equal(r.code, 1);
      assert.equal(r.stderr, `post-scheduler: post ${dueId} is published; only failed or unknown posts can be retried\n`);
      r = await run(['status'], env);
      assert.match(r.stdout, /published +1\n/);
      assert.match(r.stdout, /cancelled +1\n/);
      assert.match(r.stdout, /Last cycles/);
    });

    it('schedule prints only the id on stdout and a line on stderr; a zone-less --at is UTC, a past one is due now', async () => {
      const { db, env } = await fresh();
      await run(['channels', 'add', '--name', 'brand', '--platform', 'file', '--path', path.join(db.dir, 'out.jsonl')], env);
      let r = await run(['schedule', '--channel', 'brand', '--text', 'later', '--at', '2099-12-01T09:00'], { ...env, TZ: 'America/New_York' });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^\d+\n$/);
      assert.match(r.stderr, new RegExp(`^Scheduled post ${r.stdout.trim()} on brand for 2099-12-01T09:00:00\\.000Z \\(in \\d+d( \\d+h)?\\)\n$`));
      r = await run(['schedule', '--channel', 'brand', '--text', 'past', '--at', '2020-01-01'], env);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /^Scheduled post \d+ on brand for 2020-01-01T00:00:00\.000Z \(due now\)\n$/);
      r = await run(['schedule', '--channel', 'brand', '--text', 'soon', '--at', '+5m'], env);
      assert.match(r.stderr, / \(in [45]m( \d+s)?\)\n$/);
      r = await run(['status', '--json'], env);
      const counts = (JSON.parse(r.stdout) as { counts: Record<string, number> }).counts;
      assert.equal(counts['duePending'], 1, 'the past time is due now');
      assert.equal(counts['scheduledLater'], 2);
      r = await run(['schedule', '--channel', 'brand', '--text', 'x', '--at', '2026-02-30'], env);
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'post-scheduler: invalid time "2026-02-30": 2026-02 has 28 days\n');
      r = await run(['schedule', '--channel', 'brand', '--text', 'x', '--at', '+99999999999999d'], env);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^post-scheduler: invalid time "\+99999999999999d": at most 100 years ahead/);
    });

    it('schedule reads a long text from standard input (--text -) or a file (--text-file), exactly', async () => {
      const { db, env } = await fresh();
      await run(['channels', 'add', '--name', 'f', '--platform', 'file', '--path', path.join(db.dir, 'out.jsonl')], env);
      const long = Array.from({ length: 50_000 }, (_, i) => 'aé😀\n "\\\t'[i % 9]).join('');
      assert.equal(long.length, 50_000);
      const file = path.join(db.dir, 'post.txt');
      fs.writeFileSync(file, `${long}\n`);
      const ids: number[] = [];
      let r = await runWithInput(['schedule', '--channel', 'f', '--text', '-'], env, `${long}\n`);
      assert.equal(r.code, 0, r.stderr);
      ids.push(Number(r.stdout.trim()));
      r = await run(['schedule', '--channel', 'f', '--text-file', file], env);
      assert.equal(r.code, 0, r.stderr);
      ids.push(Number(r.stdout.trim()));
      r = await runWithInput(['schedule', '--channel', 'f', '--text', '-'], env, 'two newlines\n\n');
      ids.push(Number(r.stdout.trim()));
      const store = await openStore(parseDatabaseUrl(db.url));
      try {
        assert.equal((await store.getPost(ids[0]!))?.text, long, 'from stdin');
        assert.equal((await store.getPost(ids[1]!))?.text, long, 'from the file');
        assert.equal((await store.getPost(ids[2]!))?.text, 'two newlines\n', 'only one trailing newline is dropped');
      } finally {
        await store.close();
      }
      r = await runWithInput(['schedule', '--channel', 'f', '--text', '-'], env, '');
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'post-scheduler: --text - (standard input): the text is empty\n');
      r = await runWithInput(['schedule', '--channel', 'f', '--text', '-'], env, 'x'.repeat(100_001));
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'post-scheduler: --text - (standard input): the text is 100001 characters; the most is 100000\n');
      r = await run(['schedule', '--channel', 'f', '--text', 'a', '--text-file', file], env);
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'post-scheduler: give exactly one of --text and --text-file\n');
    });

    it('retries failed posts with `retry ID` and `retry --failed`', async () => {
      const { db, env } = await fresh();
      const receiver = await startReceiver(() => ({ status: 422, body: '{"error":"text too long"}' }));
      try {
        await run(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url', receiver.url], env);
        const ids = [];
        for (const text of ['a', 'b', 'c']) ids.push(Number((await run(['schedule', '--channel', 'hook', '--text', text], env)).stdout.trim()));
        await run(['cron'], env);
        let r = await run(['status'], env);
        assert.match(r.stdout, /failed +3\n/);
        assert.match(r.stdout, /HTTP 422: \{"error":"text too long"\}/);
        r = await run(['retry', String(ids[0])], env);
        assert.equal(r.stdout, `Requeued post ${ids[0]}\n`);
        r = await run(['retry', '--failed'], env);
        assert.equal(r.stdout, 'Requeued 2 failed posts\n');
        const store = await openStore(parseDatabaseUrl(db.url));
        try {
          for (const id of ids) {
            const post = await store.getPost(id);
            assert.equal(post?.status, 'pending');
            assert.equal(post?.attemptsBase, post?.attempts, 'attempts keep counting; MAX_ATTEMPTS counts afresh');
          }
        } finally {
          await store.close();
        }
      } finally {
        await receiver.close();
      }
    });

    it('daemon runs a cycle and finishes it on SIGTERM', async () => {
      const { env } = await fresh();
      const receiver = await startReceiver(() => ({ status: 200, delayMs: 1_500 }));
      try {
        await run(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url', receiver.url], env);
        await run(['simulate', '--posts', '3', '--channel', 'hook'], env);
        // TIMEOUT_MS must be below the schedule's interval (5 s here)
        const args = ['daemon', '--cron', '*/5 * * * * *', '--run-immediately', '--timeout-ms', '4900', '--worker-timeout-ms', '4500'];
        const daemon = start(args, { ...env, PUBLISH_TIMEOUT_MS: '4000' }, 30_000);
        await waitFor('the first post sent', () => receiver.deliveries.length > 0);
        daemon.child.kill('SIGTERM');
        const r = await daemon.done;
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.match(r.stdout, /Stopping: finishing the running cycle first/);
        assert.match(r.stdout, /Posts published: +3\n/);
        assert.match(r.stdout, /Scheduler stopped/);
        const starts = (r.stdout.match(/Dispatch cycle started/g) ?? []).length;
        const ends = (r.stdout.match(/Dispatch Summary/g) ?? []).length;
        assert.equal(starts, ends, 'every cycle that started finished before exit');
      } finally {
        await receiver.close();
      }
    });
  });
}

describe('cli input errors', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'post-scheduler-cli-'));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  afterEach(() => killAll());
  const dbFile = path.join(tmp, 'never', 'x.db');
  const env = testEnv(`sqlite:${dbFile}`);

  const cases: [string, string[], NodeJS.ProcessEnv, RegExp][] = [
    ['a zero BATCH_SIZE', ['cron'], { ...env, BATCH_SIZE: '0' }, /^post-scheduler: Invalid configuration: BATCH_SIZE must be at least 1 \(got "0"\)\n$/],
    ['MIN_WORKERS above MAX_WORKERS', ['cron'], { ...env, MIN_WORKERS: '9' }, /MIN_WORKERS \(9\) must not exceed MAX_WORKERS \(5\)\n$/],
    ['WORKER_TIMEOUT_MS not below TIMEOUT_MS', ['status'], { ...env, TIMEOUT_MS: '1000', WORKER_TIMEOUT_MS: '1000' }, /WORKER_TIMEOUT_MS \(1000\) must be less than TIMEOUT_MS \(1000\)/],
    ['an unknown DATABASE_URL scheme', ['status'], { ...env, DATABASE_URL: 'mongodb://root:hunter2@127.0.0.1/x' }, /DATABASE_URL must start with sqlite:, postgres:\/\/ or mysql:\/\/ \(got "mongodb:"\)/],
    ['a mysql:// URL without a database', ['status'], { ...env, DATABASE_URL: 'mysql://root:hunter2@127.0.0.1:3306' }, /^post-scheduler: Invalid configuration: DATABASE_URL needs a database name/],
    ['a bad flag value', ['cron', '--max-workers', 'lots'], env, /MAX_WORKERS must be a whole number \(got "lots"\)/],
    ['an unknown platform', ['channels', 'add', '--name', 'x', '--platform', 'ftp'], env, /unknown platform "ftp": use one of file, webhook/],
    ['a webhook without url', ['channels', 'add', '--name', 'x', '--platform', 'webhook'], env, /webhook channel needs a url/],
    ['a bad time', ['schedule', '--channel', 'x', '--text', 'y', '--at', 'tomorrow'], env, /invalid time "tomorrow"/],
    ['a bad post count', ['simulate', '--posts', '0', '--channel', 'x'], env, /--posts must be a whole number from 1 to 1000000 \(got "0"\)/],
    ['a bad post id', ['cancel', 'abc'], env, /post id must be a whole number/],
    ['retry without id or --failed', ['retry'], env, /give either post ids or --failed/],
    ['a bad id to mark-published', ['mark-published', '7', 'x'], env, /post id must be a whole number/],
    ['an unknown --on-unknown policy', ['channels', 'add', '--name', 'x', '--platform', 'webhook', '--url', 'http://127.0.0.1:1/', '--on-unknown', 'maybe'], env, /invalid --on-unknown "maybe": use one of retry, check, hold/],
    ['--on-unknown check on a platform that cannot look up', ['channels', 'add', '--name', 'x', '--platform', 'webhook', '--url', 'http://127.0.0.1:1/', '--on-unknown', 'check'], env, /--on-unknown check needs a platform that can look up what it published; webhook cannot/],
    ['channels update with nothing to change', ['channels', 'update', '--name', 'x'], env, /nothing to change: give --on-unknown, --disable, --enable, --credentials-from, --url-from, --secret-from or --rate-limit/],
    ['a --rate-limit that is not N/WINDOW', ['channels', 'add', '--name', 'x', '--platform', 'webhook', '--url', 'http://127.0.0.1:1/', '--rate-limit', '20 per minute'], env, /^post-scheduler: invalid --rate-limit: rate limit "20 per minute" must be N\/WINDOW, e\.g\. 20\/60s/],
    ['a --rate-limit of 0 posts', ['channels', 'update', '--name', 'x', '--rate-limit', '0/60s'], env, /invalid --rate-limit: .*: N from 1 to 10000/],
    ['a --rate-limit window too short', ['channels', 'update', '--name', 'x', '--rate-limit', '5/10ms'], env, /invalid --rate-limit: .*: a window from 100ms to 7d/],
    ['channels update with --disable and --enable', ['channels', 'update', '--name', 'x', '--disable', '--enable'], env, /give --disable or --enable, not both/],
    ['a bad cron expression', ['daemon', '--cron', 'every minute'], env, /invalid schedule "every minute"/],
    ['PUBLISH_TIMEOUT_MS above WORKER_TIMEOUT_MS', ['cron'], { ...env, PUBLISH_TIMEOUT_MS: '60000' }, /^post-scheduler: Invalid configuration: PUBLISH_TIMEOUT_MS \(60000\) must not exceed WORKER_TIMEOUT_MS \(50000\)/],
    ['a daemon schedule shorter than TIMEOUT_MS', ['daemon', '--cron', '*/30 * * * * *'], env, /^post-scheduler: Invalid configuration: TIMEOUT_MS \(55000\) must be below the interval of --cron "\*\/30 \* \* \* \* \*" \(30000ms between runs\)\n$/],
    ['a daemon schedule as long as TIMEOUT_MS', ['daemon', '--cron', '*/2 * * * * *', '--timeout-ms', '2000', '--worker-timeout-ms', '1000'], { ...env, PUBLISH_TIMEOUT_MS: '1000' }, /TIMEOUT_MS \(2000\) must be below the interval of --cron "\*\/2 \* \* \* \* \*" \(2000ms between runs\)/],
  ];
  for (const [what, args, caseEnv, message] of cases) {
    it(`rejects ${what} with one line and exit 1`, async () => {
      const r = await run(args, caseEnv, 20_000);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.doesNotMatch(r.stdout + r.stderr, /hunter2/);
    });
  }

  it('cron warns in one stderr line when TIMEOUT_MS is not below its one-minute interval, and runs', async () => {
    const file = path.join(tmp, 'warn', 'x.db');
    const r = await run(['cron', '--timeout-ms', '60000'], { ...env, DATABASE_URL: `sqlite:${file}` }, 20_000);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(
      r.stderr,
      'post-scheduler: warning: TIMEOUT_MS (60000) is not below the one-minute cron interval: a cycle can still run when cron starts the next one, which then exits at once and that minute publishes nothing\n',
    );
    assert.match(r.stdout, /Cron cycle completed successfully/);
    const quiet = await run(['cron', '--timeout-ms', '59999'], { ...env, DATABASE_URL: `sqlite:${file}` }, 20_000);
    assert.equal(quiet.stderr, '');
  });

  it('stops on bad config before touching the database', async () => {
    const r = await run(['cron'], { ...env, BATCH_SIZE: '-1' });
    assert.equal(r.code, 1);
    assert.equal(fs.existsSync(path.dirname(dbFile)), false, 'no database file or folder created');
  });

  it('never shows a password from DATABASE_URL, even when the database is unreachable', async () => {
    const url = 'postgres://app:hunter2@127.0.0.1:1/nowhere';
    for (const args of [['status'], ['cron'], ['channels', 'list']]) {
      const r = await run(args, { ...env, DATABASE_URL: url }, 30_000);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.doesNotMatch(r.stdout + r.stderr, /hunter2/);
      assert.match(r.stdout + r.stderr, /app:\*\*\*@127\.0\.0\.1:1/);
    }
  });

  it('cron on a MySQL/MariaDB URL whose server is down: exit 1, one line naming the database, no password', async () => {
    // port 1: nothing listens there
    const r = await run(['cron'], { ...env, DATABASE_URL: 'mysql://root:hunter2@127.0.0.1:1/x' }, 30_000);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const errors = (r.stdout + r.stderr).split('\n').filter((l) => /✗|error/i.test(l));
    assert.equal(errors.length, 1, r.stdout + r.stderr);
    assert.match(errors[0] ?? '', /Database unreachable \(mysql:\/\/root:\*\*\*@127\.0\.0\.1:1\/x\): cannot connect to MySQL/);
    assert.doesNotMatch(r.stdout + r.stderr, /hunter2/);
    assert.doesNotMatch(r.stdout, /Spawning worker/);
    for (const args of [['status'], ['status', '--json'], ['channels', 'list'], ['migrate']]) {
      const other = await run(args, { ...env, DATABASE_URL: 'mariadb://root:hunter2@127.0.0.1:1/x' }, 30_000);
      assert.equal(other.code, 1, `${args.join(' ')}: ${other.stdout}${other.stderr}`);
      assert.equal(other.stderr, 'post-scheduler: cannot connect to MySQL at mysql://root:***@127.0.0.1:1/x: connect ECONNREFUSED 127.0.0.1:1\n', args.join(' '));
      assert.doesNotMatch(other.stdout, /hunter2/);
    }
  });

  it('mentions mysql:// in the --database-url help', async () => {
    const r = await run(['--help'], env);
    assert.match(r.stdout, /--database-url <url>\s[^-]{0,200}mysql:\/\//);
  });

  it('stops at once with one line when the SQLite folder cannot be created', async () => {
    const regularFile = path.join(tmp, 'plain-file');
    fs.writeFileSync(regularFile, 'not a folder\n');
    const cases: [string, RegExp][] = [
      ['/proc/nope/x.db', /^post-scheduler: cannot create the folder for SQLite database \/proc\/nope\/x\.db: \/proc is not writable\n$/],
      [path.join(regularFile, 'x.db'), new RegExp(`^post-scheduler: cannot create the folder for SQLite database ${regularFile}/x\\.db: ${regularFile} is not a directory\\n$`)],
    ];
    for (const [file, message] of cases) {
      // a hang (Node's recursive mkdir loops on such paths) is killed at 20 s and fails here
      const r = await run(['cron'], { ...env, DATABASE_URL: `sqlite:${file}` }, 20_000);
      assert.equal(r.signal, null, `${file}: the process ended by itself`);
      assert.equal(r.code, 1, `${file}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(r.stdout, '', 'no cycle started');
    }
  });

  it('creates the folders of a fresh SQLite path, one level at a time', async () => {
    const file = path.join(tmp, 'fresh', 'a', 'b', 'x.db');
    const r = await run(['status', '--json'], { ...env, DATABASE_URL: `sqlite:${file}` }, 20_000);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { counts: { published: number } }).counts.published, 0);
    assert.ok(fs.statSync(file).isFile());
  });

  it('lists the commands in --help', async () => {
    const r = await run(['--help'], env);
    for (const command of ['migrate', 'channels', 'schedule', 'simulate', 'cron', 'daemon', 'status', 'retry', 'cancel']) {
      assert.match(r.stdout, new RegExp(`\\n  ${command}\\b`));
    }
  });
});

describe('entry points', () => {
  after(() => killAll());

  it('npm run demo publishes 23 posts with 5 workers and shows the status', async () => {
    const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'post-scheduler-demo-'));
    try {
      const env = testEnv('');
      delete env['DATABASE_URL'];
      const r = await start([], env, 60_000, path.join(ROOT, 'scripts', 'demo.mjs'), cwd).done;
      assert.equal(r.code, 0, r.stdout);
      assert.match(r.stdout, /\[DISPATCHER\] Calculated worker count: 5 \(pending=23, batch=5, max=5\)/);
      assert.match(r.stdout, /Workers spawned: +5\n/);
      assert.match(r.stdout, /Posts published: +23\n/);
      assert.match(r.stdout, /\[CRON\] Cron cycle completed successfully in \d+ms/);
      assert.match(r.stdout, /published +23\n/);
      assert.ok(fs.existsSync(path.join(cwd, 'data', 'post-scheduler.db')), 'the embedded default database');
      assert.equal(fs.readFileSync(path.join(cwd, 'data', 'demo-published.jsonl'), 'utf8').trim().split('\n').length, 23);
    } finally {
      fs.rmSync(cwd, { recursive: true, force: true });
    }
  });

  it('the library runs a cycle in-process: runCycle from the package entry', async () => {
    const db = await createTestDatabase('sqlite');
    try {
      const lib = (await import(path.join(ROOT, 'dist', 'index.js'))) as typeof import('../src/index.ts');
      const config = lib.loadConfig({ DATABASE_URL: db.url, LOG_FORMAT: 'json' });
      const store = await lib.openStore(config.database);
      try {
        await store.migrate();
        const channel = await store.addChannel({ name: 'local', platform: 'file', settings: { path: path.join(db.dir, 'out.jsonl') }, onUnknown: 'check' });
        await store.schedulePosts([1, 2].map((i) => ({ channelId: channel.id, text: `p${i}`, runAt: new Date(Date.now() - 1_000) })));
        // the operations the CLI uses, from the package entry, with the caller's logger
        const said: string[] = [];
        const logger = { scope: 'APP', info: (m: string) => said.push(m), warn: (m: string) => said.push(m), error: (m: string) => said.push(m), blank: () => undefined };
        const scheduled = await lib.schedulePost(store, { channel: 'local', parts: [{ text: 'p3', images: [] }], runAt: new Date(Date.now() - 1_000), key: 'app-1' }, { log: logger });
        assert.equal(scheduled.created, true);
        assert.equal((await lib.schedulePost(store, { channel: 'local', parts: [{ text: 'p3', images: [] }], runAt: new Date(), key: 'app-1' })).id, scheduled.id);
        assert.deepEqual(said, [`Scheduled post ${scheduled.id} on local (key app-1)`]);
        await assert.rejects(lib.showPost(store, 999_999), (e: unknown) => e instanceof lib.OperationError && e.kind === 'not-found');
        await assert.rejects(lib.schedulePost(store, { channel: 'local', parts: [{ text: 'other', images: [] }], runAt: new Date(), key: 'app-1' }), (e: unknown) => e instanceof lib.OperationError && e.kind === 'conflict');
        assert.equal((await lib.listPosts(store, { statuses: ['pending'] })).posts.length, 3);
        const lines: string[] = [];
        const result = await lib.runCycle({ config, log: { scope: 'DISPATCHER', info: (m) => lines.push(m), warn: (m) => lines.push(m), error: (m) => lines.push(m), blank: () => undefined } });
        assert.equal(result.exitCode, 0, lines.join('\n'));
        assert.equal(result.pending, 3);
        assert.equal(result.workersSpawned, 1);
        assert.equal((await store.status(1)).counts.published, 3);
        assert.deepEqual(result.posts, { published: 3, retried: 0, failed: 0, held: 0 });
        assert.deepEqual((await lib.showPost(store, scheduled.id)).attempts.map((a) => a.outcome), ['published']);
      } finally {
        await store.close();
      }
    } finally {
      await db.drop();
    }
  });

  it('cron stopped by SIGTERM says so (not "timed out") and exits 2', async () => {
    const db = await createTestDatabase('sqlite');
    const receiver = await startReceiver(() => ({ hang: true }));
    try {
      const env = testEnv(db.url, { ALLOW_PRIVATE_NETWORK: 'true', KILL_GRACE_MS: '1000', RETRY_BASE_MS: '60000' });
      let r = await run(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url', receiver.url], env);
      assert.equal(r.code, 0, r.stderr);
      await run(['simulate', '--posts', '3', '--channel', 'hook'], env);
      const cron = start(['cron'], env, 30_000);
      await waitFor('a worker sending a post', () => receiver.deliveries.length > 0);
      cron.child.kill('SIGTERM');
      r = await cron.done;
      assert.equal(r.code, 2, r.stdout + r.stderr);
      assert.match(r.stdout, /\[CRON\] Stopped by signal after \d+ms: workers were told to stop \(exit code 2\)\n/);
      assert.doesNotMatch(r.stdout, /\[CRON\].*timed out/);
    } finally {
      await receiver.close();
      await db.drop();
    }
  });

  it('cron, and the seed entry, exit once the cycle is over even when a handle keeps the event loop alive', async () => {
    const db = await createTestDatabase('sqlite');
    try {
      // in the dispatcher's process only: an interval that would keep it alive for good
      const hook = path.join(db.dir, 'keep-alive.cjs');
      fs.writeFileSync(hook, "if (!process.argv.includes('--worker-id')) setInterval(() => undefined, 60_000);\n");
      const env = { ...testEnv(db.url), NODE_OPTIONS: `--require ${hook}` };
      for (const [args, file] of [
        [['cron'], undefined],
        [[], path.join(ROOT, 'dist', 'cron', 'post-scheduler.cron.js')],
      ] as const) {
        const r = await start(args, env, 20_000, file).done;
        assert.equal(r.code, 0, `${file ?? 'cron'}: ${r.stderr}`);
        assert.match(r.stdout, /Cron cycle completed successfully/);
      }
    } finally {
      await db.drop();
    }
  });

  it('node dist/cron/post-scheduler.cron.js and tsx src/cron/post-scheduler.cron.ts each run one cycle', async () => {
    const db = await createTestDatabase('sqlite');
    try {
      const env = testEnv(db.url);
      const out = path.join(db.dir, 'out.jsonl');
      await run(['channels', 'add', '--name', 'local', '--platform', 'file', '--path', out], env);
      await run(['simulate', '--posts', '7', '--channel', 'local'], env);
      const compiled = await start([], env, 30_000, path.join(ROOT, 'dist', 'cron', 'post-scheduler.cron.js')).done;
      assert.equal(compiled.code, 0, compiled.stdout + compiled.stderr);
      assert.match(compiled.stdout, /Workers spawned: +2\n/);
      assert.match(compiled.stdout, /Posts published: +7\n/);
      await run(['simulate', '--posts', '3', '--channel', 'local'], env);
      const tsx = path.join(ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs');
      const source = await start([path.join(ROOT, 'src', 'cron', 'post-scheduler.cron.ts')], env, 60_000, tsx).done;
      assert.equal(source.code, 0, source.stdout + source.stderr);
      assert.match(source.stdout, /Posts published: +3\n/);
      assert.equal(fs.readFileSync(out, 'utf8').trim().split('\n').length, 10);
    } finally {
      await db.drop();
    }
  });
});
