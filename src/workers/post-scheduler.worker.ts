import { setMaxListeners } from 'node:events';
import { setImmediate as nextTick } from 'node:timers/promises';
import type { Config } from '../config.ts';
import { errorMessage, type Logger } from '../log.ts';
import type { PublisherModule } from '../publishers/publisher.ts';
import { makeVault } from '../credentials/vault.ts';
import { OUTCOME_STATUS } from '../store/rows.ts';
import type { Store } from '../store/store.ts';
import type { Channel, ClaimedPost, HeldPost, Outcome } from '../types.ts';
import { workerContent } from './content.ts';
import { publishPost } from './publish-post.ts';
import { makePublisherCache, type PublisherCache } from './publishers.ts';
import { makeRateGate, RATE_WAIT_MS } from '../ratelimits/gate.ts';
import { effectiveLimits } from '../ratelimits/limits.ts';
import { claimWindowMs } from '../sizing/deadline.ts';

/**
 * The core of a worker: claim due posts, publish them, record each outcome, and
 * keep claiming until nothing is due or the time budget would be overrun.
 *
 * Up to WORKER_CONCURRENCY posts are in flight. The worker makes one database round
 * trip at a time (Store.exchange): it records every outcome that settled since the
 * last one and claims as many posts as there are free slots (up to BATCH_SIZE) in the
 * same statement. A freed slot is refilled by the next round trip (outcomes that settle
 * in the same turn of the event loop, or during a round trip, travel together), so
 * round trips per post stay few under load and no slot waits for its neighbours.
 * Publishes about to end count as free slots: those of a resident (claimAhead), and
 * quick ones on a database server (pipelined); the posts claimed for them wait in the
 * worker, at most one per publish in flight, and go back unstarted if it stops.
 */
/** The longest an outcome waits to ride along with a claim, once nothing more can be claimed, before it is written alone. */
const OUTCOME_DELAY_MS = 20;
/**
 * How long a freed slot waits for its neighbours before it is refilled, while fewer than
 * half the slots are free: publishes that settle within it (a fast publisher's batch,
 * which the event loop delivers over a few turns) share one round trip. As long as the
 * last claim's round trip took, because a claim sent at once for one slot costs the
 * others that long anyway, within these bounds: a slot never waits more than a few
 * milliseconds, and on a fast database fast publishers are still fed in batches
 * (W1, 10,000 posts by one worker: 401 round trips, not 500-700 at a fixed 1-2 ms on a
 * slower machine).
 */
const REFILL_COALESCE_MIN_MS = 1;
const REFILL_COALESCE_MAX_MS = 5;
/**
 * Claiming ahead: a publish that has run about as long as the quickest of this worker's
 * recent ones counts as a slot about to free, and is claimed for this long before (at
 * least, or three claim round trips): the post that refills the slot is here when it
 * frees, instead of a claim round trip later. Posts claimed ahead wait in the worker (at
 * most one per publish in flight) and are handed back, unstarted, if it stops. Only for
 * publishes that take at least twice that (a resident's, WorkerOptions.claimAhead); a
 * quick publisher's are claimed for as a batch (see pipelined).
 */
const CLAIM_AHEAD_MIN_MS = 10;
/** how many recent publish durations "the quickest" is taken from */
const DURATIONS_KEPT = 8;

