import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from '../src/config.ts';
import type { ContentRules } from '../src/content/check.ts';
import { createLogger } from '../src/log.ts';
import { PermanentPublishError, RetryablePublishError, type LoadedImage, type Publisher, type PublishRequest } from '../src/publishers/publisher.ts';
import type { Channel, ClaimedPost, OnUnknown, PostPart, PublishedPart } from '../src/types.ts';
import { publishPost, type PublishDeps } from '../src/workers/publish-post.ts';

/**
 * The outcome rules of one claimed post with a thread, images and rate limits, through
 * publishPost with a publisher of this process (the plug-in interface a `module`
 * channel implements): what is sent, what is recorded, what a stop or a limit does.
 */

const RULES: ContentRules = {
  platform: 'test',
  checkText: (text, _settings, images) => (text.trim() === '' && images === 0 ? 'text is empty' : null),
  media: { maxImages: 4, maxBytes: 1_000_000, maxAltLength: 100, types: ['image/png'] },
  threads: true,
};
const PNG = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex');
// a file that does not exist (any more): an image deleted after its part went out
const GONE = path.join('/nonexistent-post-scheduler-test', 'gone.png');

function channel(onUnknown: OnUnknown): Channel {
  return { id: 7, name: 'thread-channel', platform: 'test', settings: {}, enabled: true, onUnknown, credentials: null, attention: null, createdAt: new Date() };
}

function claimed(parts: PostPart[], done: PublishedPart[], onUnknown: OnUnknown, unconfirmed = false): ClaimedPost {
  return {
    id: 42,
    runAt: new Date(),
    scheduledAt: new Date(),
    attempt: 2,
    attemptsBase: 0,
    token: 5,
    idempotencyKey: 'key-42',
    unconfirmed,
    text: parts[0]?.text ?? null,
    parts,
    publishedParts: done,
    channel: channel(onUnknown),
  };
}

interface Harness {
  readonly deps: PublishDeps;
  readonly sent: PublishRequest[];
  readonly recorded: number[];
  readonly looked: string[];
}

function harness(options: {
  publish?: (request: PublishRequest) => Promise<PublishedPart>;
  lookup?: (request: PublishRequest) => Promise<PublishedPart | null>;
  mayStartPart?: () => boolean;
  loadImage?: () => Promise<LoadedImage>;
  signal?: AbortSignal;
}): Harness {
  const sent: PublishRequest[] = [];
  const recorded: number[] = [];
  const looked: string[] = [];
  const publisher: Publisher = {
    publish: async (request) => {
      sent.push(request);
      return options.publish === undefined ? { externalId: `id-${request.part.index}`, externalUrl: null } : options.publish(request);
    },
    lookup: async (request) => {
      looked.push(request.idempotencyKey);
      return options.lookup === undefined ? null : options.lookup(request);
    },
    close: async () => undefined,
  };
  const deps: PublishDeps = {
    config: loadConfig({}, { MAX_ATTEMPTS: '5', RETRY_BASE_MS: '0', RETRY_MAX_MS: '0' }),
    log: createLogger('WORKER test', 'text', () => undefined),
    publisherFor: async () => publisher,
    signal: options.signal ?? new AbortController().signal,
    openCredentials: () => ({}),
    saveCredentials: async () => undefined,
    setAttention: async () => undefined,
    contentRules: async () => RULES,
    loadImage: options.loadImage ?? (async () => ({ bytes: PNG, mimeType: 'image/png', alt: '', filename: 'a.png' })),
    recordPart: async (_post, _token, index) => {
      recorded.push(index);
      return true;
    },
    ...(options.mayStartPart === undefined ? {} : { mayStartPart: options.mayStartPart }),
  };
  return { deps, sent, recorded, looked };
}

const part = (text: string, images: PostPart['images'] = []): PostPart => ({ text, images });

