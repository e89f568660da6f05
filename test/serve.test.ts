import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createTestDatabase, DIALECTS, type TestDatabase } from './helpers/databases.ts';
import { killAll, run, start, testEnv, waitFor, type Running } from './helpers/processes.ts';
import { startReceiver } from './helpers/receiver.ts';
import { LATENESS_SECONDS_BOUNDS, PUBLISH_SECONDS_BOUNDS } from '../src/store/histograms.ts';

const TOKEN = 'test-token-0123456789abcdef';

/** Starts `serve --port 0` and reads the address it printed. */
async function serve(env: NodeJS.ProcessEnv, args: readonly string[] = []): Promise<{ proc: Running; url: string }> {
  const proc = start(['serve', '--port', '0', ...args], env, 120_000);
  let url = '';
  await waitFor('serve prints its address', () => {
    url = /Listening on (http:\/\/\S+)/.exec(proc.output())?.[1] ?? '';
    return url !== '';
  });
  return { proc, url };
}

async function stop(proc: Running): Promise<void> {
  proc.child.kill('SIGTERM');
  const r = await proc.done;
  assert.equal(r.code, 0, r.stderr);
}

/** `name{labels} value` lines of the Prometheus text exposition. */
function parseMetrics(text: string): Map<string, number> {
  const figures = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(\S+) (\S+)$/.exec(line);
    assert.ok(m !== null, `not an exposition line: ${line}`);
    figures.set(m[1] ?? '', Number(m[2]));
  }
  return figures;
}

/** How long the local receiver takes to answer in the /metrics test. */
const ANSWER_MS = 300;

/** A histogram's `_bucket` series for one label set (`labels`: its other labels, each followed by a comma), in exposition order: [le, count]. */
function buckets(figures: Map<string, number>, name: string, labels: string): [string, number][] {
  const prefix = `${name}_bucket{${labels}le="`;
  return [...figures].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length, -2), v]);
}

/** Each bucket counts at least what the one below it does (le includes the lower ones). */
function assertCumulative(series: readonly [string, number][]): void {
  series.forEach(([le, n], i) => assert.ok(i === 0 || n >= (series[i - 1]?.[1] ?? Infinity), `le="${le}" counts ${n}, fewer than the bucket below it`));
}

