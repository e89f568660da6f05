import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { parseDatabaseUrl } from '../src/config.ts';
import { telegramPublisher } from '../src/publishers/telegram.ts';
import { xPublisher } from '../src/publishers/x.ts';
import { makeRateGate } from '../src/ratelimits/gate.ts';
import { effectiveLimits, rateKeys } from '../src/ratelimits/limits.ts';
import { openStore } from '../src/store/open.ts';
import type { Channel } from '../src/types.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './helpers/databases.ts';

// A limit of a bot or an app (Telegram's 30 messages a second per bot, X's 10,000 posts
// a day per app) is shared by every channel of that bot or app, whatever worker sends.

const BOT_A = '111111:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
const BOT_A_AGAIN = '111111:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
const BOT_B = '222222:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB';

describe('limits shared by the channels of one bot or app', () => {
  it('telegram: one requests window per bot, whatever the chat; posts stay per channel; no secret in a key', () => {
    const keysOf = (id: number, token: string) =>
      rateKeys({ id, platform: 'telegram' }, effectiveLimits({ settings: { chat_id: `@chat${id}` } }, telegramPublisher, { bot_token: token }));
    const a1 = keysOf(1, BOT_A);
    const a2 = keysOf(2, BOT_A_AGAIN);
    const b = keysOf(3, BOT_B);
    const requests = (keys: typeof a1) => keys.find((k) => k.key.endsWith(':requests'))?.key;
    const posts = (keys: typeof a1) => keys.find((k) => k.key.endsWith(':posts'))?.key;
    assert.equal(requests(a1), requests(a2), 'two chats of one bot share its window');
    assert.notEqual(requests(a1), requests(b), 'another bot has its own');
    assert.notEqual(posts(a1), posts(a2), "each chat keeps its own posts window");
    for (const k of [...a1, ...b]) assert.ok(!k.key.includes('AAAA') && !k.key.includes('BBBB'), `no token in ${k.key}`);
  });

  it('x: one requests window per app (client_id), 10,000 a day', () => {
    const limits = effectiveLimits({ settings: {} }, xPublisher, { access_token: 't', client_id: 'app-1' });
    assert.deepEqual({ limit: limits.requests?.limit, windowMs: limits.requests?.windowMs }, { limit: 10_000, windowMs: 24 * 3_600_000 });
    const one = rateKeys({ id: 1, platform: 'x' }, limits);
    const two = rateKeys({ id: 2, platform: 'x' }, effectiveLimits({ settings: {} }, xPublisher, { access_token: 'u', client_id: 'app-1' }));
    assert.equal(one.find((k) => k.key.endsWith(':requests'))?.key, two.find((k) => k.key.endsWith(':requests'))?.key);
  });

  it("the gate reads a claim's channel once for all its sends; the next claim's channel, and a bad setting, are read again", async () => {
    let reads = 0;
    let bad = false;
    const gate = makeRateGate({
      store: {} as Parameters<typeof makeRateGate>[0]['store'],
      limitsFor: async () => {
        reads += 1;
        if (bad) throw new Error('setting rate_limit must be text such as "20/60s"');
        return {};
      },
      maxWaitMs: 0,
      waitUntil: Date.now() + 60_000,
      sendSlotTtlMs: 60_000,
    });
    const signal = new AbortController().signal;
    const claimOf = (): Channel => ({ id: 1, name: 'out', platform: 'webhook', settings: {}, enabled: true, onUnknown: 'hold', credentials: null, attention: null, createdAt: new Date() });
    const first = claimOf();
    const checks = await Promise.all([1, 2, 3, 4, 5].map((i) => gate.take(first, `s${i}`, signal)));
    assert.deepEqual(checks.map((c) => c.kind), ['go', 'go', 'go', 'go', 'go']);
    assert.equal(reads, 1, 'five sends of one claimed channel read its limits once');
    await gate.take(claimOf(), 's6', signal);
    assert.equal(reads, 2, "the next claim's channel object is read again");
    bad = true;
    const refused = await Promise.all([gate.take(claimOf(), 's7', signal), gate.take(claimOf(), 's8', signal)]);
    assert.deepEqual(refused.map((c) => c.kind), ['invalid', 'invalid']);
    assert.match(refused[0]?.kind === 'invalid' ? refused[0].reason : '', /channel out: setting rate_limit/);
    const bent = claimOf();
    assert.equal((await gate.take(bent, 's9', signal)).kind, 'invalid');
    assert.equal((await gate.take(bent, 's10', signal)).kind, 'invalid');
    assert.equal(reads, 6, 'an unreadable setting is not kept: each send reads it again');
  });

  for (const dialect of DIALECTS) {
    describe(dialect, () => {
      const dbs: TestDatabase[] = [];
      after(async () => {
        await Promise.all(dbs.map((d) => d.drop()));
      });

      it('two channels of one bot never send more than the bot may, taken through the gate as workers take it', async () => {
        const db = await createTestDatabase(dialect);
        dbs.push(db);
        const store = await openStore(parseDatabaseUrl(db.url));
        try {
          await store.migrate();
          const add = (name: string) => store.addChannel({ name, platform: 'telegram', settings: { chat_id: `@${name}` }, onUnknown: 'hold' });
          const [one, two, other] = [await add('one'), await add('two'), await add('other')];
          // the bot's window made small enough to fill: 3 in any minute
          const gate = makeRateGate({
            store,
            limitsFor: async (channel: Channel, credentials) => {
              const limits = effectiveLimits(channel, telegramPublisher, credentials);
              return { requests: { ...(limits.requests ?? { limit: 0, windowMs: 0 }), limit: 3, windowMs: 60_000 } };
            },
            maxWaitMs: 0,
            waitUntil: Date.now() + 60_000,
            sendSlotTtlMs: 60_000,
          });
          const signal = new AbortController().signal;
          const kinds: string[] = [];
          for (const [i, channel] of [one, two, one, two].entries()) {
            const check = await gate.take(channel, `send-${i}`, signal, { bot_token: BOT_A });
            kinds.push(check.kind);
            if (check.kind === 'go') await check.settle();
          }
          assert.deepEqual(kinds, ['go', 'go', 'go', 'wait'], 'the fourth send of the bot waits, on either channel');
          const third = await gate.take(other, 'send-other', signal, { bot_token: BOT_B });
          assert.equal(third.kind, 'go', "another bot's channel is not held back");
        } finally {
          await store.close();
        }
      });
    });
  }
});
