import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { killAll, ROOT, start, testEnv } from './helpers/processes.ts';

/**
 * The worker's V8 start-up snapshot (scripts/bundle-worker.mjs, src/dispatcher/spawn.ts):
 * a cycle publishes its posts whether workers start from the snapshot or, when the blob
 * is stale or missing, from the plain bundle. Each case runs on its own copy of dist/
 * (node_modules linked), so that changing the blob there touches no other test.
 */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ps-snapshot-'));
after(() => {
  killAll();
  fs.rmSync(tmp, { recursive: true, force: true });
});

interface Copy {
  readonly dir: string;
  readonly blob: string;
  usable(): Promise<boolean>;
}

function copyOfDist(name: string): Copy {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  fs.cpSync(path.join(ROOT, 'dist'), path.join(dir, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  const blob = path.join(dir, 'dist', 'workers', 'post-scheduler.worker-runner.blob');
  return {
    dir,
    blob,
    usable: async () => ((await import(pathToFileURL(path.join(dir, 'dist', 'dispatcher', 'spawn.js')).href)) as { workerSnapshotUsable(): boolean }).workerSnapshotUsable(),
  };
}

/** migrate, a file channel, 3 posts due, one `cron`: returns the lines the file publisher wrote */
async function cycle(copy: Copy): Promise<number> {
  const env = testEnv(`sqlite:${path.join(copy.dir, 'db.sqlite')}`);
  const cli = path.join(copy.dir, 'dist', 'cli.js');
  const out = path.join(copy.dir, 'out.jsonl');
  for (const args of [['migrate'], ['channels', 'add', '--name', 'out', '--platform', 'file', '--path', out], ['simulate', '--posts', '3', '--channel', 'out'], ['cron']]) {
    const r = await start(args, env, 60_000, cli, copy.dir).done;
    assert.equal(r.code, 0, `${args.join(' ')} exited ${String(r.code)}: ${r.stderr}`);
  }
  return fs.readFileSync(out, 'utf8').trim().split('\n').length;
}

describe('worker start-up snapshot', () => {
  it('the build makes a blob for this Node, and workers started from it publish', async () => {
    const copy = copyOfDist('as-built');
    const info = JSON.parse(fs.readFileSync(`${copy.blob}.json`, 'utf8')) as { node: string };
    assert.equal(info.node, process.version);
    assert.equal(await copy.usable(), true);
    assert.equal(await cycle(copy), 3);
  });

  it('a stale blob (built from another bundle) is not used: workers start from the bundle and publish', async () => {
    const copy = copyOfDist('stale');
    const info = JSON.parse(fs.readFileSync(`${copy.blob}.json`, 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(`${copy.blob}.json`, JSON.stringify({ ...info, bundleSha256: '0'.repeat(64) }));
    assert.equal(await copy.usable(), false);
    assert.equal(await cycle(copy), 3);
  });

  it('without a blob, workers start from the bundle and publish', async () => {
    const copy = copyOfDist('missing');
    fs.rmSync(copy.blob);
    assert.equal(await copy.usable(), false);
    assert.equal(await cycle(copy), 3);
  });
});
