import assert from 'node:assert/strict';
import { it } from 'node:test';
import type { Store } from '../../src/store/store.ts';
import type { Channel, PostPart } from '../../src/types.ts';

/**
 * The conformance tests of post content (images, threads): called by the queue part
 * (queue.ts), so every dialect runs them on a real database.
 */
export function testStoreContent(fresh: () => Promise<{ store: Store; channel: Channel }>): void {
  const ago = (ms: number) => new Date(Date.now() - ms);
  const thread: PostPart[] = [
    { text: 'first', images: [{ source: '/srv/a.png', alt: 'a cat' }, { source: 'https://example.com/b.jpg?x="1"', alt: 'a "quoted" \\ back\\slash, {braces}, ☃ and 🐈' }] },
    { text: 'second', images: [] },
    { text: 'third', images: [{ source: '/srv/c.gif', alt: 'c' }] },
  ];

  it('content: stores the parts of a post and returns them from getPost, claim and exchange', async () => {
    const { store, channel } = await fresh();
    const [plain, withParts, oneImage] = await store.schedulePosts([
      { channelId: channel.id, text: 'plain', runAt: ago(3000) },
      { channelId: channel.id, text: 'first', runAt: ago(2000), parts: thread },
      { channelId: channel.id, text: 'pic', runAt: ago(1000), parts: [{ text: 'pic', images: [{ source: '/srv/p.webp', alt: 'p' }] }] },
    ]);
    const p = await store.getPost(plain ?? 0);
    assert.deepEqual(p?.parts, [{ text: 'plain', images: [] }], 'a plain post is one part of its text');
    assert.deepEqual(p?.publishedParts, []);
    const t = await store.getPost(withParts ?? 0);
    assert.equal(t?.text, 'first');
    assert.deepEqual(t?.parts, thread);
    assert.deepEqual((await store.getPost(oneImage ?? 0))?.parts, [{ text: 'pic', images: [{ source: '/srv/p.webp', alt: 'p' }] }]);
    const claimed = await store.claim('w', 1, 60_000);
    assert.deepEqual(claimed.map((c) => [c.id, c.parts]), [[plain, [{ text: 'plain', images: [] }]]]);
    const { claimed: next } = await store.exchange('w', [{ kind: 'published', postId: plain ?? 0, token: claimed[0]?.token ?? 0, externalId: null, externalUrl: null }], 2, 60_000);
    assert.deepEqual(next.map((c) => c.parts), [thread, [{ text: 'pic', images: [{ source: '/srv/p.webp', alt: 'p' }] }]]);
    assert.deepEqual(next.map((c) => c.publishedParts), [[], []]);
  });

  it('content: text, thread parts, alt text, errors and channel names in any script come back byte for byte', async () => {
    const { store } = await fresh();
    // 4-byte emoji, a flag (two regional indicators), ZWJ sequences, a skin tone, CJK,
    // right-to-left scripts, combining marks (decomposed: never normalised), astral math letters
    const samples = {
      emoji: '🧵 🐈 🇺🇦 👩‍👩‍👧 🧑🏽‍💻 👍🏽 ☃️',
      cjk: '漢字 かな カナ 한국어 中文',
      rtl: 'مرحبا بالعالم · שלום עולם',
      marks: 'e\u0301 a\u0308 Z\u0324\u0354\u0367\u0311\u0313 n\u0303',
      math: '𝔸𝕓𝒞 𝟘𝟙 𝐀𝐁 ℵ',
    };
    const text = Object.values(samples).join(' | ');
    // code points, as the databases' LEFT / left / substr count them
    assert.ok(Array.from(text).length < 200, 'short enough for posts list to show it whole');
    const name = `🧵 ${samples.cjk.slice(0, 2)} 🇺🇦 👩‍👩‍👧`;
    const channel = await store.addChannel({ name, platform: 'file', settings: { path: '/tmp/🧵.jsonl' }, onUnknown: 'retry' });
    assert.equal(channel.name, name);
    assert.equal((await store.findChannel(name))?.id, channel.id, 'found by its exact name');
    const parts: PostPart[] = [
      { text, images: [{ source: '/srv/🐈 猫.png', alt: `${samples.emoji} ${samples.rtl} ${samples.marks}` }] },
      { text: `${samples.math} ${samples.cjk}`, images: [] },
      { text: samples.rtl, images: [{ source: 'https://example.com/𝔸.jpg', alt: samples.math }] },
    ];
    const [id = 0] = await store.schedulePosts([{ channelId: channel.id, text, runAt: ago(1000), parts }]);
    // every string of the parts as its UTF-8 bytes (jsonb keeps the strings, not the key order)
    const hex = (value: string) => Buffer.from(value, 'utf8').toString('hex');
    const bytes = (value: readonly PostPart[] | null | undefined) =>
      value?.map((p) => [hex(p.text), p.images.map((i) => [hex(i.source), hex(i.alt)])]);
    const shown = await store.getPost(id);
    assert.equal(shown?.text, text);
    assert.deepEqual(bytes(shown?.parts), bytes(parts));
    assert.equal(shown?.channelName, name);
    const [listed] = await store.listPosts({ order: 'next', limit: 1, channelId: channel.id });
    assert.deepEqual([listed?.text, listed?.channel], [text, name]);
    const [claimed] = await store.claim('w', 1, 60_000);
    assert.equal(claimed?.id, id);
    assert.equal(claimed.text, text);
    assert.deepEqual(bytes(claimed.parts), bytes(parts));
    assert.equal(claimed.channel?.name, name);
    assert.deepEqual(claimed.channel?.settings, { path: '/tmp/🧵.jsonl' });
    // an error and a published part carry what the network said, in any script
    const error = `HTTP 503: ${samples.rtl} ${samples.emoji}`;
    const part = { externalId: `🧵-${samples.cjk}`, externalUrl: `https://example.com/${samples.math}` };
    assert.equal(await store.recordPart('w', id, claimed.token, 0, part), true);
    assert.deepEqual(await store.recordOutcomes('w', [{ kind: 'retry', postId: id, token: claimed.token, error, delayMs: 0, unconfirmed: false }]), [id]);
    const retried = await store.getPost(id);
    assert.equal(retried?.lastError, error);
    assert.deepEqual(retried?.publishedParts, [part]);
    assert.equal((await store.postAttempts(id))[0]?.error, error);
    // and an edit keeps them as given
    const edited: PostPart[] = [{ text: samples.marks, images: [{ source: '/srv/x.png', alt: samples.emoji }] }];
    assert.deepEqual(await store.editPost(id, { content: { text: samples.marks, parts: edited } }), { edited: true, status: 'pending' });
    const [again] = await store.claim('w', 1, 60_000);
    assert.equal(again?.text, samples.marks);
    assert.deepEqual(bytes(again?.parts), bytes(edited));
  });

  it('content: recordPart appends a published part only under the claim, at the next index, never rewriting one', async () => {
    const { store, channel } = await fresh();
    const [id = 0] = await store.schedulePosts([{ channelId: channel.id, text: 'first', runAt: ago(1000), parts: thread }]);
    const [c] = await store.claim('w1', 1, 60_000);
    const token = c?.token ?? 0;
    const one = { externalId: '1', externalUrl: 'https://n.example/1', replyRef: { uri: 'at://x/1', cid: 'c1' } };
    const two = { externalId: '2', externalUrl: null };
    assert.equal(await store.recordPart('w2', id, token, 0, one), false, 'another worker');
    assert.equal(await store.recordPart('w1', id, token + 1, 0, one), false, 'another claim token');
    assert.equal(await store.recordPart('w1', id, token, 1, one), false, 'not the next index');
    assert.equal(await store.recordPart('w1', id, token, 0, one), true);
    assert.equal(await store.recordPart('w1', id, token, 0, two), false, 'a recorded part is never rewritten');
    assert.equal(await store.recordPart('w1', id, token, 1, two), true);
    assert.deepEqual((await store.getPost(id))?.publishedParts, [one, two]);
    // a retry keeps them, and the next claim hands them to the worker
    assert.deepEqual(await store.recordOutcomes('w1', [{ kind: 'retry', postId: id, token, error: 'part 3 of 3: boom', delayMs: 0, unconfirmed: false }]), [id]);
    assert.equal(await store.recordPart('w1', id, token, 2, two), false, 'no longer processing');
    const [again] = await store.claim('w3', 1, 60_000);
    assert.deepEqual(again?.publishedParts, [one, two]);
    // failed, then an operator's retry: the published parts stay
    assert.deepEqual(await store.recordOutcomes('w3', [{ kind: 'failed', postId: id, token: again?.token ?? 0, error: 'part 3 of 3: refused' }]), [id]);
    assert.deepEqual(await store.requeue([id]), [id]);
    const requeued = await store.getPost(id);
    assert.equal(requeued?.status, 'pending');
    assert.deepEqual(requeued?.publishedParts, [one, two]);
    const [third] = await store.claim('w4', 1, 60_000);
    const last = { externalId: '3', externalUrl: 'https://n.example/3' };
    assert.equal(await store.recordPart('w4', id, third?.token ?? 0, 2, last), true);
    // the thread's address is its first part's
    await store.recordOutcomes('w4', [{ kind: 'published', postId: id, token: third?.token ?? 0, externalId: '1', externalUrl: 'https://n.example/1' }]);
    const done = await store.getPost(id);
    assert.deepEqual([done?.status, done?.externalId, done?.externalUrl], ['published', '1', 'https://n.example/1']);
    assert.deepEqual(done?.publishedParts, [one, two, last]);
  });
}
