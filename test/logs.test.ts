import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { openStore } from '../src/store/open.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './helpers/databases.ts';
import { killAll, ROOT, run, start, testEnv } from './helpers/processes.ts';
import { startReceiver } from './helpers/receiver.ts';

/**
 * Logs with real processes: LOG_FORMAT=json gives one JSON object a line with the
 * structured fields (post id, channel, worker id, cycle id, duration), errors included;
 * LOG_TIMESTAMPS=true starts each text line with its ISO time.
 */
type Line = Record<string, unknown> & { level: string; scope: string; msg: string; time: string };

function jsonLines(text: string, where: string): Line[] {
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as Line;
      } catch {
        assert.fail(`${where}: not a JSON line: ${l}`);
      }
    });
}

const ISO_LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[(CRON|DISPATCHER|WORKER worker-[^\]]+)\] /;

for (const dialect of DIALECTS) {
  describe(`logs of a cycle on ${dialect}`, () => {
    const cleanups: (() => Promise<void>)[] = [];
    afterEach(async () => {
      killAll();
      for (const c of cleanups.splice(0).reverse()) await c();
    });
    after(() => killAll());

    async function setup(): Promise<{ db: TestDatabase; ids: number[] }> {
      const db = await createTestDatabase(dialect);
      cleanups.push(() => db.drop());
      const receiver = await startReceiver((d) => (d.text === 'bad' ? { status: 400 } : d.text === 'flaky' ? { status: 408 } : { status: 200 }));
      cleanups.push(() => receiver.close());
      const store = await openStore(parseDatabaseUrl(db.url));
      cleanups.push(() => store.close());
      await store.migrate();
      const hook = await store.addChannel({ name: 'hook', platform: 'webhook', settings: { url: receiver.url }, onUnknown: 'hold' });
      const runAt = new Date(Date.now() - 1_000);
      const ids = await store.schedulePosts(['ok1', 'ok2', 'bad', 'flaky'].map((text) => ({ channelId: hook.id, text, runAt })));
      return { db, ids };
    }

    it('LOG_FORMAT=json: every line is JSON, with post id, channel, worker id, cycle id and durations', async () => {
      const { db, ids } = await setup();
      const [, , bad, flaky] = ids;
      // a retry delay of a minute: the flaky post is retried by a later cycle, not this one
      const r = await run(['cron'], testEnv(db.url, { LOG_FORMAT: 'json', RETRY_BASE_MS: '60000', RETRY_MAX_MS: '60000' }), 60_000);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const lines = [...jsonLines(r.stdout, 'stdout'), ...jsonLines(r.stderr, 'stderr')];
      for (const l of lines) {
        assert.ok(['info', 'warn', 'error'].includes(l.level) && typeof l.msg === 'string' && typeof l.scope === 'string', JSON.stringify(l));
        assert.ok(!Number.isNaN(Date.parse(l.time)), JSON.stringify(l));
      }
      const failed = lines.find((l) => l.outcome === 'failed');
      assert.ok(failed !== undefined, r.stdout);
      assert.equal(failed.postId, bad);
      assert.equal(failed.channel, 'hook');
      assert.equal(failed.attempt, 1);
      assert.equal(typeof failed.durationMs, 'number');
      assert.match(String(failed.workerId), /^worker-/);
      assert.equal(failed.scope, `WORKER ${String(failed.workerId)}`);
      assert.equal(typeof failed.cycleId, 'number');
      const retried = lines.find((l) => l.outcome === 'retry');
      assert.equal(retried?.postId, flaky, r.stdout);
      assert.equal(retried?.level, 'warn');
      // the dispatcher's lines after the cycle started carry its id, the same as the workers'
      const exit = lines.find((l) => l.scope === 'DISPATCHER' && /^Worker .* completed/.test(l.msg));
      assert.equal(exit?.cycleId, failed.cycleId, r.stdout);
      assert.equal(exit?.workerId, failed.workerId);
      assert.equal(typeof exit?.durationMs, 'number');
      const summary = lines.find((l) => l.scope === failed.scope && l.published === 2);
      assert.ok(summary !== undefined && summary.failed === 1 && summary.retried === 1 && typeof summary.durationMs === 'number', r.stdout);
      assert.ok(lines.some((l) => l.scope === 'CRON' && /completed successfully/.test(l.msg)));
    });

    it('LOG_TIMESTAMPS=true starts each text line with its ISO time; without it the lines are the seed\'s', async () => {
      const { db } = await setup();
      const dated = await run(['cron'], testEnv(db.url, { LOG_TIMESTAMPS: 'true', RETRY_BASE_MS: '60000', RETRY_MAX_MS: '60000' }), 60_000);
      assert.equal(dated.code, 0, dated.stdout + dated.stderr);
      const lines = dated.stdout.split('\n').filter((l) => l !== '');
      assert.ok(lines.length > 10, dated.stdout);
      for (const l of lines) assert.match(l, ISO_LINE);
      assert.ok(lines.some((l) => / \[WORKER worker-[^\]]+\] Post \d+ failed: webhook/.test(l)), dated.stdout);
      const plain = await run(['cron'], testEnv(db.url), 60_000);
      assert.equal(plain.code, 0, plain.stdout + plain.stderr);
      assert.match(plain.stdout, /^\[CRON\] Post scheduler cron started at /);
      for (const l of plain.stdout.split('\n')) assert.ok(l === '' || l.startsWith('['), l);
    });
  });
}

