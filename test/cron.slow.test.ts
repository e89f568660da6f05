import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { processTable, ROOT, run, testEnv, waitFor } from './helpers/processes.ts';

/**
 * SLOW (up to ~2.5 minutes): the README's system-cron deployment as written. Debian's
 * `cron` daemon runs deploy/crontab (only the install-specific PATH, the database,
 * the log file and the user changed), and the cycles it starts publish the posts due.
 * CI installs cron and sets REQUIRE_CRON=1 (.ci/run): there this test fails rather
 * than skips when cron or root is missing.
 */
const CRON = ['/usr/sbin/cron', '/usr/bin/cron'].find((p) => fs.existsSync(p)) ?? null;
const isRoot = process.getuid?.() === 0;
const missing = CRON === null ? "Debian's cron is not installed (apt-get install cron)" : !isRoot ? 'writing /etc/cron.d needs root' : null;
const required = process.env['REQUIRE_CRON'] === '1';
if (missing !== null && !required) process.stderr.write(`[cron.slow] skipped: ${missing}\n`);

/** deploy/crontab with this machine's values: what an operator edits when installing. */
export function crontabFor(template: string, values: { path: string; databaseUrl: string; log: string; user: string }): string {
  const lines = template.split('\n').map((line) => {
    if (line.startsWith('PATH=')) return `PATH=${values.path}`;
    if (line.startsWith('DATABASE_URL=')) return `DATABASE_URL=${values.databaseUrl}`;
    if (/^\* \* \* \* \* /.test(line)) {
      const job = line.replace(/^(\* \* \* \* \* )post-scheduler /, `$1${values.user} `).replace('/var/log/post-scheduler/post-scheduler.log', values.log);
      assert.notEqual(job, line, 'the job line names the user and the log file');
      return job;
    }
    return line;
  });
  return lines.join('\n');
}

describe('system cron (slow: waits for cron to start cycles at the top of a minute)', { skip: missing !== null && !required ? missing : false }, () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ps-cron-'));
  const cronFile = `/etc/cron.d/post-scheduler-test-${process.pid}`;
  let daemon: ChildProcess | null = null;
  after(async () => {
    fs.rmSync(cronFile, { force: true });
    if (daemon !== null && daemon.exitCode === null) {
      const exited = new Promise((resolve) => daemon?.once('exit', resolve));
      daemon.kill('SIGTERM');
      await exited;
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("publishes due posts through cycles started by cron from deploy/crontab's line", { timeout: 200_000 }, async () => {
    assert.equal(missing, null, `REQUIRE_CRON=1: ${missing ?? ''}`);
    // what `npm install -g` / `npm link` leaves: `post-scheduler` on a bin directory, node beside it or on PATH
    const bin = path.join(dir, 'bin');
    fs.mkdirSync(bin);
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    fs.symlinkSync(path.join(ROOT, pkg.bin['post-scheduler'] ?? ''), path.join(bin, 'post-scheduler'));
    const databaseUrl = `sqlite:${path.join(dir, 'post-scheduler.db')}`;
    const out = path.join(dir, 'out.jsonl');
    const log = path.join(dir, 'post-scheduler.log');
    const env = testEnv(databaseUrl);
    let r = await run(['channels', 'add', '--name', 'local', '--platform', 'file', '--path', out], env);
    assert.equal(r.code, 0, r.stderr);
    for (const text of ['one', 'two', 'three']) {
      r = await run(['schedule', '--channel', 'local', '--text', text], env);
      assert.equal(r.code, 0, r.stderr);
    }

    const template = fs.readFileSync(path.join(ROOT, 'deploy', 'crontab'), 'utf8');
    const crontab = crontabFor(template, {
      path: `${bin}:${path.dirname(process.execPath)}:/usr/bin:/bin`,
      databaseUrl,
      log,
      user: 'root',
    });
    // cron reads files of /etc/cron.d owned by root, not writable by group or others
    fs.writeFileSync(cronFile, crontab.endsWith('\n') ? crontab : `${crontab}\n`, { mode: 0o644 });

    const running = (await processTable('cron')).some((p) => /(^|\/)cron( |$)/.test(p.args));
    if (!running && CRON !== null) {
      daemon = spawn(CRON, ['-f'], { stdio: 'ignore' });
    } else {
      // a running cron sees a changed /etc/cron.d at its next minute: touch the directory
      const now = new Date();
      fs.utimesSync('/etc/cron.d', now, now);
    }

    await waitFor(
      'the three posts published by cron-started cycles',
      () => fs.existsSync(out) && fs.readFileSync(out, 'utf8').trim().split('\n').length >= 3,
      150_000,
    );
    r = await run(['status', '--json'], env);
    const status = JSON.parse(r.stdout) as { counts: { published: number; duePending: number }; cycles: unknown[] };
    assert.equal(status.counts.published, 3);
    assert.equal(status.counts.duePending, 0);
    assert.ok(status.cycles.length >= 1);
    const written = fs.readFileSync(log, 'utf8');
    assert.match(written, /\[CRON\] Post scheduler cron started/);
    assert.match(written, /Posts published: +3/);
  });
});