describe('publishPost: threads, images and limits', () => {
  it('a thread resumes after its parts on record even if an image of a sent part is gone since', async () => {
    const h = harness({});
    const post = claimed([part('one', [{ source: GONE, alt: 'was here' }]), part('two')], [{ externalId: 'id-0', externalUrl: null }], 'check');
    const outcome = await publishPost(post, h.deps);
    assert.equal(outcome.kind, 'published', JSON.stringify(outcome));
    assert.deepEqual(
      h.sent.map((r) => [r.part.index, r.replyTo?.parent.externalId]),
      [[1, 'id-0']],
      'only part 2 is sent, replying to part 1',
    );
  });

  it('a post that may be out is looked up before its content is judged: found, it is published even if its image is gone', async () => {
    const h = harness({ lookup: async () => ({ externalId: 'found', externalUrl: 'https://x/found' }) });
    const post = claimed([part('alone', [{ source: GONE, alt: '' }])], [], 'check', true);
    const outcome = await publishPost(post, h.deps);
    assert.deepEqual(outcome.kind === 'published' && [outcome.externalId, outcome.externalUrl], ['found', 'https://x/found'], JSON.stringify(outcome));
    assert.deepEqual(h.looked, ['key-42']);
    assert.equal(h.sent.length, 0);
  });

  it('a post that may be out and is not found is sent only if it fits', async () => {
    const h = harness({});
    const outcome = await publishPost(claimed([part('alone', [{ source: GONE, alt: '' }])], [], 'check', true), h.deps);
    assert.equal(outcome.kind, 'failed', JSON.stringify(outcome));
    assert.match(outcome.kind === 'failed' ? outcome.error : '', /content does not fit channel thread-channel: image .*gone\.png: no such file/);
    assert.equal(h.sent.length, 0);
  });

  it('no new part starts once the worker may not start one (stopping, or past its cutoff): the rest waits, what went out is on record', async () => {
    let allowed = true;
    const h = harness({
      publish: async (request) => {
        allowed = false;
        return { externalId: `id-${request.part.index}`, externalUrl: null };
      },
      mayStartPart: () => allowed,
    });
    const outcome = await publishPost(claimed([part('one'), part('two'), part('three')], [], 'hold'), h.deps);
    assert.equal(outcome.kind, 'released', JSON.stringify(outcome));
    assert.equal(h.sent.length, 1);
    assert.deepEqual(h.recorded, [0]);
  });

  it('a network rate limit on a post that may be out, on a retry channel, waits no longer than the key is remembered', async () => {
    const h = harness({
      publish: async () => {
        throw new RetryablePublishError('rate limited (HTTP 429)', 2 * 60 * 60 * 1000, false, true);
      },
    });
    const outcome = await publishPost(claimed([part('again')], [], 'retry', true), h.deps);
    assert.equal(outcome.kind, 'retry');
    assert.ok(outcome.kind === 'retry' && outcome.uncounted === true && outcome.unconfirmed, JSON.stringify(outcome));
    assert.ok(outcome.kind === 'retry' && outcome.delayMs <= 50 * 60 * 1000, `delay ${outcome.kind === 'retry' ? outcome.delayMs : '?'}`);
  });

  it('a rate limit that says to wait 0 (or a reset already past) still pauses a second, not a loop of instant retries', async () => {
    const h = harness({
      publish: async () => {
        throw new RetryablePublishError('rate limited (HTTP 429)', 0, false, true);
      },
    });
    const outcome = await publishPost(claimed([part('now?')], [], 'hold'), h.deps);
    assert.ok(outcome.kind === 'retry' && outcome.uncounted === true && outcome.delayMs >= 1_000, JSON.stringify(outcome));
  });

  it('stopped while its images load: handed back as it was, the attempt not counted', async () => {
    const stop = new AbortController();
    const h = harness({
      signal: stop.signal,
      loadImage: async () => {
        stop.abort('worker stopped');
        throw new RetryablePublishError('image a.png: the request was interrupted');
      },
    });
    const outcome = await publishPost(claimed([part('pic', [{ source: 'https://example.com/a.png', alt: '' }])], [], 'hold'), h.deps);
    assert.equal(outcome.kind, 'released', JSON.stringify(outcome));
    assert.equal(h.sent.length, 0);
  });

  it("an image host's 429, 403 or 5xx is the content's reason, never the channel's rate-limited or auth; an image timeout is a timeout", async () => {
    const cases: [Error, string][] = [
      [new RetryablePublishError('image https://img.example/a.png: HTTP 429'), 'content'],
      [new RetryablePublishError('image https://img.example/a.png: HTTP 503'), 'content'],
      [new PermanentPublishError('image https://img.example/a.png: HTTP 403'), 'content'],
      [new RetryablePublishError('image https://img.example/a.png: no answer in time', null, false, false, 'timeout'), 'timeout'],
      [new RetryablePublishError('image https://img.example/a.png: ECONNREFUSED', null, false, false, 'network'), 'network'],
    ];
    for (const [error, reason] of cases) {
      const h = harness({
        loadImage: async () => {
          throw error;
        },
      });
      const outcome = await publishPost(claimed([part('pic', [{ source: 'https://img.example/a.png', alt: '' }])], [], 'hold'), h.deps);
      assert.ok(outcome.kind === 'retry' || outcome.kind === 'failed', JSON.stringify(outcome));
      assert.equal(outcome.reason, reason, error.message);
      assert.equal(h.sent.length, 0);
    }
  });
});
