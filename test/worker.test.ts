import assert from 'node:assert/strict';
import { after, afterEach, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import Database from 'better-sqlite3';
import postgres from 'postgres';
import { loadConfig, parseDatabaseUrl, type ConfigInput } from '../src/config.ts';
import { createLogger } from '../src/log.ts';
import {
  PermanentPublishError,
  RetryablePublishError,
  type PublisherModule,
  type PublisherOptions,
  type PublishRequest,
  type PublishResult,
} from '../src/publishers/publisher.ts';
import { openStore } from '../src/store/open.ts';
import type { Exchange, Store } from '../src/store/store.ts';
import type { Channel, OnUnknown, Outcome, Post } from '../src/types.ts';
import { runWorker, type WorkerReport } from '../src/workers/post-scheduler.worker.ts';
import { makePublisherCache } from '../src/workers/publishers.ts';
import { warmPublishing } from '../src/workers/warm.ts';
import { createTestDatabase, DIALECTS, type TestDatabase } from './helpers/databases.ts';

/**
 * The worker loop (runWorker), in process, as a specification: a real store on a real
 * database, wrapped so that chosen round trips fail before or after their commit, and
 * a fake publisher that answers each post as the test says. Each test reads the
 * database after runWorker returns, and the report it returned.
 *
 * No assertion is about elapsed time; every wait is bounded.
 */

const WORKER_ID = 'worker-test-1';
const FAKE = 'fake';

// ---------------------------------------------------------------------------------
// The fake publisher: one behaviour per call, by post text (the last one repeats).

type Behaviour = (request: PublishRequest) => Promise<PublishResult>;

const ok =
  (externalId?: string): Behaviour =>
  (r) =>
    Promise.resolve({ externalId: externalId ?? `ext-${r.postId}`, externalUrl: `https://fake.test/${r.postId}` });
const permanent =
  (message: string): Behaviour =>
  () =>
    Promise.reject(new PermanentPublishError(message));
const retryable =
  (message: string, retryAfterMs: number | null = null, maybeDelivered = false): Behaviour =>
  () =>
    Promise.reject(new RetryablePublishError(message, retryAfterMs, maybeDelivered));
const unexpected =
  (message: string): Behaviour =>
  () =>
    Promise.reject(new Error(message));
/** sent, then no answer until the worker aborts the request (a timeout after sending) */
const hang: Behaviour = (r) =>
  new Promise((_, reject) => {
    const fail = () => reject(new RetryablePublishError(`aborted: ${String(r.signal.reason)}`, null, true));
    if (r.signal.aborted) fail();
    else r.signal.addEventListener('abort', fail, { once: true });
  });

/** A publish that waits until the test opens it. */
function gate(): { behaviour: Behaviour; entered: Promise<PublishRequest>; open: (result: PublishResult) => void } {
  let open: (result: PublishResult) => void = () => undefined;
  const opened = new Promise<PublishResult>((resolve) => (open = resolve));
  let enter: (request: PublishRequest) => void = () => undefined;
  const entered = new Promise<PublishRequest>((resolve) => (enter = resolve));
  return {
    behaviour: (r) => {
      enter(r);
      return opened;
    },
    entered,
    open: (result) => open(result),
  };
}

class FakePlatform {
  readonly publishes: PublishRequest[] = [];
  readonly lookups: PublishRequest[] = [];
  readonly created: PublisherOptions[] = [];
  closed = 0;
  inFlight = 0;
  maxInFlight = 0;
  /** whether its publishers implement lookup */
  canLookUp = true;
  /** runs when the worker loads the module, before it gets it */
  beforeLoad: (() => Promise<void>) | null = null;
  private readonly behaviours = new Map<string, Behaviour[]>();
  private readonly found = new Map<string, PublishResult | null>();

  /** how publishes of the post with this text answer, one per call; the last repeats; default ok() */
  on(text: string, ...behaviours: Behaviour[]): this {
    this.behaviours.set(text, behaviours);
    return this;
  }

  /** what lookup says of the post with this text; default: not found */
  lookupFinds(text: string, result: PublishResult | null): this {
    this.found.set(text, result);
    return this;
  }

  published(text: string): PublishRequest[] {
    return this.publishes.filter((r) => r.text === text);
  }

  readonly load = async (platform: string): Promise<PublisherModule | null> => {
    if (platform !== FAKE) return null;
    await this.beforeLoad?.();
    return this.module();
  };

  private module(): PublisherModule {
    const publish = async (r: PublishRequest): Promise<PublishResult> => {
      this.publishes.push(r);
      const list = this.behaviours.get(r.text) ?? [ok()];
      const behaviour = list[Math.min(this.published(r.text).length - 1, list.length - 1)] ?? ok();
      this.inFlight++;
      this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
      try {
        return await behaviour(r);
      } finally {
        this.inFlight--;
      }
    };
    const lookup = async (r: PublishRequest): Promise<PublishResult | null> => {
      this.lookups.push(r);
      return this.found.get(r.text) ?? null;
    };
    return {
      platform: FAKE,
      parseSettings: (s) => s,
      checkText: () => null,
      redactSettings: (s) => s,
      canLookUp: this.canLookUp,
      defaultOnUnknown: 'hold',
      createPublisher: (options) => {
        this.created.push(options);
        return {
          publish,
          ...(this.canLookUp ? { lookup } : {}),
          close: async () => {
            this.closed++;
          },
        };
      },
    };
  }
}

// ---------------------------------------------------------------------------------
// The store: the real one, with failures injected on chosen calls of exchange and reconcile.

/** before-commit: throws without calling the real method; after-commit: calls it, then throws (the answer is lost) */
type Fault = 'before-commit' | 'after-commit' | null;

interface ExchangeCall {
  readonly n: number;
  readonly outcomes: readonly Outcome[];
  readonly limit: number;
  fault: Fault;
  /** the real exchange ran and committed */
  committed: boolean;
  result: Exchange | null;
}

class FaultyStore {
  readonly exchanges: ExchangeCall[] = [];
  reconciles = 0;
  /** decides the fault of each exchange call (numbered from 1) */
  exchangeFault: (call: ExchangeCall) => Fault = () => null;
  reconcileFault: (n: number) => Fault = () => null;
  /** renewing leases fails (the heartbeat's round trips) */
  renewFails = false;
  /** runs after a faulty exchange committed, before its answer is lost */
  afterCommit: (call: ExchangeCall) => Promise<void> = async () => undefined;
  /** runs after an exchange committed, before its answer reaches the worker (an answer held back) */
  beforeAnswer: (call: ExchangeCall) => Promise<void> = async () => undefined;
  readonly store: Store;

  constructor(readonly real: Store) {
    const exchange: Store['exchange'] = async (workerId, outcomes, limit, leaseMs, claim) => {
      const call: ExchangeCall = { n: this.exchanges.length + 1, outcomes: [...outcomes], limit, fault: null, committed: false, result: null };
      this.exchanges.push(call);
      call.fault = this.exchangeFault(call);
      if (call.fault === 'before-commit') throw new Error(`injected: exchange ${call.n} failed before its commit`);
      const result = await real.exchange(workerId, outcomes, limit, leaseMs, claim);
      call.committed = true;
      call.result = result;
      if (call.fault === 'after-commit') {
        await this.afterCommit(call);
        throw new Error(`injected: exchange ${call.n} committed, its answer was lost`);
      }
      await this.beforeAnswer(call);
      return result;
    };
    const reconcile: Store['reconcile'] = async (workerId, ids) => {
      const n = ++this.reconciles;
      const fault = this.reconcileFault(n);
      if (fault === 'before-commit') throw new Error(`injected: reconcile ${n} failed`);
      const rows = await real.reconcile(workerId, ids);
      if (fault === 'after-commit') throw new Error(`injected: reconcile ${n} answer lost`);
      return rows;
    };
    const renewLeases: Store['renewLeases'] = (...args) =>
      this.renewFails ? Promise.reject(new Error('injected: renewing leases failed')) : real.renewLeases(...args);
    // everything else goes to the real store, whatever the interface grows
    this.store = new Proxy(real, {
      get(target, prop, receiver) {
        if (prop === 'exchange') return exchange;
        if (prop === 'reconcile') return reconcile;
        if (prop === 'renewLeases') return renewLeases;
        return Reflect.get(target, prop, receiver) as unknown;
      },
    });
  }

  /** fails the first exchange call that matches, with `fault` */
  failFirst(fault: Exclude<Fault, null>, match: (call: ExchangeCall) => boolean): void {
    let done = false;
    this.exchangeFault = (call) => {
      if (done || !match(call)) return null;
      done = true;
      return fault;
    };
  }

  faulty(): ExchangeCall[] {
    return this.exchanges.filter((c) => c.fault !== null);
  }

  /** how many committed round trips carried an outcome for this post */
  timesRecorded(postId: number): number {
    return this.exchanges.filter((c) => c.committed && c.outcomes.some((o) => o.postId === postId)).length;
  }
}

// ---------------------------------------------------------------------------------
// Helpers

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(5);
  }
}

