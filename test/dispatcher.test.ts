import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { cycleExitCode } from '../src/dispatcher/cycle.ts';
import { spawnWorker, stopWorkers, type WorkerExit } from '../src/dispatcher/spawn.ts';

describe('dispatcher', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'post-scheduler-disp-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('stops a worker that ignores SIGTERM with SIGKILL after the grace', async () => {
    const stubborn = path.join(dir, 'stubborn.mjs');
    fs.writeFileSync(stubborn, "process.on('SIGTERM', () => {}); process.send?.({ type: 'ready' }); setInterval(() => {}, 1000);\n");
    const worker = spawnWorker('worker-1-1', 1, process.env, stubborn);
    await new Promise((resolve) => worker.process.once('message', resolve));
    const before = Date.now();
    await stopWorkers([worker], 300);
    const exit = await worker.exited;
    assert.equal(exit.signal, 'SIGKILL');
    assert.ok(Date.now() - before >= 250, 'SIGKILL only after the grace');
  });

  it('lets a worker that honours SIGTERM exit by itself', async () => {
    const polite = path.join(dir, 'polite.mjs');
    fs.writeFileSync(polite, "process.on('SIGTERM', () => process.exit(2)); process.send?.({ type: 'ready' }); setInterval(() => {}, 1000);\n");
    const worker = spawnWorker('worker-1-2', 1, process.env, polite);
    await new Promise((resolve) => worker.process.once('message', resolve));
    await stopWorkers([worker], 5_000);
    const exit = await worker.exited;
    assert.equal(exit.exitCode, 2);
    assert.equal(exit.signal, null);
  });

  it('exits 0 / 1 / 2 as the seed says', () => {
    const exit = (exitCode: number | null, signal: NodeJS.Signals | null = null): WorkerExit => ({
      workerId: 'w',
      startedAt: new Date(),
      finishedAt: new Date(),
      durationMs: 1,
      exitCode,
      signal,
      report: null,
    });
    assert.equal(cycleExitCode([], false), 0);
    assert.equal(cycleExitCode([exit(0), exit(0)], false), 0);
    assert.equal(cycleExitCode([exit(0), exit(1)], false), 1);
    assert.equal(cycleExitCode([exit(0), exit(null, 'SIGKILL')], false), 1);
    assert.equal(cycleExitCode([exit(0), exit(2)], false), 2);
    assert.equal(cycleExitCode([exit(1), exit(2)], false), 1);
    assert.equal(cycleExitCode([exit(0)], true), 2);
  });
});
