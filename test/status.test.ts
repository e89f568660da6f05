import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createTestDatabase, DIALECTS, type TestDatabase } from './helpers/databases.ts';
import { killAll, run, testEnv } from './helpers/processes.ts';
import { startReceiver } from './helpers/receiver.ts';

interface Glance {
  dueNow: number;
  failedPosts: number;
  workerSuccessRate: number | null;
  workersSpawned: number;
  workersSucceeded: number;
  averageCycleMs: number | null;
  cyclesCounted: number;
  lateness: { windowMs: number; posts: number; p50Ms: number | null; p90Ms: number | null; p99Ms: number | null; maxMs: number | null };
}

/** `status`: the seed's key figures first, as a table a person reads, and all of them in --json. */
for (const dialect of DIALECTS) {
  describe(`status at a glance on ${dialect}`, () => {
    const dbs: TestDatabase[] = [];
    after(async () => {
      killAll();
      for (const db of dbs) await db.drop();
    });

    it('shows due count, worker success rate, average cycle, failed posts and lateness percentiles', async () => {
      const db = await createTestDatabase(dialect);
      dbs.push(db);
      const env = testEnv(db.url);
      // "bad" posts are refused for good (HTTP 422): failed at once, their worker still exits 0
      const receiver = await startReceiver((d) => (d.body.includes('bad') ? { status: 422, body: '{"error":"no"}' } : { status: 200 }));
      try {
        let r = await run(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url', receiver.url], env);
        assert.equal(r.code, 0, r.stderr);
        r = await run(['status', '--json'], env);
        let glance = (JSON.parse(r.stdout) as { glance: Glance }).glance;
        assert.deepEqual(glance, {
          dueNow: 0,
          failedPosts: 0,
          workerSuccessRate: null,
          workersSpawned: 0,
          workersSucceeded: 0,
          averageCycleMs: null,
          cyclesCounted: 0,
          lateness: { windowMs: 86_400_000, posts: 0, p50Ms: null, p90Ms: null, p99Ms: null, maxMs: null },
        });
        r = await run(['status'], env);
        assert.match(r.stdout, /At a glance\n {2}due now +0\n {2}failed posts +0\n {2}worker success +- +0 of 0 workers/);
        assert.match(r.stdout, /lateness p50 +- +nothing published in the last 24 h/);

        // two posts due for two hours (late by 2 h when published), one due now, one bad, one later
        for (const [text, at] of [['ok one', '-2h'], ['ok two', '-2h'], ['ok three', 'now'], ['bad', 'now'], ['later', '+2h']] as const) {
          const iso = at === 'now' ? new Date().toISOString() : new Date(Date.now() + (at === '-2h' ? -1 : 1) * 7_200_000).toISOString();
          r = await run(['schedule', '--channel', 'hook', '--text', text, '--at', iso], env);
          assert.equal(r.code, 0, r.stderr);
        }
        r = await run(['status', '--json'], env);
        assert.equal((JSON.parse(r.stdout) as { glance: Glance }).glance.dueNow, 4);

        r = await run(['cron', '--batch-size', '2'], env);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        r = await run(['status', '--json'], env);
        const json = JSON.parse(r.stdout) as { glance: Glance; counts: { duePending: number; failed: number; published: number } };
        glance = json.glance;
        assert.equal(glance.dueNow, 0);
        assert.equal(json.counts.duePending, 0, 'the existing fields stay');
        assert.equal(glance.failedPosts, 1);
        assert.equal(glance.workersSpawned, 2, 'ceil(4 / 2)');
        assert.equal(glance.workersSucceeded, 2);
        assert.equal(glance.workerSuccessRate, 1);
        assert.equal(glance.cyclesCounted, 1);
        assert.ok(glance.averageCycleMs !== null && glance.averageCycleMs > 0);
        assert.equal(glance.lateness.posts, 3, 'published posts only');
        const { p50Ms, p90Ms, p99Ms, maxMs } = glance.lateness;
        // nearest rank of 3: p50 the 2nd (2 h late), p90 and p99 the 3rd (the larger 2 h)
        assert.ok(p50Ms !== null && p50Ms >= 7_200_000 && p50Ms < 7_300_000, `p50 ${p50Ms}`);
        assert.ok(p90Ms !== null && p99Ms !== null && maxMs !== null && p90Ms >= p50Ms && p99Ms === maxMs);

        r = await run(['status'], env);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /\n {2}due now +0\n {2}failed posts +1 +see Recent failures/);
        assert.match(r.stdout, /\n {2}worker success +100\.0% +2 of 2 workers, last cycle\n/);
        assert.match(r.stdout, /\n {2}average cycle +\d+(ms|\.\ds) +over the last cycle\n/);
        assert.match(r.stdout, /\n {2}lateness p50 +2h 0m +3 posts published in the last 24 h, from their scheduled time\n/);
        assert.match(r.stdout, /\n {2}lateness p99 +2h 0m +max 2h 0m\n/);
      } finally {
        await receiver.close();
      }
    });

    it('a worker that fails lowers the success rate', async () => {
      const db = await createTestDatabase(dialect);
      dbs.push(db);
      const env = testEnv(db.url);
      // the receiver never answers: the worker's budget runs out with the post in flight, it exits 2
      const receiver = await startReceiver(() => ({ hang: true }));
      try {
        await run(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url', receiver.url], env);
        await run(['schedule', '--channel', 'hook', '--text', 'slow'], env);
        const r = await run(['cron', '--timeout-ms', '3000', '--worker-timeout-ms', '2000'], { ...env, PUBLISH_TIMEOUT_MS: '2000', KILL_GRACE_MS: '500' }, 30_000);
        assert.notEqual(r.code, 0, r.stdout);
        const glance = (JSON.parse((await run(['status', '--json'], env)).stdout) as { glance: Glance }).glance;
        assert.equal(glance.workersSpawned, 1);
        assert.equal(glance.workersSucceeded, 0);
        assert.equal(glance.workerSuccessRate, 0);
        assert.match((await run(['status'], env)).stdout, /worker success +0\.0% +0 of 1 workers/);
      } finally {
        await receiver.close();
      }
    });
  });
}