describe('errors in JSON', () => {
  after(() => killAll());
  const env = testEnv('sqlite:/nonexistent-dir-never-created/x.db');

  it('a bad configuration is one JSON line on stderr, from the CLI and from the seed entry point', async () => {
    for (const [args, extra] of [
      [['cron'], { LOG_FORMAT: 'json', BATCH_SIZE: 'abc' }],
      [['--log-format', 'json', 'cron'], { BATCH_SIZE: 'abc' }],
      [['status'], { LOG_FORMAT: 'json', LOG_TIMESTAMPS: 'maybe' }],
    ] as const) {
      const r = await run(args, { ...env, ...extra }, 20_000);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stdout, '');
      const lines = jsonLines(r.stderr, 'stderr');
      assert.equal(lines.length, 1, r.stderr);
      assert.equal(lines[0]?.level, 'error');
      assert.match(lines[0]?.msg ?? '', /^Invalid configuration: (BATCH_SIZE must be a whole number|LOG_TIMESTAMPS must be true or false)/);
    }
    const seed = start([], { ...env, LOG_FORMAT: 'json', BATCH_SIZE: 'abc' }, 20_000, path.join(ROOT, 'dist', 'cron', 'post-scheduler.cron.js'));
    const r = await seed.done;
    assert.equal(r.code, 1);
    assert.match(jsonLines(r.stderr, 'seed stderr')[0]?.msg ?? '', /BATCH_SIZE/);
    // text by default: the one line as before
    const text = await run(['status'], { ...env, ALERT_CHANNEL: 'x'.repeat(201) }, 20_000);
    assert.match(text.stderr, /^post-scheduler: Invalid configuration: ALERT_CHANNEL must be at most 200 characters \(got "x+"\)\n$/);
  });

  it('a database error is JSON with LOG_FORMAT=json, and never shows the password', async () => {
    const url = 'postgres://app:hunter2@127.0.0.1:1/nowhere';
    const status = await run(['status'], { ...env, DATABASE_URL: url, LOG_FORMAT: 'json', DB_TIMEOUT_MS: '2000' }, 30_000);
    assert.equal(status.code, 1);
    const [line] = jsonLines(status.stderr, 'status stderr');
    assert.equal(line?.level, 'error');
    assert.match(line?.msg ?? '', /app:\*\*\*@127\.0\.0\.1:1/);
    const cron = await run(['cron'], { ...env, DATABASE_URL: url, LOG_FORMAT: 'json', DB_TIMEOUT_MS: '2000' }, 30_000);
    assert.equal(cron.code, 1);
    const lines = [...jsonLines(cron.stdout, 'cron stdout'), ...jsonLines(cron.stderr, 'cron stderr')];
    assert.ok(lines.some((l) => l.level === 'error' && /Database unreachable/.test(l.msg)), cron.stdout);
    assert.doesNotMatch(status.stderr + cron.stdout + cron.stderr, /hunter2/);
  });
});

describe('an error nobody caught', () => {
  after(() => killAll());
  it('is one JSON line of the worker with LOG_FORMAT=json, and the cycle reports the worker failed', async () => {
    const db = await createTestDatabase('sqlite');
    try {
      // an operator's module with a bug: a throw inside a timer, which no promise catches
      const moduleDir = path.join(db.dir, 'modules');
      fs.mkdirSync(moduleDir);
      const file = path.join(moduleDir, 'buggy.mjs');
      fs.writeFileSync(
        file,
        `export default {
  createPublisher() {
    return {
      async publish() {
        setTimeout(() => { throw new Error('boom in a timer'); }, 0);
        await new Promise((resolve) => setTimeout(resolve, 5000));
        return { externalId: 'never', externalUrl: null };
      },
      async close() {},
    };
  },
};
`,
      );
      const store = await openStore(parseDatabaseUrl(db.url));
      try {
        await store.migrate();
        const channel = await store.addChannel({ name: 'buggy', platform: 'module', settings: { module_path: file }, onUnknown: 'hold' });
        await store.schedulePosts([{ channelId: channel.id, text: 'x', runAt: new Date(Date.now() - 1_000) }]);
      } finally {
        await store.close();
      }
      const r = await run(['cron'], testEnv(db.url, { LOG_FORMAT: 'json', MODULE_DIR: moduleDir }), 60_000);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const crash = jsonLines(r.stderr, 'stderr').find((l) => l.scope === 'post-scheduler worker');
      assert.equal(crash?.level, 'error', r.stderr);
      assert.equal(crash.msg, 'uncaught error: boom in a timer');
      assert.ok(jsonLines(r.stdout, 'stdout').some((l) => l.level === 'error' && /^Worker .* failed with code 1/.test(l.msg)), r.stdout);
    } finally {
      await db.drop();
    }
  });
});

describe('an ALERT_CHANNEL that names no channel', () => {
  after(() => killAll());
  it('is one error line of the cycle, which still runs', async () => {
    const db = await createTestDatabase('sqlite');
    try {
      const r = await run(['cron'], testEnv(db.url, { LOG_FORMAT: 'json', ALERT_CHANNEL: 'nowhere' }), 60_000);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const lines = jsonLines(r.stdout, 'stdout');
      assert.equal(lines.filter((l) => l.level === 'error').map((l) => l.msg).join('\n'), 'ALERT_CHANNEL "nowhere" names no channel (see channels list): failures are not reported');
    } finally {
      await db.drop();
    }
  });
});
