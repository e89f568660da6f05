import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { createTestDatabase, type TestDatabase } from './helpers/databases.ts';
import { killAll, run, start, testEnv } from './helpers/processes.ts';

/**
 * `post-scheduler status | head -3` and `cron 2>&1 | head -1`: the reader goes away
 * while the program still writes. Nothing may crash on EPIPE, and a cycle must finish.
 */
describe('output to a closed pipe', () => {
  const dbs: TestDatabase[] = [];
  after(async () => {
    killAll();
    for (const db of dbs) await db.drop();
  });

  const setup = async (posts: number) => {
    const db = await createTestDatabase('sqlite');
    dbs.push(db);
    const env = testEnv(db.url);
    const out = path.join(db.dir, 'out.jsonl');
    let r = await run(['channels', 'add', '--name', 'f', '--platform', 'file', '--path', out], env);
    assert.equal(r.code, 0, r.stderr);
    if (posts > 0) {
      r = await run(['simulate', '--posts', String(posts), '--channel', 'f'], env);
      assert.equal(r.code, 0, r.stderr);
    }
    return { env, out };
  };

  it('status with its stdout closed before it writes: exit 0, no EPIPE stack trace', async () => {
    const { env } = await setup(3);
    const status = start(['status'], env, 20_000);
    status.child.stdout?.destroy();
    const r = await status.done;
    assert.equal(r.signal, null);
    assert.doesNotMatch(r.stderr, /EPIPE|Error|\n\s+at /, r.stderr);
    assert.equal(r.code, 0, r.stderr);
  });

  it('cron whose stdout closes after the first chunk still publishes all 20 posts and exits 0', async () => {
    const { env, out } = await setup(20);
    const cron = start(['cron'], env, 30_000);
    cron.child.stdout?.once('data', () => cron.child.stdout?.destroy());
    const r = await cron.done;
    assert.equal(r.signal, null);
    assert.doesNotMatch(r.stderr, /EPIPE|Error|\n\s+at /, r.stderr);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(fs.readFileSync(out, 'utf8').trim().split('\n').length, 20);
    const status = await run(['status', '--json'], env);
    const report = JSON.parse(status.stdout) as { counts: { published: number; processing: number; duePending: number } };
    assert.equal(report.counts.published, 20);
    assert.equal(report.counts.processing, 0);
    assert.equal(report.counts.duePending, 0);
  });
});
