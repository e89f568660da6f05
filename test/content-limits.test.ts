import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { contentProblem } from '../src/content/check.ts';
import { rulesOf } from '../src/content/rules.ts';
import { blueskyPublisher } from '../src/publishers/bluesky.ts';
import { mastodonPublisher } from '../src/publishers/mastodon.ts';
import { telegramPublisher } from '../src/publishers/telegram.ts';
import { xPublisher } from '../src/publishers/x.ts';
import type { PostPart } from '../src/types.ts';

// Each network's limits as the scheduling check applies them to a part with images:
// the check sees the images, so a caption limit or a post of images alone is judged
// when the post is scheduled, not when it is due (perhaps after earlier parts went out).

const PNG = Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), Buffer.from('0000000d49484452000000010000000108060000001f15c489', 'hex')]);

describe('content limits with images, checked when scheduling', () => {
  let dir: string;
  let png: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'content-limits-'));
    png = path.join(dir, 'cat.png');
    fs.writeFileSync(png, PNG);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const withImage = (text: string): PostPart[] => [{ text, images: [{ source: png, alt: 'a cat' }] }];
  const textOnly = (text: string): PostPart[] => [{ text, images: [] }];

  it('telegram: with images the text is a caption of at most 1024 characters; without, a message of 4096', async () => {
    const rules = rulesOf(telegramPublisher);
    const settings = { chat_id: '@news' };
    const long = 'x'.repeat(1500);
    const problem = await contentProblem(rules, withImage(long), settings);
    assert.equal(problem?.field, 'text');
    assert.match(problem?.message ?? '', /1500 characters .*caption, which takes at most 1024/);
    assert.equal(await contentProblem(rules, textOnly(long), settings), null, 'a message of 1500 characters fits');
    // a thread names the part
    const thread: PostPart[] = [...textOnly('first'), ...withImage(long)];
    assert.match((await contentProblem(rules, thread, settings))?.message ?? '', /^part 2 of 2: text is 1500 characters/);
  });

  it('a part of images alone is taken by the networks that take it, and an empty text without images is not', async () => {
    for (const module of [telegramPublisher, mastodonPublisher, xPublisher, blueskyPublisher]) {
      const rules = rulesOf(module);
      const settings = module.platform === 'mastodon' ? { instance: 'https://mastodon.example' } : module.platform === 'telegram' ? { chat_id: '@news' } : {};
      assert.equal(await contentProblem(rules, withImage(''), settings), null, `${module.platform}: images alone`);
      if (module.platform !== 'bluesky') {
        assert.match((await contentProblem(rules, textOnly(' '), settings))?.message ?? '', /empty/, `${module.platform}: blank text alone`);
      }
    }
  });

  it('mastodon and x: the text limit still applies to a part with images', async () => {
    const mastodon = await contentProblem(rulesOf(mastodonPublisher), withImage('y'.repeat(501)), { instance: 'https://mastodon.example' });
    assert.match(mastodon?.message ?? '', /501 .*500/);
    const x = await contentProblem(rulesOf(xPublisher), withImage('z'.repeat(281)), {});
    assert.match(x?.message ?? '', /281 .*280/);
  });
});
