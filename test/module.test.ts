import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { loadPublisherModule } from '../src/publishers/registry.ts';
import { modulePublisher } from '../src/publishers/module.ts';
import { openStore } from '../src/store/open.ts';
import { PLATFORMS } from '../src/types.ts';
import { createTestDatabase, type TestDatabase } from './helpers/databases.ts';
import { killAll, run, testEnv } from './helpers/processes.ts';

/** A user's module that appends each post to `out`, declares `retry` and refuses texts with "forbidden". */
const appending = (out: string) => `
import { appendFileSync } from 'node:fs';
export default {
  defaultOnUnknown: 'retry',
  canLookUp: false,
  checkText: (text) => (text.includes('forbidden') ? 'no forbidden words here' : null),
  createPublisher(options) {
    return {
      async publish(request) {
        appendFileSync(${JSON.stringify(out)}, JSON.stringify({ id: request.postId, channel: request.channel.name, text: request.text, timeoutMs: options.timeoutMs }) + '\\n');
        return { externalId: 'ext-' + request.postId, externalUrl: null };
      },
      async close() {},
    };
  },
};
`;

/** Throws errors by name, as a module that does not import the package would. */
const refusing = `
class PermanentPublishError extends Error {
  name = 'PermanentPublishError';
}
export const publisher = {
  createPublisher() {
    return {
      async publish() {
        throw new PermanentPublishError('the module says no');
      },
      async close() {},
    };
  },
};
`;