export interface WorkerOptions {
  readonly workerId: string;
  readonly config: Config;
  readonly store: Store;
  readonly log: Logger;
  /** aborted to stop early: no more claims, in-flight publishes get `stopGraceMs` then are aborted */
  readonly stop?: AbortSignal;
  /** aborted to abort in-flight publishes at once (a second signal) */
  readonly abort?: AbortSignal;
  readonly stopGraceMs?: number;
  /** when the budget (WORKER_TIMEOUT_MS) started, epoch ms; the process start for a worker process */
  readonly startedAt?: number;
  /**
   * the worker holds a GLOBAL_MAX_WORKERS slot under its id: it renews the slot with its
   * heartbeat, and stops claiming if the slot was lost (expired and taken)
   */
  readonly holdsSlot?: boolean;
  /** where publisher modules come from (test/worker.test.ts injects fakes); default: src/publishers/registry.ts */
  readonly loadPublisherModule?: (platform: string) => Promise<PublisherModule | null>;
  /**
   * publishers kept across batches (a resident worker's, see publishers.ts): settled when
   * this batch ends, not closed. Absent: this batch's own, closed when it ends.
   */
  readonly publishers?: PublisherCache;
  /**
   * This worker's share of the posts due when its cycle started: it claims at most
   * `posts` in all until `lifted` resolves (the dispatcher lifts the shares once every
   * sibling has made its first claim), so that a worker that started first does not
   * take its late siblings' posts. A sibling that exits lifts them too; one that hangs
   * before its first claim holds them at most `holdMs` after this worker's first claim
   * (by default half the time left before its claims stop), then this worker claims the rest.
   */
  readonly share?: { readonly posts: number; readonly lifted: Promise<void>; readonly holdMs?: number };
  /** called once with the number of posts of the worker's first claim */
  readonly onFirstClaim?: (claimed: number) => void;
  /**
   * called once, as the worker's first part is handed to its publisher, or as its first
   * publish ends without one: what publishing needs is loaded (the runner applies its V8
   * flags then, see v8-settings.ts)
   */
  readonly onPublishing?: () => void;
  /**
   * claim for publishes about to end, not only for free slots (CLAIM_AHEAD_MIN_MS): a
   * resident worker's, whose posts are due to the millisecond. Not a cron worker's: with
   * start-ups sharing the cores, a 200-post cycle measured no faster with it, and one worker
   * of 25 on fresh connections refilled its slots 1-2% slower (BENCHMARKS.md). The price:
   * a worker killed outright (SIGKILL, out of memory) leaves the posts it claimed ahead to
   * lease recovery like those it was sending, as attempts that may have been delivered.
   * (Any worker claims ahead for quick publishes on a database server, at the same price:
   * see `pipelined` in runWorker.)
   */
  readonly claimAhead?: boolean;
  /**
   * A resident's batch, begun just before its due time: claims also take the posts due
   * within `aheadMs` (ClaimOptions.aheadMs), and each is held until its run_at on this
   * host's clock (run_at + `clockOffsetMs`, as its daemon measured the database's clock)
   * before it is sent. A post held when a stop comes is handed back unstarted.
   */
  readonly early?: { readonly aheadMs: number; readonly clockOffsetMs: number };
}

export interface WorkerReport {
  readonly claimed: number;
  readonly published: number;
  readonly retried: number;
  readonly failed: number;
  /** held as unknown (the attempt may have been delivered; the channel holds such posts) */
  readonly unknown: number;
  /** claimed but not started when the worker stopped, handed back to pending */
  readonly released: number;
  /** outcomes not recorded because the post had been taken away (fenced out) */
  readonly fencedOut: number;
  /** the budget ran out (or a stop came) with publishes still in flight */
  readonly timedOut: boolean;
  /** the database failed; posts left processing return after their lease */
  readonly error: Error | null;
  /** claims whose answer was lost (the round trip failed after its commit), handed back once seen */
  readonly unseenClaims: number;
  /** outcomes found already recorded after a round trip whose answer was lost */
  readonly recordedUnseen: number;
}

