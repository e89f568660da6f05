import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { unreachableAncestor } from '../scripts/test-postgres.mjs';

/**
 * As root, embedded PostgreSQL runs as user `postgres`, which must enter every folder
 * above its binaries; scripts/test-postgres.mjs names the first one it cannot enter.
 */
describe('unreachableAncestor', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'post-scheduler-reach-'));
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  it('names a private (0700) folder above the binaries', () => {
    const home = path.join(root, 'private-home');
    const bin = path.join(home, 'app', 'node_modules', 'native', 'bin');
    fs.mkdirSync(bin, { recursive: true });
    fs.chmodSync(root, 0o755);
    fs.chmodSync(home, 0o700);
    assert.equal(unreachableAncestor(bin), home);
    fs.chmodSync(path.join(home, 'app'), 0o750);
    assert.equal(unreachableAncestor(bin), path.join(home, 'app'), 'the nearest one first');
  });

  it('is null when every folder up to / can be entered by others', () => {
    const open = path.join(root, 'open', 'bin');
    fs.mkdirSync(open, { recursive: true });
    fs.chmodSync(root, 0o755);
    fs.chmodSync(path.join(root, 'open'), 0o755);
    fs.chmodSync(open, 0o755);
    // only the machine's own folders above the temp dir may be named (normally none: /tmp and / are open)
    assert.equal(unreachableAncestor(open), unreachableAncestor(path.dirname(root)));
  });
});