describe('module platform', () => {
  const dbs: TestDatabase[] = [];
  after(async () => {
    killAll();
    for (const db of dbs) await db.drop();
  });

  it('is registered as platform module: hold unless the user module says otherwise', async () => {
    assert.equal(await loadPublisherModule('module'), modulePublisher);
    assert.ok(PLATFORMS.includes('module'));
    assert.equal(modulePublisher.defaultOnUnknown, 'hold');
  });

  it('adds channels only for .js/.mjs files inside MODULE_DIR, and cron publishes through them in worker processes', async () => {
    const db = await createTestDatabase('sqlite');
    dbs.push(db);
    const moduleDir = path.join(db.dir, 'modules');
    const outside = path.join(db.dir, 'elsewhere');
    fs.mkdirSync(moduleDir);
    fs.mkdirSync(outside);
    const out = path.join(db.dir, 'out.jsonl');
    fs.writeFileSync(path.join(moduleDir, 'appending.mjs'), appending(out));
    fs.writeFileSync(path.join(moduleDir, 'refusing.js'), refusing);
    fs.writeFileSync(path.join(moduleDir, 'package.json'), '{"type": "module"}');
    fs.writeFileSync(path.join(moduleDir, 'broken.mjs'), "throw new Error('broken at load');\nexport default {};\n");
    fs.writeFileSync(path.join(moduleDir, 'notes.txt'), 'not code');
    fs.writeFileSync(path.join(outside, 'evil.mjs'), appending(path.join(outside, 'evil.jsonl')));
    fs.symlinkSync(path.join(outside, 'evil.mjs'), path.join(moduleDir, 'link.mjs'));
    const env = testEnv(db.url, { MODULE_DIR: moduleDir });
    const add = (name: string, file: string, extra: string[] = [], e = env) => run(['channels', 'add', '--name', name, '--platform', 'module', '--module', file, ...extra], e);

    // refused, each in one line
    let r = await add('nodir', path.join(moduleDir, 'appending.mjs'), [], testEnv(db.url));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^post-scheduler: MODULE_DIR is not set[^\n]*\n$/);
    r = await add('out', path.join(outside, 'evil.mjs'));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^post-scheduler: module \S+evil\.mjs is not inside MODULE_DIR [^\n]*\n$/);
    r = await add('link', path.join(moduleDir, 'link.mjs'));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^post-scheduler: module \S+link\.mjs is not inside MODULE_DIR [^\n]*resolved: \S+evil\.mjs\)\n$/);
    r = await add('txt', path.join(moduleDir, 'notes.txt'));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /must be a \.js or \.mjs file\n$/);
    r = await run(['channels', 'add', '--name', 'f', '--platform', 'file', '--path', out, '--module', path.join(moduleDir, 'appending.mjs')], env);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'post-scheduler: --module is not a setting of platform file\n');
    r = await add('nocheck', path.join(moduleDir, 'appending.mjs'), ['--on-unknown', 'check']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--on-unknown check needs a platform that can look up/);

    // a relative path, from the program's directory: stored absolute and real
    r = await add('mine', path.relative(process.cwd(), path.join(moduleDir, 'appending.mjs')));
    assert.equal(r.code, 0, r.stderr);
    r = await add('refusing', path.join(moduleDir, 'refusing.js'));
    assert.equal(r.code, 0, r.stderr);
    r = await add('broken', path.join(moduleDir, 'broken.mjs'), ['--on-unknown', 'hold']);
    assert.equal(r.code, 1, 'a module that throws at load is refused when added');
    assert.match(r.stderr, /broken at load/);
    r = await run(['channels', 'list', '--json'], env);
    const channels = JSON.parse(r.stdout) as { name: string; onUnknown: string; settings: { module_path: string } }[];
    const mine = channels.find((c) => c.name === 'mine');
    assert.equal(mine?.settings.module_path, fs.realpathSync(path.join(moduleDir, 'appending.mjs')));
    assert.ok(path.isAbsolute(mine.settings.module_path));
    assert.equal(mine.onUnknown, 'retry', "the module's own defaultOnUnknown");
    assert.equal(channels.find((c) => c.name === 'refusing')?.onUnknown, 'hold', 'hold when the module declares none');

    // the module's checkText refuses when scheduling
    r = await run(['schedule', '--channel', 'mine', '--text', 'a forbidden word'], env);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'post-scheduler: --text does not fit channel mine: no forbidden words here\n');
    const ids: number[] = [];
    for (const [channel, text] of [['mine', 'one'], ['mine', 'two'], ['refusing', 'three']] as const) {
      r = await run(['schedule', '--channel', channel, '--text', text], env);
      assert.equal(r.code, 0, r.stderr);
      ids.push(Number(r.stdout.trim()));
    }

    r = await run(['cron'], env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const lines = fs.readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { text: string; channel: string });
    assert.deepEqual(lines.map((l) => l.text).sort(), ['one', 'two']);
    assert.ok(lines.every((l) => l.channel === 'mine'));
    const store = await openStore(parseDatabaseUrl(db.url));
    try {
      const [one, two, three] = await Promise.all(ids.map((id) => store.getPost(id)));
      assert.equal(one?.status, 'published');
      assert.equal(one.externalId, `ext-${String(ids[0])}`);
      assert.equal(two?.status, 'published');
      assert.equal(three?.status, 'failed', 'the refusing module fails its post alone');
      assert.equal(three.lastError, 'the module says no');
    } finally {
      await store.close();
    }
    assert.equal(fs.existsSync(path.join(outside, 'evil.jsonl')), false);
  });

  it('the worker refuses a module that moved outside MODULE_DIR, or when MODULE_DIR is unset; a module that breaks at load is retried', async () => {
    const db = await createTestDatabase('sqlite');
    dbs.push(db);
    const moduleDir = path.join(db.dir, 'modules');
    const outside = path.join(db.dir, 'elsewhere');
    fs.mkdirSync(moduleDir);
    fs.mkdirSync(outside);
    const out = path.join(db.dir, 'out.jsonl');
    const movable = path.join(moduleDir, 'movable.mjs');
    const later = path.join(moduleDir, 'later.mjs');
    fs.writeFileSync(movable, appending(out));
    fs.writeFileSync(later, appending(out));
    const env = testEnv(db.url, { MODULE_DIR: moduleDir });
    for (const [name, file] of [['movable', movable], ['later', later]] as const) {
      const r = await run(['channels', 'add', '--name', name, '--platform', 'module', '--module', file], env);
      assert.equal(r.code, 0, r.stderr);
    }
    const schedule = async (channel: string) => {
      const scheduled = await run(['schedule', '--channel', channel, '--text', 'hi'], env);
      assert.equal(scheduled.code, 0, scheduled.stderr);
      return Number(scheduled.stdout.trim());
    };
    const unset = await schedule('movable');

    // MODULE_DIR unset for the cycle: refused for good, naming the channel
    let r = await run(['cron'], { ...env, MODULE_DIR: '' });
    assert.equal(r.code, 0, r.stdout + r.stderr);

    // scheduled, then the file replaced by a symlink to one outside (schedule would refuse it now)
    const moved = await schedule('movable');
    const broken = await schedule('later');
    fs.renameSync(movable, path.join(outside, 'movable.mjs'));
    fs.symlinkSync(path.join(outside, 'movable.mjs'), movable);
    // a module that throws at load: nothing was sent, retried later
    fs.writeFileSync(later, "throw new Error('broken at load');\n");
    r = await run(['cron'], env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(fs.existsSync(out), false);

    const store = await openStore(parseDatabaseUrl(db.url));
    try {
      const [a, b, c] = await Promise.all([unset, moved, broken].map((id) => store.getPost(id)));
      assert.equal(a?.status, 'failed');
      assert.match(a.lastError ?? '', /^channel movable: MODULE_DIR is not set/);
      assert.equal(b?.status, 'failed');
      assert.match(b.lastError ?? '', /^channel movable: module \S+ is not inside MODULE_DIR/);
      assert.equal(c?.status, 'pending', 'retried later');
      assert.equal(c.unconfirmed, false, 'not maybe delivered');
      assert.match(c.lastError ?? '', /^channel later: module \S+later\.mjs failed to load: broken at load/);
    } finally {
      await store.close();
    }
  });
});
