import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createTestDatabase, DIALECTS, type TestDatabase } from './helpers/databases.ts';
import { killAll, run, testEnv } from './helpers/processes.ts';
import { startReceiver } from './helpers/receiver.ts';

interface Report {
  window: string;
  windowMs: number;
  figures: { cycles: { finished: number; short: number }; channels: { channel: string; reasons: Record<string, number> }[] };
  recommendations: { setting: string; channel?: string; from: string; to: string; by: string; because: string }[];
}

/**
 * `tune` reads what real cycles did: cron against a slow local receiver, with too few
 * workers for the posts due, and a channel whose receiver answers 429.
 */
for (const dialect of DIALECTS) {
  describe(`tune on ${dialect}`, () => {
    const dbs: TestDatabase[] = [];
    after(async () => {
      killAll();
      for (const db of dbs) await db.drop();
    });

    it('recommends more capacity after cycles that hit the guard, and a rate limit for a channel that met 429s', async () => {
      const db = await createTestDatabase(dialect);
      dbs.push(db);
      // one send at a time per worker, at most 2 workers, each cycle a few seconds long
      const env = testEnv(db.url, {
        BATCH_SIZE: '1',
        MAX_WORKERS: '2',
        WORKER_CONCURRENCY: '1',
        TIMEOUT_MS: '3000',
        WORKER_TIMEOUT_MS: '2900',
        PUBLISH_TIMEOUT_MS: '2000',
        KILL_GRACE_MS: '500',
      });
      const slow = await startReceiver(() => ({ status: 200, delayMs: 800 }));
      const refused = new Set<number>();
      const limited = await startReceiver((d) => {
        if (refused.has(d.postId)) return { status: 200 };
        refused.add(d.postId);
        return { status: 429, headers: { 'retry-after': '1' } };
      });
      try {
        let r = await run(['tune', '--json'], env);
        assert.equal(r.code, 0, r.stderr);
        let report = JSON.parse(r.stdout) as Report;
        assert.deepEqual([report.window, report.windowMs, report.recommendations], ['24h', 86_400_000, []], 'no history: nothing to change');
        r = await run(['tune'], env);
        assert.match(r.stdout, /^nothing to change over the last 24h: 0 cycles/);

        for (const [name, url] of [['slow', slow.url], ['limited', limited.url]]) {
          r = await run(['channels', 'add', '--name', name ?? '', '--platform', 'webhook', '--url', url ?? ''], env);
          assert.equal(r.code, 0, r.stderr);
        }
        const now = new Date().toISOString();
        for (let i = 0; i < 20; i++) {
          r = await run(['schedule', '--channel', 'slow', '--text', `slow ${i}`, '--at', now], env);
          assert.equal(r.code, 0, r.stderr);
        }
        for (let i = 0; i < 2; i++) {
          // due a minute earlier: claimed first (oldest run_at first)
          r = await run(['schedule', '--channel', 'limited', '--text', `limited ${i}`, '--at', new Date(Date.now() - 60_000).toISOString()], env);
          assert.equal(r.code, 0, r.stderr);
        }
        for (let cycle = 0; cycle < 3; cycle++) {
          r = await run(['cron'], env);
          assert.ok(r.code === 0 || r.code === 2, `cron exit ${String(r.code)}: ${r.stderr}`);
        }
        assert.ok(slow.deliveries.length < 20, `the cycles could not keep up (${slow.deliveries.length} of 20 sent)`);
        assert.ok(limited.deliveries.length > 0, 'the limited channel was tried');

        r = await run(['tune', '--json', '--window', '1h'], env);
        assert.equal(r.code, 0, r.stderr);
        report = JSON.parse(r.stdout) as Report;
        assert.equal(report.windowMs, 3_600_000);
        assert.equal(report.figures.cycles.finished, 3);
        assert.ok(report.figures.cycles.short >= 2, `short cycles: ${JSON.stringify(report.figures.cycles)}`);
        const capacity = report.recommendations.find((x) => x.setting === 'MAX_WORKERS' || x.setting === 'WORKER_CONCURRENCY');
        assert.ok(capacity !== undefined, JSON.stringify(report.recommendations));
        assert.ok(Number(capacity.to) > Number(capacity.from), `${capacity.setting} ${capacity.from} -> ${capacity.to}`);
        assert.match(capacity.because, /cycles \(\d+%\) fell short: \d+ hit the guard \(TIMEOUT_MS 3000 ms/);
        const rate = report.recommendations.find((x) => x.setting === 'rate_limit');
        assert.ok(rate !== undefined, JSON.stringify(report.recommendations));
        assert.equal(rate.channel, 'limited');
        assert.match(rate.to, /^\d+\/1m$/);
        assert.ok((report.figures.channels.find((c) => c.channel === 'limited')?.reasons['rate-limited'] ?? 0) >= 1);
        assert.equal(report.recommendations.filter((x) => x.setting === 'rate_limit').length, 1, 'the slow channel met no 429');

        // the same as lines a person reads: one per recommendation, then the figures
        r = await run(['tune', '--window', '1h'], env);
        assert.equal(r.code, 0, r.stderr);
        const lines = r.stdout.trim().split('\n');
        assert.match(lines[0] ?? '', /^\d recommendation\(s\) over the last 1h: 3 cycles, \d+ worker runs/);
        assert.ok(lines.some((l) => new RegExp(`^${capacity.setting} ${capacity.from} -> ${capacity.to} \\(x[\\d.]+\\): `).test(l)), r.stdout);
        assert.ok(lines.some((l) => /^channel limited: rate_limit default -> \d+\/1m /.test(l)), r.stdout);

        r = await run(['tune', '--window', '2 weeks'], env);
        assert.equal(r.code, 1);
        assert.equal(r.stderr, 'post-scheduler: invalid --window "2 weeks": use minutes, hours or days such as 30m, 24h or 7d (1m to 30d)\n');
      } finally {
        await slow.close();
        await limited.close();
      }
    });
  });
}