export async function runWorker(options: WorkerOptions): Promise<WorkerReport> {
  const { workerId, config, store, log } = options;
  const started = options.startedAt ?? Date.now();
  const deadline = started + config.workerTimeoutMs;
  // Stop claiming when a publish started now could not finish inside the budget.
  const claimCutoff = started + claimWindowMs(config.workerTimeoutMs, config.publishTimeoutMs);
  const leaseMs = config.leaseMs;

  const inFlightAbort = new AbortController();
  // every publish in flight listens to it
  setMaxListeners(config.workerConcurrency + 10, inFlightAbort.signal);
  const budgetTimer = setTimeout(() => {
    inFlightAbort.abort('worker time budget exhausted');
    wake();
  }, Math.max(0, deadline - Date.now()));
  let stopping = false;
  let stopTimer: NodeJS.Timeout | undefined;
  const onStop = () => {
    stopping = true;
    stopTimer ??= setTimeout(() => inFlightAbort.abort('worker stopped'), options.stopGraceMs ?? 0);
    wake();
  };
  const onAbort = () => {
    stopping = true;
    inFlightAbort.abort('worker stopped');
    wake();
  };
  if (options.stop?.aborted === true) onStop();
  options.stop?.addEventListener('abort', onStop, { once: true });
  if (options.abort?.aborted === true) onAbort();
  options.abort?.addEventListener('abort', onAbort, { once: true });

  const counts = { claimed: 0, published: 0, retried: 0, failed: 0, unknown: 0, released: 0, fencedOut: 0 };
  let roundTrips = 0;
  let timedOut = false;
  // set in callbacks too (`failed`), so the checker must not narrow them from their first value
  let error = null as Error | null;

  // Wake-ups of the main loop: a publish settled, or a stop came.
  let wakeResolve: (() => void) | null = null;
  function wake(): void {
    const resolve = wakeResolve;
    wakeResolve = null;
    resolve?.();
  }
  const sleep = () => new Promise<void>((resolve) => (wakeResolve = resolve));

  // Credentials are opened once per sealed form (publishers.ts) and sealed again when a
  // publisher refreshes them (plain only where there is no key: such a channel was stored
  // plain by its operator). During a key rotation the previous key still opens what it
  // sealed. A refresh is written only over the credentials it started from: never over a
  // rekey or another worker's refresh.
  const vault = makeVault(config.secretKey, config.oldSecretKey === null ? [] : [config.oldSecretKey]);
  const publishers =
    options.publishers ??
    makePublisherCache({
      config,
      concurrency: config.workerConcurrency,
      log,
      open: (sealed) => vault.open(sealed),
      ...(options.loadPublisherModule === undefined ? {} : { loadPublisherModule: options.loadPublisherModule }),
    });
  const moduleFor = (platform: string) => publishers.moduleFor(platform);
  const publisherFor = (channel: Channel) => publishers.publisherFor(channel);
  const openCredentials = (sealed: string) => publishers.openCredentials(sealed);
  const saveCredentials = async (channelId: number, fresh: Record<string, unknown>, previous: string | null): Promise<void> => {
    const sealed = vault.keyId === null ? vault.sealPlain(fresh) : vault.seal(fresh);
    if (!(await store.saveCredentials(channelId, sealed, previous))) log.warn(`Channel ${channelId}: refreshed credentials not stored, they changed meanwhile`);
  };
  const setAttention = (channelId: number, reason: string | null) => store.setAttention(channelId, reason);
  // what each channel takes, its images, and each published part of a thread on record
  const content = workerContent(config, workerId, store, moduleFor);

  // One slot of the channel's rate windows per send, waited for up to RATE_WAIT_MS.
  const rateGate = makeRateGate({
    store,
    limitsFor: async (channel, credentials) => effectiveLimits(channel, await moduleFor(channel.platform), credentials),
    maxWaitMs: RATE_WAIT_MS,
    waitUntil: claimCutoff,
    // no send outlives its worker's budget
    sendSlotTtlMs: config.workerTimeoutMs,
  });

  // Claimed posts start at once when a slot is free, else wait in `ready` for the first
  // slot to free (claimed ahead, see CLAIM_AHEAD_MIN_MS, or for quick publishes, see
  // pipelined): a post in `processing` under a live worker is being published or is next.
  let inFlight = 0;
  const ready: { readonly post: ClaimedPost; readonly since: number }[] = [];
  const claimAhead = options.claimAhead === true;
  const early = options.early;
  /**
   * Quick publishes (each of the last DURATIONS_KEPT ended within the last claim's round
   * trip: a file, a receiver on the same host) are all about to end: their slots are
   * claimed for as soon as they start, so that the worker publishes one batch while the
   * database records the one before and claims the next, instead of each waiting for the
   * other (W1 on PostgreSQL, BENCHMARKS.md). Any worker's, cron or resident; not on a store
   * whose round trips run on the worker's own thread (SQLite), where nothing would overlap.
   * The posts claimed for them wait in the worker, at most one per publish in flight, as
   * posts claimed ahead do, and at the same price (WorkerOptions.claimAhead): a worker
   * killed outright leaves them to lease recovery as attempts that may have been delivered.
   * A publish in flight longer than that round trip (the publisher turned slow) ends it
   * until the recent ones are quick again.
   */
  const pipelined = !store.inProcess;
  /** when each publish in flight started (performance.now()), by post id */
  const startedAt = new Map<number, number>();
  /** the last DURATIONS_KEPT publish durations, ms */
  const durations: number[] = [];
  let durationsNext = 0;
  const queued: Outcome[] = [];
  let oldestQueuedAt = 0;
  let publishingSeen = false;
  const publishing = (): void => {
    if (publishingSeen) return;
    publishingSeen = true;
    options.onPublishing?.();
  };
  /** when the first slot freed since the last claim was sent (performance.now()), 0 when none */
  let freedAt = 0;
  // a thread's next part starts only while a publish may start: not once stopping or past the cutoff
  const mayStartPart = (): boolean => !stopping && Date.now() < claimCutoff;
  // one set of what a publish needs, shared by every post of this worker
  const publishDeps = { config, log, publisherFor, signal: inFlightAbort.signal, openCredentials, saveCredentials, setAttention, rateGate, mayStartPart, sending: publishing, ...content.deps(inFlightAbort.signal) };
  const start = (post: ClaimedPost, waitedMs = 0): void => {
    inFlight++;
    // claimed before its run_at (options.early): it takes its slot now, and is sent then
    if (early === undefined) {
      send(post, waitedMs);
      return;
    }
    const claimedAt = Date.now();
    const dueAt = post.runAt.getTime() + early.clockOffsetMs;
    const hold = (): void => {
      // a timer may fire a millisecond before Date.now() says (its clock is the event
      // loop's, read at the start of the turn): never sent before run_at, it waits again
      const left = dueAt - Date.now();
      if (left > 0) {
        setTimeout(hold, left);
        return;
      }
      const fresh = leaseFresh(post.id);
      if (mayStartReady() && fresh) {
        send(post, waitedMs + (Date.now() - claimedAt));
        return;
      }
      if (!fresh) log.warn(`Post ${post.id}: its lease was not renewed while it was held for its run_at: not sent, handed back`);
      inFlight--;
      handBack(post);
      wake();
    };
    hold();
  };
  const send = (post: ClaimedPost, waitedMs: number): void => {
    const began = performance.now();
    startedAt.set(post.id, began);
    void publishPost(post, publishDeps).then((outcome) => {
      inFlight--;
      const settled = performance.now();
      startedAt.delete(post.id);
      durations[durationsNext] = settled - began;
      durationsNext = (durationsNext + 1) % DURATIONS_KEPT;
      if (queued.length === 0) oldestQueuedAt = Date.now();
      queued.push(waitedMs > 0 ? { ...outcome, waitedMs } : outcome);
      publishing();
      // the freed slot takes the next post claimed ahead, if there is one
      if (!startReady() && freedAt === 0) freedAt = settled;
      wake();
    });
  };
  // claimed posts start only while this worker could claim them now (no stop, no lost
  // slot, no database error, before the cutoff); else they go back
  const mayStartReady = (): boolean => !stopping && !slotLost && error === null && Date.now() < claimCutoff && !inFlightAbort.signal.aborted;
  /** a claimed post that is not sent goes back to pending (unstarted: no attempt counted) */
  const handBack = (post: ClaimedPost): void => {
    if (queued.length === 0) oldestQueuedAt = Date.now();
    queued.push({ kind: 'released', postId: post.id, token: post.token });
  };
  /**
   * A post waiting since its claim is sent only while its lease is surely still ours: taken
   * or renewed less than two thirds of LEASE_MS ago (the rule of a late claim's answer).
   * Past that (renewals failing, the database down) another worker may have it by now.
   */
  const leaseFresh = (postId: number): boolean => Date.now() - (renewedAt.get(postId) ?? 0) <= leaseMs - Math.floor(leaseMs / 3);
  /** starts posts claimed ahead into free slots; true if it started any */
  const startReady = (): boolean => {
    let started = false;
    while (ready.length > 0 && inFlight < capacity && mayStartReady()) {
      const next = ready.shift();
      if (next === undefined) break;
      if (!leaseFresh(next.post.id)) {
        log.warn(`Post ${next.post.id}: its lease was not renewed while it waited for a slot: not sent, handed back`);
        handBack(next.post);
        continue;
      }
      start(next.post, Math.round(performance.now() - next.since));
      started = true;
    }
    return started;
  };
  /** hands back the posts claimed ahead (unstarted: no attempt counted) */
  const releaseReady = (): void => {
    for (const { post } of ready.splice(0, ready.length)) handBack(post);
  };
  /**
   * Publishes in flight that are about to end, and when the next one will be
   * (performance.now(), null: none): all of them while publishes are quick (pipelined);
   * else, claiming ahead, those that have run as long as the quickest recent one, less the lead.
   */
  const endingSoon = (now: number): { count: number; nextAt: number | null } => {
    if (pipelined && durations.length === DURATIONS_KEPT && Math.max(...durations) < claimRoundTripMs) {
      let quick = true;
      for (const began of startedAt.values()) if (now - began >= claimRoundTripMs) quick = false;
      // the publishes started (posts held for their run_at have not)
      if (quick) return { count: startedAt.size, nextAt: null };
    }
    if (!claimAhead) return { count: 0, nextAt: null };
    const quickest = durations.length === 0 ? 0 : Math.min(...durations);
    const lead = Math.max(CLAIM_AHEAD_MIN_MS, 3 * claimRoundTripMs);
    if (quickest < 2 * lead) return { count: 0, nextAt: null };
    let count = 0;
    let nextAt: number | null = null;
    for (const began of startedAt.values()) {
      const at = began + quickest - lead;
      if (at <= now) count++;
      else if (nextAt === null || at < nextAt) nextAt = at;
    }
    return { count, nextAt };
  };

  // Every post claimed and not yet recorded (in flight, or its outcome queued), with
  // its claim token: its lease is renewed every third of LEASE_MS while this worker
  // lives, and so is the worker's slot of GLOBAL_MAX_WORKERS.
  const held = new Map<number, number>();
  /** when each held post's lease was last taken or renewed (a newer token before it ran out came after our outcome) */
  const renewedAt = new Map<number, number>();
  let renewing = false;
  let slotLost = false;
  const heartbeat = setInterval(() => {
    if (renewing) return;
    renewing = true;
    const posts = [...held].map(([postId, token]) => ({ postId, token }));
    // the lease runs from the database's now, which is no earlier than this
    const sentAt = Date.now();
    const leases =
      posts.length === 0
        ? Promise.resolve()
        : store.renewLeases(workerId, posts, leaseMs).then((renewed) => {
            const ok = new Set(renewed);
            const at = sentAt;
            for (const id of renewed) renewedAt.set(id, at);
            for (const p of posts) {
              if (!ok.has(p.postId) && held.get(p.postId) === p.token) {
                log.warn(`Post ${p.postId}: lease lost, another worker may take it`);
                // one waiting for a slot is not sent: handed back (fenced: only if still ours)
                const waiting = ready.findIndex((r) => r.post.id === p.postId);
                for (const { post } of waiting >= 0 ? ready.splice(waiting, 1) : []) {
                  handBack(post);
                  wake();
                }
              }
            }
          });
    const slot =
      options.holdsSlot !== true || slotLost
        ? Promise.resolve()
        : store.renewWorkerSlots([workerId], leaseMs).then((still) => {
            if (still.length > 0) return;
            slotLost = true;
            log.error('Worker slot (GLOBAL_MAX_WORKERS) lost: it expired and may be taken; no more claims');
            wake();
          });
    Promise.all([leases, slot])
      .catch((e: unknown) => log.warn(`Renewing leases failed: ${errorMessage(e)}`))
      .finally(() => (renewing = false));
  }, Math.max(20, Math.floor(leaseMs / 3)));

  const tally = (outcomes: readonly Outcome[], applied: readonly number[]): void => {
    const ok = new Set(applied);
    for (const o of outcomes) {
      held.delete(o.postId);
      renewedAt.delete(o.postId);
      if (!ok.has(o.postId)) {
        counts.fencedOut++;
        log.warn(`Post ${o.postId}: outcome ${o.kind} not recorded, the claim is no longer ours (lease expired)`);
      } else counts[o.kind === 'retry' ? 'retried' : o.kind]++;
    }
  };

  /**
   * After a round trip that failed, which may have committed with only its answer lost:
   * claims the database gives this worker that it never saw go back at once (released,
   * no attempt counted), and outcomes that were in fact recorded are not sent again.
   */
  let unseenClaims = 0;
  let recordedUnseen = 0;
  const reconcile = (rows: readonly HeldPost[]): void => {
    const byId = new Map(rows.map((r) => [r.id, r]));
    const keep: Outcome[] = [];
    for (const o of queued) {
      const row = byId.get(o.postId);
      const ours = row !== undefined && row.token === o.token;
      // Claimed again since, while our lease was still good: only our outcome (a retry or
      // release back to pending) can have let the new claim in, so it was recorded.
      const since = renewedAt.get(o.postId);
      const claimedAfterUs =
        row !== undefined && row.token > o.token && (o.kind === 'retry' || o.kind === 'released') && since !== undefined && Date.now() - since < leaseMs;
      if (ours && row.status === 'processing' && row.workerId === workerId) keep.push(o);
      else if (ours && o.kind === 'published' && (row.status === 'pending' || row.status === 'unknown')) keep.push(o);
      else if ((ours && row.status === OUTCOME_STATUS[o.kind]) || claimedAfterUs) {
        recordedUnseen++;
        tally([o], [o.postId]);
      } else tally([o], []);
    }
    const unseen = rows.filter((r) => r.status === 'processing' && r.workerId === workerId && !held.has(r.id));
    for (const r of unseen) {
      held.set(r.id, r.token);
      keep.push({ kind: 'released', postId: r.id, token: r.token });
    }
    unseenClaims += unseen.length;
    queued.splice(0, queued.length, ...keep);
    if (unseen.length > 0 || recordedUnseen > 0) {
      log.warn(`Reconciled after a lost answer: ${unseen.length} claims never seen handed back, ${recordedUnseen} outcomes found recorded`);
    }
  };

  // A worker publishes at most WORKER_CONCURRENCY posts at once and claims as soon as a
  // slot is free, up to BATCH_SIZE at a time: one round trip at a time, so that fast
  // publishers are still fed in batches (whatever settled during a round trip rides
  // along with the next). Outcomes ride along with the next claim; once nothing more
  // can be claimed they wait for half a capacity of them, or OUTCOME_DELAY_MS at most.
  const capacity = config.workerConcurrency;
  const claimThreshold = Math.max(1, Math.ceil(capacity / 2));
  // Until the dispatcher lifts the shares, this worker claims at most its share in all.
  let shareLeft = options.share?.posts ?? Number.POSITIVE_INFINITY;
  let shareTimer: NodeJS.Timeout | undefined;
  const liftShare = (): void => {
    shareLeft = Number.POSITIVE_INFINITY;
    clearTimeout(shareTimer);
    wake();
  };
  void options.share?.lifted.then(liftShare);
  // After a failed round trip (the database is down or restarting), outcomes are kept
  // and written again with backoff until the budget runs out; no more claims.
  let retryRecordAt = 0;
  let failedRoundTrips = 0;
  let drained = false;
  let firstClaim = true;
  let reconcileNeeded = false as boolean;
  let exchangeSentAt = 0;
  /** how long the last claim took to come back (ms): how long a freed slot waits for its neighbours */
  let claimRoundTripMs = REFILL_COALESCE_MIN_MS;
  try {
    // One database round trip at a time: record what settled, claim what fits.
    // Whatever settles during a round trip is carried by the next one.
    for (;;) {
      const now = Date.now();
      const failed = (e: unknown, doing: string): void => {
        failedRoundTrips++;
        retryRecordAt = Date.now() + Math.min(2_000, 100 * 2 ** Math.min(failedRoundTrips, 5));
        // the round trip may have committed with only its answer lost: ask before the next one
        reconcileNeeded = true;
        if (error === null) {
          error = new Error(`database error while ${doing}: ${errorMessage(e)}`);
          log.error(`${error.message}; no more claims, outcomes kept and written again when the database answers`);
        }
        // this worker claims no more: its siblings must not hold to their shares waiting for it
        if (firstClaim) {
          firstClaim = false;
          options.onFirstClaim?.(0);
        }
      };
      // posts claimed ahead take the slots free now, or go back if this worker stops
      if (ready.length > 0 && !mayStartReady()) releaseReady();
      else startReady();
      if (reconcileNeeded && now >= retryRecordAt) {
        try {
          roundTrips++;
          reconcile(await store.reconcile(workerId, queued.map((o) => o.postId)));
          reconcileNeeded = false;
        } catch (e) {
          failed(e, 'reconciling after a lost answer');
          if (Date.now() >= deadline && inFlight === 0) break;
        }
        continue;
      }
      // `stopping`, `slotLost` and `error` change in callbacks, which the type checker cannot see
      // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition
      const canClaim: boolean = !stopping && !slotLost && !drained && error === null && now < claimCutoff && !inFlightAbort.signal.aborted;
      // slots free now with no post to fill them, and those about to free (claimed ahead)
      const freeNow = capacity - inFlight - ready.length;
      const soon = canClaim ? endingSoon(performance.now()) : { count: 0, nextAt: null };
      const want: number = canClaim ? Math.min(freeNow + soon.count, config.batchSize, shareLeft) : 0;
      // its share taken, the worker waits for the shares to be lifted rather than end
      const waitingForShare = canClaim && shareLeft === 0;
      // Fewer than half the slots free, with publishes still in flight: the freed ones wait
      // up to one claim round trip (within REFILL_COALESCE_MIN_MS..MAX_MS) for their
      // neighbours, so that a fast publisher's batch is refilled by one round trip rather
      // than one per turn of the event loop.
      const coalesceUntil = freedAt + Math.min(REFILL_COALESCE_MAX_MS, Math.max(REFILL_COALESCE_MIN_MS, claimRoundTripMs));
      const coalescing: boolean = want > 0 && want < claimThreshold && inFlight > 0 && performance.now() < coalesceUntil;
      // Claiming only ahead (no slot free yet): for half a capacity at once, or for all the
      // publishes in flight, so that publishes ending one by one are not claimed for one by one.
      const aheadWaiting: boolean = want > 0 && freeNow <= 0 && want < claimThreshold && soon.count < inFlight;
      const claimNow: boolean = !reconcileNeeded && want > 0 && !coalescing && !aheadWaiting;
      // Outcomes wait for the next claim, for half a capacity of them, for the last
      // publish, or OUTCOME_DELAY_MS at most: never a round trip per outcome under load.
      const recordNow: boolean =
        !reconcileNeeded &&
        !coalescing &&
        queued.length > 0 &&
        (error === null
          ? queued.length >= claimThreshold || inFlight === 0 || stopping || now - oldestQueuedAt >= OUTCOME_DELAY_MS
          : now >= retryRecordAt && (inFlight === 0 || now - oldestQueuedAt >= OUTCOME_DELAY_MS));
      if (recordNow || claimNow) {
        const outcomes = queued.splice(0, queued.length);
        const limit: number = claimNow ? want : 0;
        let posts: ClaimedPost[];
        try {
          roundTrips++;
          exchangeSentAt = Date.now();
          const sentAt = performance.now();
          // slots that free from now on are refilled by the next claim
          if (limit > 0) freedAt = 0;
          const result = await store.exchange(workerId, outcomes, limit, leaseMs, { slot: options.holdsSlot === true, aheadMs: early?.aheadMs ?? 0 });
          if (limit > 0) claimRoundTripMs = performance.now() - sentAt;
          tally(outcomes, result.applied);
          posts = result.claimed;
          if (failedRoundTrips > 0) {
            log.info(`Database answers again: ${outcomes.length} outcomes recorded after ${failedRoundTrips} failed attempts`);
            failedRoundTrips = 0;
          }
        } catch (e) {
          // whether it committed is unknown: the outcomes wait, and a reconcile comes first
          queued.unshift(...outcomes);
          failed(e, limit > 0 ? 'claiming posts' : 'recording outcomes');
          if (Date.now() >= deadline && inFlight === 0) break;
          continue;
        }
        if (limit > 0) {
          counts.claimed += posts.length;
          shareLeft -= posts.length;
          if (firstClaim) {
            firstClaim = false;
            const fields = { claimed: posts.length, msSinceProcessStart: Math.round(process.uptime() * 1000) };
            log.info(posts.length === 0 ? 'No due posts left to claim' : `Processing ${posts.length} posts...`, fields);
            options.onFirstClaim?.(posts.length);
            if (options.share !== undefined) shareTimer = setTimeout(liftShare, options.share.holdMs ?? Math.max(0, Math.floor((claimCutoff - Date.now()) / 2)));
          }
          if (posts.length < limit) drained = true;
          // A claim's leases run from the database's now, no earlier than when it was sent.
          // An answer that came back late (a partition held it) may bring leases that ran
          // out, or would before the heartbeat renews them: recovery may have handed those
          // posts to another worker, so none is sent; they are handed back (fenced: only
          // if still ours).
          const lateMs = Date.now() - exchangeSentAt;
          const stale = lateMs > leaseMs - Math.floor(leaseMs / 3);
          if (stale && posts.length > 0) {
            log.warn(`Claim of ${posts.length} posts answered after ${lateMs}ms, too close to its lease (${leaseMs}ms): not sent, handed back`);
          }
          for (const post of posts) {
            held.set(post.id, post.token);
            renewedAt.set(post.id, exchangeSentAt);
            // a stop, the cutoff or a database error that came during the round trip: not started
            if (stale || !mayStartReady()) handBack(post);
            else if (inFlight < capacity) start(post);
            else ready.push({ post, since: performance.now() });
          }
        }
        continue;
      }
      if (!reconcileNeeded && inFlight === 0 && queued.length === 0 && ready.length === 0 && !waitingForShare) break;
      // the database stayed down for the whole budget: what is left returns after its lease
      if (error !== null && inFlight === 0 && Date.now() >= deadline) break;
      let wakeAt: number | null = null;
      if (reconcileNeeded) wakeAt = retryRecordAt;
      else if (coalescing) wakeAt = Date.now() + Math.max(0, coalesceUntil - performance.now());
      else if (queued.length > 0) wakeAt = error === null ? oldestQueuedAt + OUTCOME_DELAY_MS : retryRecordAt;
      // the next publish to be about to end: its slot is claimed for then
      if (!reconcileNeeded && soon.nextAt !== null) {
        const aheadAt = Date.now() + Math.max(0, soon.nextAt - performance.now());
        wakeAt = wakeAt === null ? aheadAt : Math.min(wakeAt, aheadAt);
      }
      // posts waiting for a slot go back at the claim cutoff, not at the next publish's end
      if (ready.length > 0 && Date.now() < claimCutoff) wakeAt = wakeAt === null ? claimCutoff : Math.min(wakeAt, claimCutoff);
      const wakeUp = wakeAt === null ? undefined : setTimeout(wake, Math.max(1, wakeAt - Date.now()));
      await sleep();
      clearTimeout(wakeUp);
      // Let publishes that settle together free their slots before the next round trip.
      await nextTick();
    }
    timedOut = inFlightAbort.signal.aborted;
  } finally {
    clearInterval(heartbeat);
    clearTimeout(budgetTimer);
    clearTimeout(stopTimer);
    clearTimeout(shareTimer);
    options.stop?.removeEventListener('abort', onStop);
    options.abort?.removeEventListener('abort', onAbort);
    // a resident worker's publishers stay for its next batch (those replaced in this one are closed)
    await (options.publishers === undefined ? publishers.close() : publishers.settle());
    await content.close();
  }

  const dbError = error;
  const parts = [`Published ${counts.published} posts`];
  if (counts.retried > 0) parts.push(`${counts.retried} ${counts.retried === 1 ? 'retry' : 'retries'}`);
  if (counts.failed > 0) parts.push(`${counts.failed} failed`);
  if (counts.unknown > 0) parts.push(`${counts.unknown} outcome unknown`);
  if (counts.released > 0) parts.push(`${counts.released} handed back unstarted`);
  if (counts.fencedOut > 0) parts.push(`${counts.fencedOut} taken away`);
  const clean =
    dbError === null && counts.retried === 0 && counts.failed === 0 && counts.unknown === 0 && counts.released === 0 && counts.fencedOut === 0;
  const cpu = process.cpuUsage();
  const fields = { ...counts, roundTrips, durationMs: Date.now() - started, cpuMs: Math.round((cpu.user + cpu.system) / 1000), maxRssMb: Math.round(process.resourceUsage().maxRSS / 1024) };
  if (counts.claimed > 0) log.info(clean ? `${parts[0] ?? ''} successfully` : parts.join(', '), fields);
  else log.info('Done', fields);
  if (timedOut) log.warn(`Stopped with publishes in flight: ${String(inFlightAbort.signal.reason)}`);
  if (counts.fencedOut > 0) {
    log.error(`${counts.fencedOut} outcomes not recorded: their leases ran out and the posts were taken back (see LEASE_MS)`);
  }
  if (dbError !== null) {
    const unrecorded = queued.length + inFlight;
    log.error(unrecorded > 0 ? `${dbError.message}; ${unrecorded} outcomes not recorded, those posts return after their lease` : dbError.message);
  }
  return { ...counts, timedOut, error: dbError, unseenClaims, recordedUnseen };
}