for (const dialect of DIALECTS) {
  describe(`serve on ${dialect}`, () => {
    const dbs: TestDatabase[] = [];
    after(async () => {
      killAll();
      for (const db of dbs) await db.drop();
    });

    it('/metrics agrees with status --json; the token is required except on /healthz', async () => {
      const db = await createTestDatabase(dialect);
      dbs.push(db);
      const env = testEnv(db.url, { API_TOKEN: TOKEN });
      // every answer takes 300 ms: the publish histogram must never count one at or under 0.25 s
      const receiver = await startReceiver((d) => (d.body.includes('bad') ? { status: 400, body: '{"error":"no"}', delayMs: ANSWER_MS } : { status: 200, delayMs: ANSWER_MS }));
      const { proc, url } = await serve(env);
      try {
        let r = await run(['channels', 'add', '--name', 'hook', '--platform', 'webhook', '--url', receiver.url], env);
        assert.equal(r.code, 0, r.stderr);
        for (const [text, at] of [['ok one', -60_000], ['ok two', 0], ['bad one', 0], ['bad two', 0], ['later', 7_200_000]] as const) {
          r = await run(['schedule', '--channel', 'hook', '--text', text, '--at', new Date(Date.now() + at).toISOString()], env);
          assert.equal(r.code, 0, r.stderr);
        }
        const auth = { authorization: `Bearer ${TOKEN}` };
        let figures = parseMetrics(await (await fetch(`${url}/metrics`, { headers: auth })).text());
        assert.equal(figures.get('post_scheduler_due_posts'), 4);
        assert.equal(figures.get('post_scheduler_posts{state="pending"}'), 5);
        assert.equal(figures.get('post_scheduler_waiting_posts{state="pending",channel="hook"}'), 5);
        assert.ok((figures.get('post_scheduler_oldest_due_age_seconds') ?? 0) >= 60, 'the post due a minute ago');

        r = await run(['cron', '--batch-size', '2'], env);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        r = await run(['status', '--json'], env);
        const status = JSON.parse(r.stdout) as {
          counts: Record<string, number>;
          cycles: { workersSpawned: number; workersSucceeded: number; exitCode: number }[];
          glance: { lateness: { posts: number } };
        };
        const res = await fetch(`${url}/metrics`, { headers: auth });
        assert.equal(res.status, 200);
        assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
        figures = parseMetrics(await res.text());
        const c = status.counts;
        assert.equal(c['published'], 2);
        assert.equal(c['failed'], 2);
        assert.equal(figures.get('post_scheduler_posts{state="published"}'), c['published']);
        assert.equal(figures.get('post_scheduler_posts{state="failed"}'), c['failed']);
        assert.equal(figures.get('post_scheduler_posts{state="pending"}'), (c['duePending'] ?? -1) + (c['scheduledLater'] ?? -1));
        assert.equal(figures.get('post_scheduler_posts{state="unknown"}'), c['unknown']);
        assert.equal(figures.get('post_scheduler_due_posts'), c['duePending']);
        assert.equal(figures.get('post_scheduler_waiting_posts{state="pending",channel="hook"}'), (c['duePending'] ?? -1) + (c['scheduledLater'] ?? -1));
        assert.equal(figures.get('post_scheduler_oldest_due_age_seconds'), 0, 'nothing due after the cycle');
        assert.equal(figures.get('post_scheduler_recent_attempts{outcome="published",platform="webhook"}'), c['published']);
        assert.equal(figures.get('post_scheduler_recent_attempts{outcome="failed",platform="webhook"}'), c['failed']);
        assert.equal(figures.get('post_scheduler_recent_attempt_seconds_count{platform="webhook"}'), 4);
        assert.equal(figures.get('post_scheduler_lateness_posts'), status.glance.lateness.posts);
        const last = status.cycles[0];
        assert.ok(last !== undefined);
        assert.equal(figures.get('post_scheduler_last_cycle_workers_spawned'), last.workersSpawned);
        assert.equal(figures.get('post_scheduler_recent_worker_runs{result="succeeded"}'), last.workersSucceeded);
        assert.equal(figures.get(`post_scheduler_recent_cycles{exit_code="${last.exitCode}"}`), 1);
        assert.ok((figures.get('post_scheduler_lateness_seconds{quantile="1"}') ?? 0) >= 60, 'the post due a minute ago went out at least a minute late');
        assert.equal(figures.get('post_scheduler_recent_unpublished_attempts{outcome="failed",platform="webhook",reason="rejected"}'), 2, 'the two 400s');

        // the histograms: cumulative buckets, +Inf the count, agreeing with the figures above
        const publish = buckets(figures, 'post_scheduler_publish_duration_seconds', 'platform="webhook",');
        assert.deepEqual(publish.map(([le]) => le), [...PUBLISH_SECONDS_BOUNDS.map(String), '+Inf'], 'every bound, then +Inf');
        assertCumulative(publish);
        assert.equal(publish.at(-1)?.[1], figures.get('post_scheduler_recent_attempt_seconds_count{platform="webhook"}'), '+Inf: the attempts with a known start');
        assert.equal(figures.get('post_scheduler_publish_duration_seconds_count{platform="webhook"}'), 4);
        assert.equal(publish.find(([le]) => le === '0.25')?.[1], 0, 'a 300 ms answer is never counted under 0.25 s');
        assert.ok((figures.get('post_scheduler_publish_duration_seconds_sum{platform="webhook"}') ?? 0) >= (4 * ANSWER_MS) / 1000, 'each attempt waited for its 300 ms answer');
        const lateness = buckets(figures, 'post_scheduler_lateness_seconds', '');
        assert.deepEqual(lateness.map(([le]) => le), [...LATENESS_SECONDS_BOUNDS.map(String), '+Inf']);
        assertCumulative(lateness);
        // Store.lateness over the same hour (post_scheduler_lateness_posts); status's day holds the same posts here
        assert.equal(figures.get('post_scheduler_lateness_seconds_count'), figures.get('post_scheduler_lateness_posts'));
        assert.equal(figures.get('post_scheduler_lateness_seconds_count'), status.glance.lateness.posts);
        assert.equal(lateness.at(-1)?.[1], c['published']);
        assert.ok((lateness.find(([le]) => le === '30')?.[1] ?? -1) <= 1, 'the post due a minute ago is not counted under 30 s');
        assert.ok((figures.get('post_scheduler_lateness_seconds_sum') ?? 0) >= 60);

        // real failures, each with its reason: a 500, a 401, a 429 (then accepted), an answer past PUBLISH_TIMEOUT_MS
        const busy = new Set<number>();
        const rough = await startReceiver((d) => {
          if (d.text === 'server') return { status: 500 };
          if (d.text === 'auth') return { status: 401 };
          if (d.text === 'slow') return { status: 200, delayMs: 3_000 };
          if (d.text === 'busy' && !busy.has(d.postId)) {
            busy.add(d.postId);
            return { status: 429, headers: { 'retry-after': '1' } };
          }
          return { status: 200 };
        });
        try {
          r = await run(['channels', 'add', '--name', 'rough', '--platform', 'webhook', '--url', rough.url], env);
          assert.equal(r.code, 0, r.stderr);
          for (const text of ['server', 'auth', 'busy', 'slow']) {
            r = await run(['schedule', '--channel', 'rough', '--text', text, '--at', new Date().toISOString()], env);
            assert.equal(r.code, 0, r.stderr);
          }
          const roughEnv = { ...env, MAX_ATTEMPTS: '1', PUBLISH_TIMEOUT_MS: '500' };
          r = await run(['cron'], roughEnv);
          assert.ok(r.code === 0 || r.code === 1, r.stdout + r.stderr);
          // the 429's wait counts while its post still waits (an alert on it fires now, not once the post ends)
          const waiting = parseMetrics(await (await fetch(`${url}/metrics`, { headers: auth })).text());
          assert.equal(waiting.get('post_scheduler_recent_unpublished_attempts{outcome="waited",platform="webhook",reason="rate-limited"}'), 1, 'the 429, its post still pending');
          // the 429 paused the channel for a second; the post waited with its attempt, then went out
          await waitFor('the post refused with a 429 goes out after the pause', async () => {
            await run(['cron'], roughEnv);
            return (rough.accepted.get([...busy][0] ?? -1) ?? 0) === 1;
          }, 30_000);
        } finally {
          await rough.close();
        }
        r = await run(['status', '--json'], env);
        const after = (JSON.parse(r.stdout) as { counts: Record<string, number> }).counts;
        figures = parseMetrics(await (await fetch(`${url}/metrics`, { headers: auth })).text());
        const failedBy = (outcome: string, reason: string) => figures.get(`post_scheduler_recent_unpublished_attempts{outcome="${outcome}",platform="webhook",reason="${reason}"}`);
        assert.equal(failedBy('failed', 'auth'), 1, 'the 401');
        assert.equal(failedBy('unknown', 'server'), 1, 'the 500 (maybe delivered, held)');
        assert.equal(failedBy('unknown', 'timeout'), 1, 'the slow answer (maybe delivered, held)');
        assert.equal(failedBy('waited', 'rate-limited'), 1, 'the 429: a wait, not an attempt used up');
        // they agree with status --json: each failed and unknown post's last attempt is one of these
        assert.deepEqual([after['published'], after['failed'], after['unknown']], [3, 3, 2]);
        const sum = (outcome: string) => [...figures].filter(([k]) => k.startsWith(`post_scheduler_recent_unpublished_attempts{outcome="${outcome}",`)).reduce((n, [, v]) => n + v, 0);
        assert.equal(sum('failed'), after['failed']);
        assert.equal(sum('unknown'), after['unknown']);
        assert.equal(figures.get('post_scheduler_recent_attempts{outcome="published",platform="webhook"}'), after['published'], 'the existing series, whatever the reasons');
        r = await run(['posts', 'show', String([...busy][0]), '--json'], env);
        const shown = JSON.parse(r.stdout) as { attempts: { outcome: string; reason: string | null }[] };
        assert.deepEqual(shown.attempts.map((a) => [a.outcome, a.reason]), [['waited', 'rate-limited'], ['published', null]]);

        // the token: none or a wrong one is refused, /healthz needs none
        for (const headers of [{}, { authorization: 'Bearer wrong-token-0123456789' }, { authorization: TOKEN }]) {
          const refused = await fetch(`${url}/metrics`, { headers });
          assert.equal(refused.status, 401);
          assert.deepEqual(Object.keys((await refused.json()) as object), ['error']);
        }
        const health = await fetch(`${url}/healthz`);
        assert.equal(health.status, 200);
        assert.deepEqual(await health.json(), { status: 'ok', database: 'ok' });
      } finally {
        await stop(proc);
        await receiver.close();
      }
      assert.ok(!proc.output().includes(TOKEN) && !(await proc.done).stderr.includes(TOKEN), 'the token is never printed');
    });
  });
}

describe('serve refusals and an unreachable database', () => {
  after(() => killAll());

  it('refuses to listen beyond loopback without API_TOKEN: one line, exit 1, before the database', async () => {
    // a database that cannot be reached: the refusal comes first
    const r = await run(['serve', '--host', '0.0.0.0', '--port', '0'], testEnv('postgres://127.0.0.1:9/none'), 30_000);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /0\.0\.0\.0 is not a loopback address: set API_TOKEN/);
  });

  it('/healthz answers 503 "unreachable" when the database does not answer, without its address', async () => {
    const { proc, url } = await serve(testEnv('postgres://someone:secretpw@127.0.0.1:9/none', { DB_TIMEOUT_MS: '1000' }));
    try {
      const res = await fetch(`${url}/healthz`);
      assert.equal(res.status, 503);
      const text = await res.text();
      assert.deepEqual(JSON.parse(text), { status: 'unavailable', database: 'unreachable' });
      const metrics = await fetch(`${url}/metrics`);
      assert.equal(metrics.status, 503);
      assert.ok(!(await metrics.text()).includes('127.0.0.1:9'));
    } finally {
      await stop(proc);
    }
    assert.ok(!(await proc.done).stderr.includes('secretpw'), 'no password in the warning');
  });
});