async function within<T>(promise: Promise<T>, what: string, timeoutMs = 5_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** One statement per dialect, through a connection of its own (bypassing the store). */
async function rawSql(db: TestDatabase, sqlite: string, pg: readonly string[]): Promise<void> {
  const target = parseDatabaseUrl(db.url);
  if (target.dialect === 'sqlite') {
    const conn = new Database(target.path);
    try {
      conn.exec(sqlite);
    } finally {
      conn.close();
    }
    return;
  }
  if (target.dialect === 'mysql') throw new Error('this test runs on SQLite and PostgreSQL');
  const sql = postgres(target.url, { max: 1, onnotice: () => undefined, connection: { search_path: target.schema } });
  try {
    for (const statement of pg) await sql.unsafe(statement);
  } finally {
    await sql.end({ timeout: 1 });
  }
}

const counts = (r: WorkerReport) => ({
  claimed: r.claimed,
  published: r.published,
  retried: r.retried,
  failed: r.failed,
  unknown: r.unknown,
  released: r.released,
  fencedOut: r.fencedOut,
});
const none = { claimed: 0, published: 0, retried: 0, failed: 0, unknown: 0, released: 0, fencedOut: 0 };

/** the columns a user reads in `status` */
const state = (p: Post) => ({ status: p.status, attempts: p.attempts, unconfirmed: p.unconfirmed, externalId: p.externalId });

/** A small, fast configuration; LEASE_MS small enough that the heartbeat runs during a test. */
const BASE_ENV: ConfigInput = {
  BATCH_SIZE: '5',
  WORKER_CONCURRENCY: '5',
  WORKER_TIMEOUT_MS: '8000',
  TIMEOUT_MS: '9000',
  PUBLISH_TIMEOUT_MS: '2000',
  LEASE_MS: '600',
  MAX_ATTEMPTS: '3',
  RETRY_BASE_MS: '0',
  RETRY_MAX_MS: '0',
  KILL_GRACE_MS: '0',
};

interface RunOptions {
  readonly env?: ConfigInput;
  readonly stop?: AbortSignal;
  readonly stopGraceMs?: number;
  readonly holdsSlot?: boolean;
  readonly claimAhead?: boolean;
  readonly early?: { readonly aheadMs: number; readonly clockOffsetMs: number };
}

for (const dialect of DIALECTS) {
  describe(`worker loop (runWorker) on ${dialect}`, () => {
    const cleanups: (() => Promise<void>)[] = [];
    afterEach(async () => {
      for (const c of cleanups.splice(0).reverse()) await c();
    });
    after(async () => {
      for (const c of cleanups.splice(0).reverse()) await c();
    });

    async function setup() {
      const db = await createTestDatabase(dialect);
      cleanups.push(() => db.drop());
      const real = await openStore(parseDatabaseUrl(db.url));
      cleanups.push(() => real.close());
      await real.migrate();
      const faulty = new FaultyStore(real);
      const fake = new FakePlatform();
      const logs: string[] = [];
      const log = createLogger(`WORKER ${WORKER_ID}`, 'text', (line) => logs.push(line));

      const channel = (name: string, onUnknown: OnUnknown, platform = FAKE): Promise<Channel> =>
        real.addChannel({ name, platform, settings: {}, onUnknown });
      /** posts due a second ago, oldest first in the order given */
      const schedule = (on: Channel, ...texts: string[]): Promise<number[]> =>
        real.schedulePosts(texts.map((text, i) => ({ channelId: on.id, text, runAt: new Date(Date.now() - 10_000 + i) })));
      const post = async (id: number | undefined): Promise<Post> => {
        const p = await real.getPost(id ?? -1);
        assert.ok(p !== null, `post ${id ?? '?'} exists`);
        return p;
      };
      const run = (o: RunOptions = {}): Promise<WorkerReport> =>
        within(
          runWorker({
            workerId: WORKER_ID,
            config: loadConfig({ DATABASE_URL: db.url, ...BASE_ENV, ...o.env }),
            store: faulty.store,
            log,
            loadPublisherModule: fake.load,
            ...(o.stop === undefined ? {} : { stop: o.stop }),
            ...(o.stopGraceMs === undefined ? {} : { stopGraceMs: o.stopGraceMs }),
            ...(o.holdsSlot === undefined ? {} : { holdsSlot: o.holdsSlot }),
            ...(o.claimAhead === undefined ? {} : { claimAhead: o.claimAhead }),
            ...(o.early === undefined ? {} : { early: o.early }),
          }),
          'runWorker to return',
          20_000,
        );
      const logged = (pattern: RegExp) => logs.some((l) => pattern.test(l));
      return { db, real, faulty, fake, logs, logged, channel, schedule, post, run };
    }

    // -------------------------------------------------------------------------------
    // The loop

    it('claims in batches until nothing is due, never more than WORKER_CONCURRENCY in flight, each post once', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      const texts = Array.from({ length: 12 }, (_, i) => `p${i}`);
      const ids = await f.schedule(main, ...texts);
      // publishes that take a while and settle out of order, so that slots free one at a time
      const slow: Behaviour = async (r) => {
        await delay(1 + (r.postId % 4) * 5);
        return ok()(r);
      };
      for (const text of texts) f.fake.on(text, slow);
      const report = await f.run({ env: { BATCH_SIZE: '3', WORKER_CONCURRENCY: '3' } });

      assert.deepEqual(counts(report), { ...none, claimed: 12, published: 12 });
      assert.equal(report.error, null);
      assert.equal(report.timedOut, false);
      for (const id of ids) assert.equal((await f.post(id)).status, 'published');
      assert.deepEqual(f.fake.publishes.map((r) => r.text).sort(), [...texts].sort(), 'each post sent once');
      assert.ok(f.fake.maxInFlight <= 3, `at most 3 in flight, saw ${f.fake.maxInFlight}`);
      assert.ok(f.fake.maxInFlight >= 2, `publishes overlap, saw ${f.fake.maxInFlight}`);
      assert.ok(f.faulty.exchanges.every((c) => c.limit <= 3), 'never claims more than BATCH_SIZE');
      assert.equal(await f.real.countDue(), 0);
      assert.equal(f.fake.created.length, 1, 'one publisher per platform');
      assert.deepEqual(f.fake.created[0], { timeoutMs: 2000, concurrency: 3, allowPrivateNetwork: false, moduleDir: null });
      assert.equal(f.fake.closed, 1, 'publishers are closed when the worker ends');
      assert.ok(f.logged(/Published 12 posts successfully/), f.logs.join('\n'));
    });

    it('claims early when told, and sends each post claimed so at its run_at, not before', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      const runAt = Date.now() + 600;
      const [soon, later] = await f.real.schedulePosts([
        { channelId: main.id, text: 'soon', runAt: new Date(runAt) },
        { channelId: main.id, text: 'later', runAt: new Date(Date.now() + 60_000) },
      ]);
      let sentAt = 0;
      f.fake.on('soon', (r) => {
        sentAt = Date.now();
        return ok()(r);
      });
      const running = f.run({ early: { aheadMs: 5_000, clockOffsetMs: 0 } });
      await waitFor('the post claimed before its run_at', async () => (await f.post(soon)).status === 'processing');
      assert.ok(Date.now() < runAt, 'claimed ahead of its run_at');
      const report = await running;
      assert.deepEqual(counts(report), { ...none, claimed: 1, published: 1 });
      // the database's clock is this host's here; its timestamps are whole milliseconds
      assert.ok(sentAt >= runAt - 1, `sent ${runAt - sentAt} ms before its run_at`);
      assert.equal((await f.post(later)).status, 'pending', 'a post due later than the margin is left');
    });

    it('hands back a post claimed early when a stop comes before its run_at, unsent and without an attempt', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      const [held] = await f.real.schedulePosts([{ channelId: main.id, text: 'held', runAt: new Date(Date.now() + 1_500) }]);
      const stop = new AbortController();
      const running = f.run({ early: { aheadMs: 5_000, clockOffsetMs: 0 }, stop: stop.signal });
      await waitFor('the post claimed ahead', async () => (await f.post(held)).status === 'processing');
      stop.abort();
      const report = await running;
      assert.deepEqual(counts(report), { ...none, claimed: 1, released: 1 });
      assert.deepEqual(f.fake.publishes, [], 'nothing sent');
      const after = await f.post(held);
      assert.equal(after.status, 'pending');
      assert.equal(after.attempts, 0);
    });

    it('refills a freed slot at once, while the other publishes are still held', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      const texts = Array.from({ length: 9 }, (_, i) => `r${i}`);
      await f.schedule(main, ...texts);
      // every publish is held until the test opens it, one at a time
      const gates = new Map<string, ReturnType<typeof gate>>();
      for (const text of texts) {
        const g = gate();
        gates.set(text, g);
        f.fake.on(text, g.behaviour);
      }
      const opened = new Set<string>();
      const held = (): string[] => f.fake.publishes.map((r) => r.text).filter((t) => !opened.has(t));
      const running = f.run({ env: { BATCH_SIZE: '5', WORKER_CONCURRENCY: '5' } });
      await waitFor('the first 5 publishes', () => f.fake.publishes.length === 5);
      // open the oldest held publish: its slot is refilled before any other one frees
      for (let sent = 5; sent < texts.length; sent++) {
        const oldest = held()[0] ?? '';
        opened.add(oldest);
        gates.get(oldest)?.open({ externalId: `ext-${oldest}`, externalUrl: null });
        await waitFor(`publish ${sent + 1} to start`, () => f.fake.publishes.length === sent + 1);
        assert.equal(f.fake.inFlight, 5, 'the freed slot was refilled while the 4 others are still held');
      }
      for (const g of gates.values()) g.open({ externalId: 'ext', externalUrl: null });
      const report = await running;
      assert.deepEqual(counts(report), { ...none, claimed: 9, published: 9 });
      // one round trip per freed slot: each carried the outcome and claimed the next post
      const refills = f.faulty.exchanges.filter((c) => c.outcomes.length === 1 && c.limit === 1);
      assert.ok(refills.length >= 4, `freed slots refilled one by one (${f.faulty.exchanges.map((c) => `${c.outcomes.length}/${c.limit}`).join(' ')})`);
    });

    it(`quick publishes: ${dialect === 'sqlite' ? 'no claim goes out for publishes in flight (the round trip runs on the worker\'s thread)' : 'the next batch is claimed while one is being published'}; each post once, never more than WORKER_CONCURRENCY in flight`, async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      const texts = Array.from({ length: 80 }, (_, i) => `q${i}`);
      const ids = await f.schedule(main, ...texts);
      // a claim's answer takes longer than a quick publish, even on a loaded machine
      f.faulty.beforeAnswer = () => delay(20);
      const report = await f.run({ env: { BATCH_SIZE: '5', WORKER_CONCURRENCY: '5' } });

      assert.deepEqual(counts(report), { ...none, claimed: 80, published: 80 });
      assert.deepEqual(f.fake.publishes.map((r) => r.text).sort(), [...texts].sort(), 'each post sent once');
      assert.ok(f.fake.maxInFlight <= 5, `at most 5 in flight, saw ${f.fake.maxInFlight}`);
      for (const id of ids) assert.equal((await f.post(id)).status, 'published');
      // posts claimed and not yet reported when each claim went out: more than the free
      // slots' worth means it claimed for publishes still in flight
      let outstanding = 0;
      const shapes: string[] = [];
      let ahead = 0;
      for (const c of f.faulty.exchanges) {
        outstanding -= c.outcomes.length;
        if (c.limit > 0 && outstanding + c.limit > 5) ahead++;
        shapes.push(`${outstanding}+${c.limit}`);
        outstanding += c.result?.claimed.length ?? 0;
      }
      if (dialect === 'sqlite') assert.equal(ahead, 0, `claims (held+limit): ${shapes.join(' ')}`);
      else assert.ok(ahead >= 3, `claims while a batch is in flight: ${ahead} (held+limit: ${shapes.join(' ')})`);
    });

    if (dialect !== 'sqlite') {
      it('quick publishes: a publish in flight for longer than a claim round trip stops the claims for publishes in flight', async () => {
        const f = await setup();
        const main = await f.channel('main', 'retry');
        const texts = Array.from({ length: 100 }, (_, i) => (i === 15 ? 'held' : `p${i}`));
        await f.schedule(main, ...texts);
        const held = gate();
        f.fake.on('held', held.behaviour);
        f.faulty.beforeAnswer = () => delay(20);
        const running = f.run({ env: { BATCH_SIZE: '5', WORKER_CONCURRENCY: '5' } });
        await held.entered;
        // it has run for several round trips: from now on it is not about to end
        await delay(100);
        const from = f.faulty.exchanges.length;
        await waitFor('every other post published', () => f.fake.publishes.length === 100 && f.fake.inFlight === 1);
        held.open({ externalId: 'x-held', externalUrl: null });
        const report = await running;
        assert.deepEqual(counts(report), { ...none, claimed: 100, published: 100 });
        // posts claimed and not yet reported when each claim went out (see above)
        let outstanding = 0;
        const after: string[] = [];
        for (const [i, c] of f.faulty.exchanges.entries()) {
          outstanding -= c.outcomes.length;
          if (i >= from && c.limit > 0) after.push(`${outstanding}+${c.limit}`);
          outstanding += c.result?.claimed.length ?? 0;
        }
        assert.ok(after.length > 0, 'claims while it was held');
        assert.deepEqual(after.filter((x) => x.split('+').reduce((a, b) => a + Number(b), 0) > 5), [], `claims for free slots only (held+limit): ${after.join(' ')}`);
      });

      it('quick publishes: posts claimed for publishes in flight are not started once the database fails, but handed back unstarted', async () => {
        const f = await setup();
        const main = await f.channel('main', 'retry');
        // three batches: the last 8 durations are of warm publishes (a first one loads the publisher)
        const quick = Array.from({ length: 15 }, (_, i) => `p${i}`);
        const slow = Array.from({ length: 10 }, (_, i) => `s${i}`);
        const ids = await f.schedule(main, ...quick, ...slow);
        const idOf = new Map([...quick, ...slow].map((t, i) => [t, ids[i] ?? -1]));
        const gates = new Map(slow.map((t) => [t, gate()]));
        for (const [t, g] of gates) f.fake.on(t, g.behaviour);
        // a claim's answer takes longer than a quick publish: the next batch is claimed while one is in flight
        f.faulty.beforeAnswer = () => delay(100);
        const running = f.run({ env: { BATCH_SIZE: '5', WORKER_CONCURRENCY: '5', WORKER_TIMEOUT_MS: '15000', TIMEOUT_MS: '16000' } });
        const claimedSoFar = () => new Set(f.faulty.exchanges.flatMap((c) => c.result?.claimed.map((p) => p.id) ?? []));
        await waitFor('s0-s4 publishing and s5-s9 claimed for them', () => f.fake.publishes.length === 20 && slow.every((t) => claimedSoFar().has(idOf.get(t) ?? -1)));
        assert.deepEqual(f.fake.publishes.slice(15).map((r) => r.text), ['s0', 's1', 's2', 's3', 's4']);
        // the database goes down; s0 ends, s5 takes its slot, and the outcome's round trip fails
        f.faulty.exchangeFault = () => 'before-commit';
        gates.get('s0')?.open({ externalId: 'x-s0', externalUrl: null });
        await waitFor('a round trip to fail', () => f.faulty.faulty().length > 0);
        for (const t of ['s1', 's2', 's3', 's4', 's5']) gates.get(t)?.open({ externalId: `x-${t}`, externalUrl: null });
        await waitFor('the publishes in flight to end, or one more to start', () => f.fake.inFlight === 0 || f.fake.publishes.length > 21);
        const started = f.fake.publishes.slice(15).map((r) => r.text);
        // (a post started by mistake must not hang the worker past the test)
        for (const g of gates.values()) g.open({ externalId: 'x', externalUrl: null });
        assert.deepEqual(started, ['s0', 's1', 's2', 's3', 's4', 's5'], 'nothing started after the database failed');
        // the database answers again: the outcomes are written, the waiting posts handed back
        f.faulty.exchangeFault = () => null;
        const report = await running;
        assert.equal(report.published, 21);
        assert.equal(report.released, 4);
        for (const t of ['s6', 's7', 's8', 's9']) {
          assert.deepEqual(state(await f.post(idOf.get(t))), { status: 'pending', attempts: 0, unconfirmed: false, externalId: null }, `${t} handed back unstarted`);
        }
        for (const t of [...quick, 's0', 's5']) assert.equal((await f.post(idOf.get(t))).status, 'published', t);
      });
    }

    it('claims at most its share until the share is lifted, then the rest', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      const texts = Array.from({ length: 8 }, (_, i) => `s${i}`);
      await f.schedule(main, ...texts);
      let lift: () => void = () => undefined;
      const lifted = new Promise<void>((resolve) => (lift = resolve));
      const firstClaims: number[] = [];
      const running = within(
        runWorker({
          workerId: WORKER_ID,
          config: loadConfig({ DATABASE_URL: f.db.url, ...BASE_ENV }),
          store: f.faulty.store,
          log: createLogger(`WORKER ${WORKER_ID}`, 'text', (line) => f.logs.push(line)),
          loadPublisherModule: f.fake.load,
          share: { posts: 3, lifted, holdMs: 60_000 },
          onFirstClaim: (n) => firstClaims.push(n),
        }),
        'runWorker to return',
        20_000,
      );
      await waitFor('its share to be published', async () => (await f.real.status(1)).counts.published === 3);
      // its share done, the worker waits (it neither ends nor claims more) until the shares are lifted
      await delay(100);
      assert.equal(f.fake.publishes.length, 3, 'no more than its share before the lift');
      assert.equal(await f.real.countDue(), 5, 'the rest left for its siblings');
      lift();
      const report = await running;
      assert.deepEqual(counts(report), { ...none, claimed: 8, published: 8 });
      assert.deepEqual(firstClaims, [3]);
    });

    it('claims the rest by itself when its shares are not lifted within its hold (a sibling slow to start)', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      await f.schedule(main, ...Array.from({ length: 8 }, (_, i) => `h${i}`));
      const report = await within(
        runWorker({
          workerId: WORKER_ID,
          config: loadConfig({ DATABASE_URL: f.db.url, ...BASE_ENV }),
          store: f.faulty.store,
          log: createLogger(`WORKER ${WORKER_ID}`, 'text', (line) => f.logs.push(line)),
          loadPublisherModule: f.fake.load,
          share: { posts: 3, lifted: new Promise<void>(() => undefined), holdMs: 50 },
        }),
        'runWorker to return',
        20_000,
      );
      assert.deepEqual(counts(report), { ...none, claimed: 8, published: 8 });
      assert.equal(f.faulty.exchanges[0]?.limit, 3, 'its first claim was its share');
    });

    it('tells its siblings it claims no more when its first claim fails, so they do not hold to their shares for it', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      await f.schedule(main, 'f0', 'f1');
      // every round trip fails: the database is gone for this worker
      f.faulty.exchangeFault = () => 'before-commit';
      f.faulty.reconcileFault = () => 'before-commit';
      const firstClaims: number[] = [];
      const report = await within(
        runWorker({
          workerId: WORKER_ID,
          config: loadConfig({ DATABASE_URL: f.db.url, ...BASE_ENV, WORKER_TIMEOUT_MS: '1500', PUBLISH_TIMEOUT_MS: '500' }),
          store: f.faulty.store,
          log: createLogger(`WORKER ${WORKER_ID}`, 'text', (line) => f.logs.push(line)),
          loadPublisherModule: f.fake.load,
          share: { posts: 1, lifted: new Promise<void>(() => undefined), holdMs: 60_000 },
          onFirstClaim: (n) => firstClaims.push(n),
        }),
        'runWorker to return',
        20_000,
      );
      assert.ok(report.error !== null, 'the database error is reported');
      assert.deepEqual(firstClaims, [0], 'a first claim of nothing, at once, so the dispatcher can lift the shares');
      assert.equal(f.fake.publishes.length, 0);
    });

    // -------------------------------------------------------------------------------
    // The outcome rules, one row each

    it('1. success: published with the external id, on the first attempt', async () => {
      const f = await setup();
      const main = await f.channel('main', 'hold');
      const [id] = await f.schedule(main, 'hello');
      f.fake.on('hello', ok('ext-hello'));
      const before = await f.post(id);
      const report = await f.run();

      assert.deepEqual(counts(report), { ...none, claimed: 1, published: 1 });
      const p = await f.post(id);
      assert.deepEqual(state(p), { status: 'published', attempts: 1, unconfirmed: false, externalId: 'ext-hello' });
      assert.equal(p.externalUrl, `https://fake.test/${id ?? 0}`);
      assert.equal(p.lastError, null);
      assert.ok(p.publishedAt instanceof Date);
      const [sent] = f.fake.publishes;
      assert.deepEqual(
        [sent?.postId, sent?.attempt, sent?.text, sent?.idempotencyKey, sent?.runAt.getTime(), sent?.channel.name],
        [id, 1, 'hello', before.idempotencyKey, before.scheduledAt.getTime(), 'main'],
      );
      assert.ok(f.logged(/Processing 1 posts/), f.logs.join('\n'));
    });

    it('2. a permanent error: failed with its reason, not sent again', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      const [id] = await f.schedule(main, 'bad');
      f.fake.on('bad', permanent('HTTP 400: text too long'));
      const report = await f.run();

      assert.deepEqual(counts(report), { ...none, claimed: 1, failed: 1 });
      const p = await f.post(id);
      assert.deepEqual(state(p), { status: 'failed', attempts: 1, unconfirmed: false, externalId: null });
      assert.equal(p.lastError, 'HTTP 400: text too long');
      assert.ok(f.logged(new RegExp(`Post ${id ?? 0} failed: HTTP 400`)), f.logs.join('\n'));
      assert.equal((await f.run()).claimed, 0, 'nothing due any more');
      assert.equal(f.fake.publishes.length, 1);
    });

    it('3. a retryable failure, surely not delivered: pending later by the backoff or Retry-After, confirmed; failed once MAX_ATTEMPTS is reached', async () => {
      const f = await setup();
      const main = await f.channel('main', 'hold');
      const [backoff, later, last] = await f.schedule(main, 'backoff', 'retry-after', 'last');
      f.fake.on('backoff', retryable('HTTP 503'));
      f.fake.on('retry-after', retryable('HTTP 429', 60_000));
      f.fake.on('last', retryable('HTTP 502'));
      const t0 = Date.now();
      // the backoff of attempt 1 is drawn from [RETRY_BASE_MS / 2, RETRY_BASE_MS]
      const report = await f.run({ env: { RETRY_BASE_MS: '10000', RETRY_MAX_MS: '20000', MAX_ATTEMPTS: '2' } });
      const t1 = Date.now();

      assert.deepEqual(counts(report), { ...none, claimed: 3, retried: 3 });
      const b = await f.post(backoff);
      assert.deepEqual(state(b), { status: 'pending', attempts: 1, unconfirmed: false, externalId: null });
      assert.equal(b.lastError, 'HTTP 503');
      assert.equal(b.workerId, null);
      const slack = dialect === 'postgres' ? 1_000 : 0; // PostgreSQL dates run_at by its own clock
      assert.ok(b.runAt.getTime() >= t0 + 5_000 - slack && b.runAt.getTime() <= t1 + 10_000 + slack, `backoff: run_at ${b.runAt.toISOString()}`);
      const r = await f.post(later);
      assert.deepEqual(state(r), { status: 'pending', attempts: 1, unconfirmed: false, externalId: null });
      assert.ok(r.runAt.getTime() >= t0 + 60_000 - slack && r.runAt.getTime() <= t1 + 60_000 + slack, `Retry-After: run_at ${r.runAt.toISOString()}`);
      assert.equal(await f.real.countDue(), 0, 'none is due again at once');

      // the last allowed attempt: the post fails with the count and the last reason
      await rawSql(f.db, `UPDATE post_schedule SET run_at = 0 WHERE id = ${last ?? 0}`, [
        `UPDATE post_schedule SET run_at = now() - interval '1 second' WHERE id = ${last ?? 0}`,
      ]);
      const second = await f.run({ env: { MAX_ATTEMPTS: '2' } });
      assert.deepEqual(counts(second), { ...none, claimed: 1, failed: 1 });
      const l = await f.post(last);
      assert.deepEqual(state(l), { status: 'failed', attempts: 2, unconfirmed: false, externalId: null });
      assert.equal(l.lastError, 'gave up after 2 attempts: HTTP 502');
    });

    it('4. maybe delivered on a `retry` channel: pending and unconfirmed, then sent again with the same idempotency key', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      const [timeout, crash] = await f.schedule(main, 'timeout', 'crash');
      f.fake.on('timeout', retryable('timeout after sending', null, true), ok('ext-timeout'));
      // a publisher's unexpected error may come after it sent: maybe delivered too
      f.fake.on('crash', unexpected('socket hang up'), ok('ext-crash'));
      const first = await f.run();

      assert.deepEqual(counts(first), { ...none, claimed: 2, retried: 2 });
      for (const id of [timeout, crash]) {
        const p = await f.post(id);
        assert.deepEqual(state(p), { status: 'pending', attempts: 1, unconfirmed: true, externalId: null });
      }
      assert.equal((await f.post(crash)).lastError, 'fake publisher error: socket hang up');
      assert.equal(await f.real.countDue(), 2, 'RETRY_BASE_MS 0: due again at once');

      const second = await f.run();
      assert.deepEqual(counts(second), { ...none, claimed: 2, published: 2 });
      for (const [id, text] of [
        [timeout, 'timeout'],
        [crash, 'crash'],
      ] as const) {
        const p = await f.post(id);
        assert.deepEqual(state(p), { status: 'published', attempts: 2, unconfirmed: false, externalId: `ext-${text}` });
        const sent = f.fake.published(text);
        assert.deepEqual(
          sent.map((r) => [r.attempt, r.idempotencyKey]),
          [
            [1, p.idempotencyKey],
            [2, p.idempotencyKey],
          ],
        );
      }
      assert.equal(f.fake.lookups.length, 0, 'a retry channel does not look up');
    });

    it('5. maybe delivered on a `hold` channel: held as unknown for an operator, never sent again by itself', async () => {
      const f = await setup();
      const held = await f.channel('held', 'hold');
      const [timeout, crash] = await f.schedule(held, 'timeout', 'crash');
      f.fake.on('timeout', retryable('timeout after sending', null, true));
      f.fake.on('crash', unexpected('connection reset'));
      const report = await f.run();

      assert.deepEqual(counts(report), { ...none, claimed: 2, unknown: 2 });
      for (const id of [timeout, crash]) {
        const p = await f.post(id);
        assert.deepEqual(state(p), { status: 'unknown', attempts: 1, unconfirmed: true, externalId: null });
        assert.match(p.lastError ?? '', /^outcome unknown: /);
      }
      assert.ok(f.logged(new RegExp(`Post ${timeout ?? 0} outcome unknown, held for an operator: timeout after sending`)), f.logs.join('\n'));
      assert.ok(f.logged(/2 outcome unknown/), f.logs.join('\n'));
      assert.equal((await f.run()).claimed, 0);
      assert.equal(f.fake.publishes.length, 2);
    });

    it('6. an unconfirmed post on a `check` channel is looked up first: found, published without sending; not found, sent', async () => {
      const f = await setup();
      const check = await f.channel('check', 'check');
      const [found, missing, refused] = await f.schedule(check, 'found', 'missing', 'refused');
      for (const text of ['found', 'missing', 'refused']) f.fake.on(text, retryable('timeout after sending', null, true), ok(`ext2-${text}`));
      f.fake.on('refused', retryable('timeout after sending', null, true), permanent('HTTP 422'));
      f.fake.lookupFinds('found', { externalId: 'ext-found-by-lookup', externalUrl: null });
      const first = await f.run();
      assert.deepEqual(counts(first), { ...none, claimed: 3, retried: 3 });
      for (const id of [found, missing, refused]) assert.equal((await f.post(id)).unconfirmed, true);
      assert.equal(f.fake.lookups.length, 0, 'a post not yet unconfirmed is not looked up');

      const second = await f.run();
      assert.deepEqual(counts(second), { ...none, claimed: 3, published: 2, failed: 1 });
      assert.deepEqual(f.fake.lookups.map((r) => r.text).sort(), ['found', 'missing', 'refused']);
      assert.deepEqual(state(await f.post(found)), { status: 'published', attempts: 2, unconfirmed: false, externalId: 'ext-found-by-lookup' });
      assert.equal(f.fake.published('found').length, 1, 'found by lookup: not sent again');
      assert.deepEqual(state(await f.post(missing)), { status: 'published', attempts: 2, unconfirmed: false, externalId: 'ext2-missing' });
      assert.equal(f.fake.published('missing').length, 2, 'not found: sent again');
      // the lookup said it never arrived, so a refusal now is a plain failure
      const r = await f.post(refused);
      assert.deepEqual([r.status, r.lastError], ['failed', 'HTTP 422']);
      assert.ok(f.logged(new RegExp(`Post ${found ?? 0} was already published \\(found by lookup on check\\)`)), f.logs.join('\n'));
    });

    it('6b. an unconfirmed post on a `check` channel whose platform cannot look up is held as unknown, not sent', async () => {
      const f = await setup();
      const check = await f.channel('check', 'check');
      const [id] = await f.schedule(check, 'p');
      f.fake.canLookUp = false;
      f.fake.on('p', retryable('timeout after sending', null, true));
      assert.equal((await f.run()).retried, 1);
      const report = await f.run();
      assert.deepEqual(counts(report), { ...none, claimed: 1, unknown: 1 });
      assert.deepEqual(state(await f.post(id)), { status: 'unknown', attempts: 2, unconfirmed: true, externalId: null });
      assert.equal(f.fake.publishes.length, 1);
    });

    it('7. a post that may be out is never recorded failed on `hold` and `check` channels (attempts run out, channel disabled); on `retry` it may be', async () => {
      const f = await setup();
      const check = await f.channel('check', 'check');
      const retry = await f.channel('retry', 'retry');
      const [lastCheck] = await f.schedule(check, 'last-check');
      const [lastRetry] = await f.schedule(retry, 'last-retry');
      // MAX_ATTEMPTS 1: the first attempt is the last
      f.fake.on('last-check', retryable('timeout after sending', null, true));
      f.fake.on('last-retry', retryable('timeout after sending', null, true));
      const report = await f.run({ env: { MAX_ATTEMPTS: '1' } });
      assert.deepEqual(counts(report), { ...none, claimed: 2, failed: 1, unknown: 1 });
      const c = await f.post(lastCheck);
      assert.deepEqual(state(c), { status: 'unknown', attempts: 1, unconfirmed: true, externalId: null });
      assert.match(c.lastError ?? '', /may have been delivered.*gave up after 1 attempts/);
      const r = await f.post(lastRetry);
      assert.deepEqual([r.status, r.lastError], ['failed', 'gave up after 1 attempts: timeout after sending']);

      // unconfirmed posts on check and hold channels, then their channel is disabled:
      // "cannot be sent as it is" would fail them, but they may be out
      const hold = await f.channel('hold', 'retry');
      const [onCheck] = await f.schedule(check, 'on-check');
      const [onHold] = await f.schedule(hold, 'on-hold');
      f.fake.on('on-check', retryable('timeout after sending', null, true));
      f.fake.on('on-hold', retryable('timeout after sending', null, true));
      assert.equal((await f.run()).retried, 2);
      await f.real.updateChannel('hold', { onUnknown: 'hold' });
      await f.real.updateChannel('hold', { enabled: false });
      await f.real.updateChannel('check', { enabled: false });
      const second = await f.run();
      assert.deepEqual(counts(second), { ...none, claimed: 2, unknown: 2 });
      for (const id of [onCheck, onHold]) {
        const p = await f.post(id);
        assert.deepEqual(state(p), { status: 'unknown', attempts: 2, unconfirmed: true, externalId: null });
        assert.match(p.lastError ?? '', /may have been delivered, and now: channel \w+ is disabled/);
      }
      assert.equal(f.fake.publishes.length, 4, 'nothing sent on the second run');
    });

    it('8. no channel, a disabled channel, an unknown platform: each fails alone while the other posts publish', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      const gone = await f.channel('gone', 'retry');
      const off = await f.channel('off', 'retry');
      const odd = await f.channel('odd', 'retry', 'nope');
      const [a] = await f.schedule(main, 'a');
      const [g] = await f.schedule(gone, 'g');
      const [o] = await f.schedule(off, 'o');
      const [n] = await f.schedule(odd, 'n');
      const [b] = await f.schedule(main, 'b');
      await f.real.updateChannel('off', { enabled: false });
      await rawSql(f.db, `PRAGMA foreign_keys = OFF; DELETE FROM channels WHERE id = ${gone.id}`, [
        'SET session_replication_role = replica',
        `DELETE FROM channels WHERE id = ${gone.id}`,
      ]);
      const report = await f.run();

      assert.deepEqual(counts(report), { ...none, claimed: 5, published: 2, failed: 3 });
      for (const id of [a, b]) assert.equal((await f.post(id)).status, 'published');
      const reasons: [number | undefined, string][] = [
        [g, 'its channel no longer exists'],
        [o, 'channel off is disabled'],
        [n, 'unknown platform "nope" on channel odd'],
      ];
      for (const [id, reason] of reasons) {
        const p = await f.post(id);
        assert.deepEqual([p.status, p.attempts, p.lastError], ['failed', 1, reason]);
        assert.ok(f.logged(new RegExp(`Post ${id ?? 0} failed: ${reason}`)), f.logs.join('\n'));
      }
      assert.deepEqual(f.fake.publishes.map((r) => r.text).sort(), ['a', 'b']);
    });

    it('claiming ahead (a resident): publishes about to end are claimed for, the post is there when a slot frees; a stop hands it back unstarted', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      const ids = await f.schedule(main, 'a', 'b', 'c', 'd', 'e', 'f');
      // the first two take 300 ms: publishes of that length are claimed for ahead of their end
      const slow: Behaviour = async (r) => {
        await delay(300);
        return ok()(r);
      };
      f.fake.on('a', slow).on('b', slow);
      const gates = new Map(['c', 'd'].map((t) => [t, gate()]));
      for (const [t, g] of gates) f.fake.on(t, g.behaviour);
      const stop = new AbortController();
      const running = f.run({ env: { BATCH_SIZE: '2', WORKER_CONCURRENCY: '2', KILL_GRACE_MS: '5000' }, claimAhead: true, stop: stop.signal, stopGraceMs: 5_000 });
      // c and d run (held), and e and f were claimed for them ahead of their end: processing, not sent
      const [, , , , e = 0, g = 0] = ids;
      await waitFor('e and f claimed ahead', async () => (await f.post(e)).status === 'processing' && (await f.post(g)).status === 'processing', 10_000);
      assert.deepEqual(f.fake.publishes.map((r) => r.text), ['a', 'b', 'c', 'd'], 'at most WORKER_CONCURRENCY sent: e and f wait');
      // the stop hands back what was claimed ahead; what runs finishes
      stop.abort('SIGTERM');
      for (const gt of gates.values()) gt.open({ externalId: 'ext', externalUrl: null });
      const report = await running;

      assert.deepEqual(counts(report), { ...none, claimed: 6, published: 4, released: 2 });
      for (const id of [e, g]) {
        assert.deepEqual(state(await f.post(id)), { status: 'pending', attempts: 0, unconfirmed: false, externalId: null });
        assert.deepEqual(await f.real.postAttempts(id), [], 'no attempt: it never started');
      }
      assert.deepEqual(f.fake.publishes.map((r) => r.text), ['a', 'b', 'c', 'd']);
      assert.ok(f.fake.maxInFlight <= 2, `at most 2 in flight, saw ${f.fake.maxInFlight}`);
    });

    it('claiming ahead: a post claimed ahead starts when the slot frees, and its attempt starts then, not at its claim', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      const [a = 0, b = 0, c = 0] = await f.schedule(main, 'a', 'b', 'c');
      const calledAt = new Map<number, number>();
      const taking =
        (ms: number): Behaviour =>
        async (r) => {
          calledAt.set(r.postId, Date.now());
          await delay(ms);
          return ok()(r);
        };
      // one slot. a takes 300 ms: b is claimed shortly before a ends. b takes 1,000 ms: c is
      // claimed ~300 ms into it and waits ~700 ms for the slot.
      f.fake.on('a', taking(300)).on('b', taking(1_000)).on('c', taking(10));
      const report = await f.run({ env: { BATCH_SIZE: '1', WORKER_CONCURRENCY: '1' }, claimAhead: true });

      assert.deepEqual(counts(report), { ...none, claimed: 3, published: 3 });
      const exchangeOf = (found: (x: ExchangeCall) => boolean) => f.faulty.exchanges.findIndex(found);
      const claimOfC = exchangeOf((x) => x.result?.claimed.some((p) => p.id === c) === true);
      const outcomeOfB = exchangeOf((x) => x.outcomes.some((o) => o.postId === b));
      assert.ok(claimOfC >= 0 && claimOfC < outcomeOfB, `c claimed (exchange ${claimOfC}) before b ended (exchange ${outcomeOfB})`);
      assert.equal(f.fake.maxInFlight, 1);
      for (const id of [a, b, c]) {
        const [attempt] = await f.real.postAttempts(id);
        const fromCall = (attempt?.startedAt?.getTime() ?? Number.NaN) - (calledAt.get(id) ?? Number.NaN);
        // the attempt starts when its publish was called (one clock here), not ~700 ms earlier at its claim
        assert.ok(Math.abs(fromCall) < 150, `attempt of post ${id} started ${fromCall} ms from its publish`);
      }
    });

    it('claiming ahead: a post whose lease was not renewed while it waited is not sent, but handed back', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      const [, , c = 0] = await f.schedule(main, 'a', 'b', 'c');
      const taking =
        (ms: number): Behaviour =>
        async (r) => {
          await delay(ms);
          return ok()(r);
        };
      // LEASE_MS 600: a lease not renewed for 400 ms may be lost. c waits ~1,200 ms for b's
      // slot while every renewal fails.
      f.fake.on('a', taking(300)).on('b', taking(1_500)).on('c', taking(10));
      f.faulty.renewFails = true;
      const report = await f.run({ env: { BATCH_SIZE: '1', WORKER_CONCURRENCY: '1' }, claimAhead: true });

      assert.ok(f.logged(/Post \d+: its lease was not renewed while it waited for a slot: not sent, handed back/), f.logs.join('\n'));
      assert.deepEqual(counts(report), { ...none, claimed: 3, published: 2, released: 1 });
      assert.deepEqual(f.fake.publishes.map((r) => r.text), ['a', 'b'], 'c not sent');
      // due again, for the next batch (nothing else was due when the worker had claimed c)
      assert.deepEqual(state(await f.post(c)), { status: 'pending', attempts: 0, unconfirmed: false, externalId: null });
    });

    // -------------------------------------------------------------------------------
    // Stopping

    it('9. a stop before the posts start: they are handed back, due at once, no attempt counted, nothing sent', async () => {
      const f = await setup();
      const main = await f.channel('main', 'hold');
      const ids = await f.schedule(main, 'a', 'b', 'c');
      const stop = new AbortController();
      // the stop comes while the claimed posts wait for their publisher
      f.fake.beforeLoad = async () => {
        stop.abort('SIGTERM');
        await delay(20); // past the stop's grace (0 ms): in-flight publishes are aborted
      };
      const report = await f.run({ stop: stop.signal, stopGraceMs: 0 });

      assert.deepEqual(counts(report), { ...none, claimed: 3, released: 3 });
      assert.equal(report.error, null);
      for (const id of ids) {
        const p = await f.post(id);
        assert.deepEqual(state(p), { status: 'pending', attempts: 0, unconfirmed: false, externalId: null });
        assert.equal(p.workerId, null);
        assert.ok(p.runAt.getTime() <= Date.now(), 'due');
      }
      assert.equal(await f.real.countDue(), 3);
      assert.equal(f.fake.publishes.length, 0);
      assert.ok(f.logged(/3 handed back unstarted/), f.logs.join('\n'));
    });

    it('9b. a stop aborts a publish still hanging after its grace; the post that may be out is held by its policy', async () => {
      const f = await setup();
      const held = await f.channel('held', 'hold');
      const [id] = await f.schedule(held, 'slow');
      f.fake.on('slow', hang);
      const stop = new AbortController();
      const running = f.run({ stop: stop.signal, stopGraceMs: 50 });
      await waitFor('the publish to start', () => f.fake.publishes.length === 1);
      stop.abort('SIGTERM');
      const report = await running;

      assert.deepEqual(counts(report), { ...none, claimed: 1, unknown: 1 });
      assert.equal(report.timedOut, true);
      assert.deepEqual(state(await f.post(id)), { status: 'unknown', attempts: 1, unconfirmed: true, externalId: null });
      assert.ok(f.logged(/Stopped with publishes in flight: worker stopped/), f.logs.join('\n'));
    });

    it('9c. the time budget aborts a hanging publish; on a `retry` channel the post is retried unconfirmed', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      const [id] = await f.schedule(main, 'slow');
      f.fake.on('slow', hang);
      const report = await f.run({ env: { WORKER_TIMEOUT_MS: '500', PUBLISH_TIMEOUT_MS: '100' } });

      assert.deepEqual(counts(report), { ...none, claimed: 1, retried: 1 });
      assert.equal(report.timedOut, true);
      assert.equal(report.error, null);
      assert.deepEqual(state(await f.post(id)), { status: 'pending', attempts: 1, unconfirmed: true, externalId: null });
      assert.ok(f.logged(/Stopped with publishes in flight: worker time budget exhausted/), f.logs.join('\n'));
    });

    // -------------------------------------------------------------------------------
    // Lost round trips

    it('10. recording fails before its commit: no more claims, the outcomes are written on a later try, the posts end right', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      const [a, b, c, d] = await f.schedule(main, 'a', 'b', 'c', 'd');
      f.fake.on('b', permanent('HTTP 400'));
      f.fake.on('c', retryable('HTTP 429', 60_000));
      f.faulty.failFirst('before-commit', (call) => call.outcomes.length > 0);
      const report = await f.run({ env: { BATCH_SIZE: '3', WORKER_CONCURRENCY: '3' } });

      assert.equal(f.faulty.faulty().length, 1, 'the fault was injected');
      assert.match(report.error?.message ?? '', /^database error while (claiming posts|recording outcomes): injected: exchange \d+ failed before its commit/);
      assert.deepEqual(counts(report), { ...none, claimed: 3, published: 1, failed: 1, retried: 1 });
      assert.deepEqual([report.unseenClaims, report.recordedUnseen], [0, 0]);
      assert.equal((await f.post(a)).status, 'published');
      assert.deepEqual([(await f.post(b)).status, (await f.post(b)).lastError], ['failed', 'HTTP 400']);
      const pc = await f.post(c);
      assert.deepEqual([pc.status, pc.attempts, pc.lastError], ['pending', 1, 'HTTP 429']);
      assert.ok(pc.runAt.getTime() > Date.now() + 50_000);
      assert.deepEqual(state(await f.post(d)), { status: 'pending', attempts: 0, unconfirmed: false, externalId: null }, 'no claim after a database error');
      for (const id of [a, b, c]) assert.equal(f.faulty.timesRecorded(id ?? 0), 1);
      assert.ok(f.logged(/no more claims, outcomes kept and written again/), f.logs.join('\n'));
      assert.ok(f.logged(/Database answers again: \d+ outcomes recorded after 1 failed attempts/), f.logs.join('\n'));
    });

    it('11. a claim commits and its answer is lost: reconcile hands the unseen posts back at once, no attempt counted, nothing sent', async () => {
      const f = await setup();
      const main = await f.channel('main', 'hold');
      const ids = await f.schedule(main, 'a', 'b', 'c');
      f.faulty.failFirst('after-commit', (call) => call.limit > 0);
      const report = await f.run();

      const [lost] = f.faulty.faulty();
      assert.equal(lost?.result?.claimed.length, 3, 'the lost claim did take the three posts');
      assert.match(report.error?.message ?? '', /^database error while claiming posts: injected: exchange 1 committed/);
      assert.deepEqual(counts(report), { ...none, released: 3 });
      assert.equal(report.unseenClaims, 3);
      assert.equal(f.faulty.reconciles, 1);
      for (const id of ids) {
        const p = await f.post(id);
        assert.deepEqual(state(p), { status: 'pending', attempts: 0, unconfirmed: false, externalId: null });
        assert.equal(p.workerId, null);
      }
      assert.equal(await f.real.countDue(), 3, 'due again at once, not after a lease');
      assert.equal(f.fake.publishes.length, 0, 'nothing was sent for posts the worker never saw');
      assert.ok(f.logged(/Reconciled after a lost answer: 3 claims never seen handed back/), f.logs.join('\n'));
    });

    it('11b. the lost answer carried outcomes and a claim, and the first reconcile fails too: recorded once, unseen claims handed back', async () => {
      const f = await setup();
      const main = await f.channel('main', 'hold');
      const [a, b, c, d] = await f.schedule(main, 'a', 'b', 'c', 'd');
      f.faulty.failFirst('after-commit', (call) => call.limit > 0 && call.outcomes.length > 0);
      f.faulty.reconcileFault = (n) => (n === 1 ? 'before-commit' : null);
      const report = await f.run({ env: { BATCH_SIZE: '2', WORKER_CONCURRENCY: '2' } });

      const [lost] = f.faulty.faulty();
      assert.ok(lost !== undefined, 'the fault was injected');
      const recorded = lost.outcomes.map((o) => o.postId);
      const unseen = lost.result?.claimed.map((p) => p.id) ?? [];
      assert.ok(recorded.length > 0 && unseen.length > 0);
      assert.equal(f.faulty.reconciles, 2, 'reconcile is asked again after it failed');
      assert.equal(report.recordedUnseen, recorded.length);
      assert.equal(report.unseenClaims, unseen.length);
      assert.deepEqual(counts(report), { ...none, claimed: 2, published: 2, released: unseen.length });
      for (const id of [a, b]) {
        assert.equal((await f.post(id)).status, 'published');
        assert.equal(f.faulty.timesRecorded(id ?? 0), 1, `post ${id ?? 0} recorded once`);
      }
      for (const id of [c, d]) {
        const p = await f.post(id);
        assert.deepEqual(state(p), { status: 'pending', attempts: 0, unconfirmed: false, externalId: null });
      }
      assert.deepEqual(f.fake.publishes.map((r) => r.text).sort(), ['a', 'b']);
    });

    it('12. recording commits and its answer is lost: the outcomes are found recorded, not written twice, not counted as taken away', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      const held = await f.channel('held', 'hold');
      const [a, b, c] = await f.schedule(main, 'a', 'b', 'c');
      const [h] = await f.schedule(held, 'h');
      f.fake.on('b', permanent('HTTP 400'));
      f.fake.on('c', retryable('HTTP 429', 60_000));
      f.fake.on('h', retryable('timeout after sending', null, true));
      // BATCH_SIZE 5 > 4 due: the first claim drains, so the next round trip only records
      f.faulty.failFirst('after-commit', (call) => call.outcomes.length > 0);
      const report = await f.run();

      const [lost] = f.faulty.faulty();
      assert.ok(lost !== undefined, 'the fault was injected');
      assert.equal(lost.limit, 0, 'a round trip that only records');
      assert.match(report.error?.message ?? '', /^database error while recording outcomes: injected/);
      assert.equal(report.fencedOut, 0, 'not taken away');
      assert.equal(report.recordedUnseen, lost.outcomes.length);
      assert.deepEqual(counts(report), { ...none, claimed: 4, published: 1, failed: 1, retried: 1, unknown: 1 });
      assert.equal((await f.post(a)).status, 'published');
      assert.deepEqual([(await f.post(b)).status, (await f.post(b)).lastError], ['failed', 'HTTP 400']);
      const pc = await f.post(c);
      assert.deepEqual([pc.status, pc.attempts], ['pending', 1]);
      assert.ok(pc.runAt.getTime() > Date.now() + 50_000, 'Retry-After applied once');
      assert.equal((await f.post(h)).status, 'unknown');
      for (const id of [a, b, c, h]) assert.equal(f.faulty.timesRecorded(id ?? 0), 1, `post ${id ?? 0} recorded once`);
      assert.ok(!f.logged(/taken away|not recorded, the claim is no longer ours/), f.logs.join('\n'));
    });

    it('12b. recording commits, another worker claims the retried post, then the answer is lost: the retry was recorded, not taken away', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      const [a, r] = await f.schedule(main, 'a', 'r');
      // RETRY_BASE_MS 0: the retried post is due again at once, and another worker takes it
      // before this worker asks what became of its outcomes. Its lease never ran out, so
      // the outcome was recorded; reconcile sees only a newer claim token and (today)
      // counts it as fenced out, logging that the lease ran out (see the report of h3).
      f.fake.on('r', retryable('HTTP 503'));
      f.faulty.failFirst('after-commit', (call) => call.outcomes.some((o) => o.postId === r));
      f.faulty.afterCommit = async () => {
        assert.deepEqual(
          (await f.real.claim('other-worker', 5, 60_000)).map((p) => p.id),
          [r],
        );
      };
      const report = await f.run();

      assert.equal(f.faulty.faulty().length, 1, 'the fault was injected');
      assert.equal((await f.post(a)).status, 'published');
      const pr = await f.post(r);
      assert.deepEqual([pr.status, pr.workerId, pr.attempts], ['processing', 'other-worker', 2], 'the retry was recorded, then claimed anew');
      assert.equal(f.faulty.timesRecorded(r ?? 0), 1);
      // what the worker reports of it: its retry was recorded (the lease never ran out)
      assert.deepEqual(counts(report), { ...none, claimed: 2, published: 1, retried: 1 });
      assert.ok(!f.logged(/leases ran out/), f.logs.join('\n'));
    });

    // -------------------------------------------------------------------------------
    // Leases and slots

    for (const policy of ['hold', 'check'] as const) {
      it(`13. a confirmed publish that arrives after its lease expired and recovery took the post back (${policy}): published`, async () => {
        const f = await setup();
        const ch = await f.channel('ch', policy);
        const [id] = await f.schedule(ch, 'late');
        const g = gate();
        f.fake.on('late', g.behaviour);
        // a long lease: no heartbeat renews it while the test makes it expire
        const running = f.run({ env: { LEASE_MS: '60000' } });
        await within(g.entered, 'the publish to start');
        await rawSql(f.db, `UPDATE post_schedule SET lease_expires_at = 1 WHERE id = ${id ?? 0}`, [
          `UPDATE post_schedule SET lease_expires_at = now() - interval '1 minute' WHERE id = ${id ?? 0}`,
        ]);
        const back = await f.real.recoverExpired(3);
        assert.deepEqual(
          back.map((r) => [r.id, r.status]),
          [[id, policy === 'hold' ? 'unknown' : 'pending']],
        );
        g.open({ externalId: 'ext-late', externalUrl: null });
        const report = await running;

        assert.deepEqual(counts(report), { ...none, claimed: 1, published: 1 });
        const p = await f.post(id);
        assert.deepEqual(state(p), { status: 'published', attempts: 1, unconfirmed: false, externalId: 'ext-late' });
        assert.equal(f.fake.publishes.length, 1);
      });
    }

    it('15. a claim answered after its lease ran out (a partition held the answer): nothing is sent on it, recovery and the next claimant own the posts', async () => {
      const f = await setup();
      const main = await f.channel('main', 'retry');
      const ids = await f.schedule(main, 'a', 'b');
      // LEASE_MS is 600: the answer comes back after it, by which time recovery took the
      // posts back and another worker claimed them
      f.faulty.beforeAnswer = async (call) => {
        if (call.n !== 1) return;
        await delay(700);
        await f.real.recoverExpired(3);
        const other = await f.real.exchange('worker-test-2', [], 5, 60_000);
        assert.equal(other.claimed.length, 2, 'the other worker claimed both posts');
      };
      const report = await f.run();

      assert.equal(f.faulty.exchanges[0]?.result?.claimed.length, 2, 'the late answer did carry both posts');
      assert.equal(f.fake.publishes.length, 0, 'nothing sent on a claim whose lease had run out');
      assert.deepEqual(counts(report), { ...none, claimed: 2, fencedOut: 2 });
      for (const id of ids) {
        const p = await f.post(id);
        assert.equal(p.status, 'processing');
        assert.equal(p.workerId, 'worker-test-2', 'the posts stay with the worker that claimed them in time');
      }
      assert.ok(f.logged(/Claim of 2 posts answered after \d+ms, too close to its lease \(600ms\): not sent, handed back/), f.logs.join('\n'));
    });

    it('14. the GLOBAL_MAX_WORKERS slot is lost: the worker logs it, claims nothing more, and finishes what is in flight', async () => {
      const f = await setup();
      const main = await f.channel('main', 'hold');
      const [a, b, c] = await f.schedule(main, 'a', 'b', 'c');
      const env = { BATCH_SIZE: '1', WORKER_CONCURRENCY: '1', LEASE_MS: '300' };
      assert.deepEqual(await f.real.acquireWorkerSlots('test-host', [WORKER_ID], 1, 60_000), [WORKER_ID]);
      const g = gate();
      f.fake.on('a', g.behaviour);
      const running = f.run({ env, holdsSlot: true });
      await within(g.entered, 'the first publish to start');
      await f.real.releaseWorkerSlots([WORKER_ID]);
      await waitFor('the worker to notice', () => f.logged(/Worker slot \(GLOBAL_MAX_WORKERS\) lost/));
      g.open({ externalId: 'ext-a', externalUrl: null });
      const report = await running;

      assert.deepEqual(counts(report), { ...none, claimed: 1, published: 1 });
      assert.equal(report.error, null);
      assert.equal((await f.post(a)).status, 'published', 'what was in flight is finished and recorded');
      for (const id of [b, c]) assert.deepEqual(state(await f.post(id)), { status: 'pending', attempts: 0, unconfirmed: false, externalId: null });
      assert.deepEqual(f.fake.publishes.map((r) => r.text), ['a']);

      // the control: a worker that keeps its slot claims on until nothing is due
      assert.deepEqual(await f.real.acquireWorkerSlots('test-host', [WORKER_ID], 1, 60_000), [WORKER_ID]);
      const again = await f.run({ env, holdsSlot: true });
      assert.deepEqual(counts(again), { ...none, claimed: 2, published: 2 });
    });
  });
}

