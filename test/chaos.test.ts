import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { capHeld, formatReports, passed } from '../chaos/run.ts';
import { runChaos, type ChaosDialect } from '../chaos/scenario.ts';
import { DIALECTS } from './helpers/databases.ts';
import { mariadbSkip } from './helpers/restartable-mysql.ts';

/**
 * The small fixed-seed version of `npm run chaos`: SIGKILLed workers and a dispatcher, a
 * dispatcher stopped by SIGTERM, two hosts sharing GLOBAL_MAX_WORKERS, a faulty
 * receiver, and on PostgreSQL and MariaDB (servers of the run's own) a server restart. It fails on any lost post, any
 * post accepted twice, any post sent under a second idempotency key, or more live
 * worker processes than GLOBAL_MAX_WORKERS in any sample (every 50 ms, whole run).
 */
const RUNS: readonly { dialect: ChaosDialect; skip: string | false }[] = [
  ...DIALECTS.map((dialect) => ({ dialect, skip: false as const })),
  // MariaDB from the machine's binaries: the run starts (and restarts) a server of its own
  { dialect: 'mysql', skip: mariadbSkip() },
];

describe('chaos (fixed seed, small)', () => {
  for (const { dialect, skip } of RUNS) {
    const restarts = dialect !== 'sqlite';
    it(`${dialect}: 200 posts through kills, faults${restarts ? ' and a restart' : ''}: none lost, none accepted twice`, { skip }, async () => {
      const report = await runChaos({ dialect, posts: 200, seed: 42, chaosMs: 3_000, killEveryMs: 300, log: () => undefined });
      const table = formatReports([report]);
      assert.equal(report.posts, 200);
      assert.ok(report.workersKilled > 0, `workers were killed\n${table}`);
      assert.equal(report.dispatchersKilled, 1, table);
      assert.equal(report.dispatchersStopped, 1, table);
      // counted every 50 ms over the whole run, not only when something is killed
      assert.ok(report.workerSamples > 20, `the worker count was sampled through the run\n${table}`);
      assert.equal(report.samplesOverCap, 0, `never more live workers than GLOBAL_MAX_WORKERS\n${table}`);
      assert.ok(report.mostWorkers <= report.globalMaxWorkers, `two hosts stay within GLOBAL_MAX_WORKERS\n${table}`);
      assert.ok(capHeld(report), table);
      assert.equal(report.unknownDelivered + report.unknownNeverDelivered, report.unknown, table);
      if (restarts) assert.equal(report.databaseRestarts, 1, table);
      assert.equal(report.lost, 0, table);
      assert.equal(report.acceptedDuplicates, 0, table);
      assert.equal(report.keyChanges, 0, table);
      assert.equal(report.published + report.failed + report.unknown, 200, table);
      assert.ok(passed(report));
    });
  }
});
