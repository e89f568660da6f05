import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, configToEnv, cronIntervalWarning, describeDatabase, loadConfig, parseDatabaseUrl, redactUrl, scheduleIntervalProblem } from '../src/config.ts';
import { scheduleIntervalMs } from '../src/cron/init-scheduler.ts';
import { backoffDelay } from '../src/backoff.ts';
import { describeDue, parseWhen, WhenError } from '../src/when.ts';

describe('config', () => {
  it('has the seed defaults', () => {
    const c = loadConfig({});
    assert.equal(c.batchSize, 5);
    assert.equal(c.maxWorkers, 5);
    assert.equal(c.minWorkers, 1);
    assert.equal(c.timeoutMs, 55_000);
    assert.equal(c.workerTimeoutMs, 50_000);
    assert.equal(c.workerConcurrency, 5, 'WORKER_CONCURRENCY defaults to BATCH_SIZE');
    assert.equal(c.workerSizing, 'seed', "the seed's formula unless WORKER_SIZING=deadline");
    assert.equal(loadConfig({ WORKER_SIZING: 'deadline' }).workerSizing, 'deadline');
    assert.equal(c.maxAttempts, 5);
    assert.equal(c.workerMaxHeapMb, 96);
    assert.equal(c.logFormat, 'text');
    assert.equal(c.globalMaxWorkers, null, 'no cap across hosts unless set');
    assert.equal(loadConfig({ GLOBAL_MAX_WORKERS: '8' }).globalMaxWorkers, 8);
    assert.deepEqual(c.database, { dialect: 'sqlite', path: path.resolve('data/post-scheduler.db') });
    assert.ok(Object.isFrozen(c));
  });

  it('lets flags override the environment', () => {
    const c = loadConfig({ BATCH_SIZE: '7', MAX_WORKERS: '9' }, { BATCH_SIZE: '10' });
    assert.equal(c.batchSize, 10);
    assert.equal(c.maxWorkers, 9);
    assert.equal(c.workerConcurrency, 10);
  });

  const bad: [Record<string, string>, RegExp][] = [
    [{ BATCH_SIZE: '0' }, /^Invalid configuration: BATCH_SIZE must be at least 1 \(got "0"\)$/],
    [{ MAX_WORKERS: '-2' }, /^Invalid configuration: MAX_WORKERS must be at least 1 \(got "-2"\)$/],
    [{ BATCH_SIZE: 'five' }, /^Invalid configuration: BATCH_SIZE must be a whole number \(got "five"\)$/],
    [{ TIMEOUT_MS: '1.5' }, /TIMEOUT_MS must be a whole number/],
    [{ MIN_WORKERS: '6' }, /MIN_WORKERS \(6\) must not exceed MAX_WORKERS \(5\)/],
    [{ WORKER_TIMEOUT_MS: '55000' }, /WORKER_TIMEOUT_MS \(55000\) must be less than TIMEOUT_MS \(55000\)/],
    [{ WORKER_CONCURRENCY: '0' }, /WORKER_CONCURRENCY/],
    [{ WORKER_SIZING: 'fast' }, /^Invalid configuration: WORKER_SIZING must be "seed" or "deadline" \(got "fast"\)$/],
    [{ GLOBAL_MAX_WORKERS: '0' }, /^Invalid configuration: GLOBAL_MAX_WORKERS must be at least 1 \(got "0"\)$/],
    [{ WORKER_IDLE_MS: '-1' }, /^Invalid configuration: WORKER_IDLE_MS must be at least 0 \(got "-1"\)$/],
    [{ WORKER_IDLE_MS: '3600001' }, /^Invalid configuration: WORKER_IDLE_MS must be at most 3600000 \(got "3600001"\)$/],
    [{ WORKER_MAX_HEAP_MB: '0' }, /^Invalid configuration: WORKER_MAX_HEAP_MB must be at least 1 \(got "0"\)$/],
    [{ WORKER_MAX_HEAP_MB: '65537' }, /^Invalid configuration: WORKER_MAX_HEAP_MB must be at most 65536 \(got "65537"\)$/],
    [{ MAX_ATTEMPTS: '' }, /MAX_ATTEMPTS must be a whole number/],
    [{ PUBLISH_TIMEOUT_MS: '50001' }, /^Invalid configuration: PUBLISH_TIMEOUT_MS \(50001\) must not exceed WORKER_TIMEOUT_MS \(50000\)/],
    [{ TIMEOUT_MS: '3000', WORKER_TIMEOUT_MS: '2000', PUBLISH_TIMEOUT_MS: '2500' }, /PUBLISH_TIMEOUT_MS \(2500\) must not exceed WORKER_TIMEOUT_MS \(2000\)/],
    [{ RETRY_BASE_MS: '10', RETRY_MAX_MS: '5' }, /RETRY_BASE_MS \(10\) must not exceed RETRY_MAX_MS \(5\)/],
    [{ LOG_FORMAT: 'xml' }, /LOG_FORMAT must be "text" or "json"/],
    [{ LOG_TIMESTAMPS: 'sometimes' }, /^Invalid configuration: LOG_TIMESTAMPS must be true or false \(got "sometimes"\)$/],
    [{ ALERT_CHANNEL: 'o'.repeat(201) }, /^Invalid configuration: ALERT_CHANNEL must be at most 200 characters/],
    [{ DATABASE_URL: 'mongodb://root:hunter2@127.0.0.1/x' }, /DATABASE_URL must start with sqlite:, postgres:\/\/ or mysql:\/\/ \(got "mongodb:"\)/],
    [{ DATABASE_URL: 'mysql://root:hunter2@127.0.0.1:3306' }, /DATABASE_URL needs a database name of letters, digits and _ after the host/],
    [{ DATABASE_URL: 'mysql://root:hunter2@127.0.0.1:3306/' }, /DATABASE_URL needs a database name/],
    [{ DATABASE_URL: 'mariadb://root:hunter2@127.0.0.1/post-scheduler' }, /DATABASE_URL needs a database name/],
    [{ DATABASE_URL: 'mysql://root:hunter2@127.0.0.1/a%60b' }, /DATABASE_URL needs a database name/],
    [{ DATABASE_URL: 'mysql://root:hunter2@/x' }, /DATABASE_URL (is not a valid mysql:\/\/ URL|has no host)/],
    [{ DATABASE_URL: 'postgres://u:hunter2@' }, /DATABASE_URL/],
    [{ DATABASE_URL: 'sqlite:' }, /needs a file path/],
  ];
  for (const [env, message] of bad) {
    it(`rejects ${JSON.stringify(env)} with one line naming the problem`, () => {
      assert.throws(
        () => loadConfig(env),
        (e: unknown) => {
          assert.ok(e instanceof ConfigError);
          assert.match(e.message, message);
          assert.ok(!e.message.includes('\n'));
          assert.ok(!e.message.includes('hunter2'));
          return true;
        },
      );
    });
  }

  it('reads LOG_TIMESTAMPS and ALERT_CHANNEL, off by default, and hands them to workers', () => {
    const c = loadConfig({});
    assert.equal(c.logTimestamps, false);
    assert.equal(c.alertChannel, null);
    const set = loadConfig({ LOG_TIMESTAMPS: 'TRUE', ALERT_CHANNEL: ' ops ' });
    assert.equal(set.logTimestamps, true);
    assert.equal(set.alertChannel, 'ops');
    assert.equal(loadConfig(configToEnv(set)).logTimestamps, true);
    assert.equal(loadConfig(configToEnv(set)).alertChannel, 'ops');
  });

  it('defaults PUBLISH_TIMEOUT_MS to 10000, or to a shorter WORKER_TIMEOUT_MS', () => {
    assert.equal(loadConfig({}).publishTimeoutMs, 10_000);
    assert.equal(loadConfig({ TIMEOUT_MS: '4000', WORKER_TIMEOUT_MS: '3500' }).publishTimeoutMs, 3_500);
  });

  it('accepts PUBLISH_TIMEOUT_MS equal to WORKER_TIMEOUT_MS', () => {
    assert.equal(loadConfig({ PUBLISH_TIMEOUT_MS: '50000' }).publishTimeoutMs, 50_000);
  });

  it('warns about a TIMEOUT_MS not below the one-minute cron interval; a daemon schedule must be longer', () => {
    assert.equal(cronIntervalWarning(loadConfig({})), null, 'the default 55000 is fine');
    assert.match(cronIntervalWarning(loadConfig({ TIMEOUT_MS: '60000' })) ?? '', /^TIMEOUT_MS \(60000\) is not below the one-minute cron interval: /);
    assert.equal(scheduleIntervalProblem(loadConfig({}), 60_000, '--cron "* * * * *"'), null);
    assert.equal(
      scheduleIntervalProblem(loadConfig({}), 55_000, '--cron "x"'),
      'Invalid configuration: TIMEOUT_MS (55000) must be below the interval of --cron "x" (55000ms between runs)',
    );
    assert.equal(scheduleIntervalMs('*/30 * * * * *'), 30_000);
    assert.equal(scheduleIntervalMs('* * * * *'), 60_000);
    assert.equal(scheduleIntervalMs('0,30 9 * * *'), 30 * 60_000, 'the shortest gap, wherever the next run falls');
    assert.throws(() => scheduleIntervalMs('every minute'), /invalid schedule "every minute"/);
  });

  it('reads postgres URLs with a schema, and never shows their password', () => {
    const c = loadConfig({ DATABASE_URL: 'postgres://app:s3cret@db.example:5432/main?schema=sched' });
    assert.equal(c.database.dialect, 'postgres');
    assert.equal(c.databaseLabel, 'postgres://app:***@db.example:5432/main (schema sched)');
    assert.equal(loadConfig(configToEnv(c)).databaseLabel, c.databaseLabel, 'round-trips through the worker env');
    assert.equal(redactUrl('postgresql://a:b@h/d?password=x'), 'postgresql://a:***@h/d?password=***');
  });

  it('reads mysql:// and mariadb:// URLs (the database from the path), and never shows their password', () => {
    const c = loadConfig({ DATABASE_URL: 'mysql://app:s3cret@db.example:3306/sched' });
    assert.deepEqual(c.database, { dialect: 'mysql', url: 'mysql://app:s3cret@db.example:3306/sched', database: 'sched' });
    assert.equal(c.databaseLabel, 'mysql://app:***@db.example:3306/sched');
    assert.equal(loadConfig(configToEnv(c)).databaseLabel, c.databaseLabel, 'round-trips through the worker env');
    const m = loadConfig({ DATABASE_URL: 'mariadb://app:p%40ss%2Fw@db.example/post_scheduler?password=x' });
    assert.equal(m.database.dialect, 'mysql');
    assert.ok(m.database.dialect === 'mysql' && m.database.url.startsWith('mysql://app:p%40ss%2Fw@db.example/'), 'a mariadb:// URL is read as mysql://');
    assert.ok(m.database.dialect === 'mysql' && m.database.database === 'post_scheduler');
    assert.equal(m.databaseLabel, 'mysql://app:***@db.example/post_scheduler?password=***');
    assert.doesNotMatch(m.databaseLabel, /p%40ss|ss%2Fw/);
    assert.equal(describeDatabase(parseDatabaseUrl('mysql://root@127.0.0.1:3306/test')), 'mysql://root@127.0.0.1:3306/test', 'no password: nothing to hide');
  });
});