describe("a resident's warm-up (warmPublishing)", () => {
  it("makes each enabled channel's publisher once, kept for the first batch, sends nothing, and passes over channels it cannot warm", async () => {
    const db = await createTestDatabase('sqlite');
    const store = await openStore(parseDatabaseUrl(db.url));
    try {
      await store.migrate();
      const config = loadConfig({ DATABASE_URL: db.url, ...BASE_ENV });
      const fake = new FakePlatform();
      const log = createLogger(`WORKER ${WORKER_ID}`, 'text', () => undefined);
      const publishers = makePublisherCache({ config, concurrency: 5, log, open: () => ({}), loadPublisherModule: fake.load });
      const main = await store.addChannel({ name: 'main', platform: FAKE, settings: {}, onUnknown: 'retry' });
      await store.addChannel({ name: 'second', platform: FAKE, settings: {}, onUnknown: 'retry' });
      await store.addChannel({ name: 'nowhere', platform: 'no-such-platform', settings: {}, onUnknown: 'retry' });

      await within(warmPublishing(config, await store.listChannels(), publishers), 'the warm-up');
      await publishers.settle();

      assert.equal(fake.created.length, 1, 'one publisher for the platform, made by the warm-up');
      assert.equal(fake.publishes.length, 0, 'nothing sent');
      await publishers.publisherFor(main);
      assert.equal(fake.created.length, 1, 'the first batch uses the publisher the warm-up made');
      await publishers.close();
      assert.equal(fake.closed, 1);
    } finally {
      await store.close();
      await db.drop();
    }
  });
});