describe('when', () => {
  const now = new Date('2026-11-28T12:00:00.000Z');
  const cases: [string, string][] = [
    ['now', '2026-11-28T12:00:00.000Z'],
    ['+30s', '2026-11-28T12:00:30.000Z'],
    ['+5m', '2026-11-28T12:05:00.000Z'],
    ['+2h', '2026-11-28T14:00:00.000Z'],
    ['+1d', '2026-11-29T12:00:00.000Z'],
    ['2026-12-01T09:00:00Z', '2026-12-01T09:00:00.000Z'],
    ['2026-12-01T09:00:00+02:00', '2026-12-01T07:00:00.000Z'],
    ['2026-12-01T09:00', '2026-12-01T09:00:00.000Z'],
  ];
  for (const [input, expected] of cases) {
    it(`${input} -> ${expected}`, () => assert.equal(parseWhen(input, now).toISOString(), expected));
  }
  for (const input of ['tomorrow', '+5x', '2026-13-45T99:00:00Z', '-5m']) {
    it(`rejects ${input}`, () => assert.throws(() => parseWhen(input, now), /invalid time/));
  }

  const more: [string, string][] = [
    ['2026-12-01', '2026-12-01T00:00:00.000Z'],
    ['2026-12-01 09:30:15', '2026-12-01T09:30:15.000Z'],
    ['2026-12-01T09:00:00.5', '2026-12-01T09:00:00.500Z'],
    ['2026-12-01T09:00:00-0530', '2026-12-01T14:30:00.000Z'],
    ['2028-02-29T23:59:59Z', '2028-02-29T23:59:59.000Z'],
    ['2000-02-29', '2000-02-29T00:00:00.000Z'],
    ['2000-01-01T00:00:00Z', '2000-01-01T00:00:00.000Z'],
    ['2020-06-01T08:00:00Z', '2020-06-01T08:00:00.000Z'],
    ['+36525d', '2126-11-29T12:00:00.000Z'],
  ];
  for (const [input, expected] of more) {
    it(`${input} -> ${expected} (no zone: UTC; a past time is kept, so it is due at once)`, () => {
      const previous = process.env['TZ'];
      process.env['TZ'] = 'Asia/Kolkata';
      try {
        assert.equal(parseWhen(input, now).toISOString(), expected);
      } finally {
        if (previous === undefined) delete process.env['TZ'];
        else process.env['TZ'] = previous;
      }
    });
  }

  const refused: [string, RegExp][] = [
    ['2026-02-30', /^invalid time "2026-02-30": 2026-02 has 28 days$/],
    ['2026-02-29', /2026-02 has 28 days/],
    ['1900-02-29', /1900-02 has 28 days/],
    ['2026-04-31T10:00:00Z', /2026-04 has 30 days/],
    ['2026-00-10', /there is no month 00/],
    ['2026-12-00', /2026-12 has 31 days/],
    ['2026-12-01T24:00', /there is no hour 24/],
    ['2026-12-01T10:60', /there is no minute 60/],
    ['2026-12-01T10:00:60Z', /there is no second 60/],
    ['2026-12-01T10:00:00+24:00', /there is no time zone offset \+24:00/],
    ['0001-01-01', /^invalid time "0001-01-01": times before 2000-01-01T00:00:00Z are not accepted$/],
    ['1999-12-31T23:59:59Z', /before 2000-01-01/],
    ['2000-01-01T00:30:00+01:00', /before 2000-01-01/],
    ['+99999999999999d', /^invalid time "\+99999999999999d": at most 100 years ahead/],
    ['+36526d', /at most 100 years ahead/],
    [`+${'9'.repeat(400)}s`, /at most 100 years ahead/],
    ['2126-11-29T12:00:01Z', /at most 100 years ahead/],
    ['9999-12-31', /at most 100 years ahead/],
  ];
  for (const [input, message] of refused) {
    it(`refuses ${input.slice(0, 30)} in one line`, () => {
      assert.throws(
        () => parseWhen(input, now),
        (e: unknown) => {
          assert.ok(e instanceof WhenError);
          assert.match(e.message, message);
          assert.ok(!e.message.includes('\n'));
          return true;
        },
      );
    });
  }

  const due: [string, string][] = [
    ['2026-11-28T12:00:00.000Z', 'due now'],
    ['2026-11-28T11:00:00.000Z', 'due now'],
    ['2026-11-28T12:00:30.000Z', 'in 30s'],
    ['2026-11-28T12:05:00.000Z', 'in 5m'],
    ['2026-11-28T14:30:10.000Z', 'in 2h 30m'],
    ['2026-12-01T12:00:00.000Z', 'in 3d'],
  ];
  for (const [at, expected] of due) {
    it(`describes ${at} as "${expected}"`, () => assert.equal(describeDue(new Date(at), now), expected));
  }
});

describe('backoff', () => {
  it('doubles per attempt within [half, full] of the ceiling, up to the cap', () => {
    for (let attempt = 1; attempt <= 12; attempt++) {
      const ceiling = Math.min(3_600_000, 30_000 * 2 ** (attempt - 1));
      assert.equal(backoffDelay(attempt, 30_000, 3_600_000, () => 0), ceiling / 2);
      assert.equal(backoffDelay(attempt, 30_000, 3_600_000, () => 1), ceiling);
    }
  });
});
