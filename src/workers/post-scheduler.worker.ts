import { setImmediate as nextTick } from 'node:timers/promises';
import { backoffDelay } from '../backoff.ts';
import type { Config } from '../config.ts';
import { errorMessage, type Logger } from '../log.ts';
import {
  PermanentPublishError,
  RetryablePublishError,
  SettingsError,
  type Publisher,
  type PublisherModule,
} from '../publishers/publisher.ts';
import { loadPublisherModule } from '../publishers/registry.ts';
import type { Store } from '../store/store.ts';
import type { ClaimedPost, Outcome } from '../types.ts';

/**
 * The core of a worker: claim due posts, publish them, record each outcome, and
 * keep claiming until nothing is due or the time budget would be overrun.
 *
 * Up to WORKER_CONCURRENCY posts are in flight; a slot is refilled as soon as it
 * frees (several freed at once are refilled by one claim of up to BATCH_SIZE).
 * Outcomes are written in groups: while one write is under way the next ones
 * queue, so database round trips per post stay few under load.
 */
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
}

export interface WorkerReport {
  readonly claimed: number;
  readonly published: number;
  readonly retried: number;
  readonly failed: number;
  /** outcomes not recorded because the post had been taken away (fenced out) */
  readonly fencedOut: number;
  /** the budget ran out (or a stop came) with publishes still in flight */
  readonly timedOut: boolean;
  /** the database failed; posts left processing return after their lease */
  readonly error: Error | null;
}

export async function runWorker(options: WorkerOptions): Promise<WorkerReport> {
  const { workerId, config, store, log } = options;
  const started = Date.now();
  const deadline = started + config.workerTimeoutMs;
  // Stop claiming when a publish started now could not finish inside the budget.
  const claimCutoff = deadline - Math.min(config.publishTimeoutMs, Math.floor(config.workerTimeoutMs / 2));
  const leaseMs = config.timeoutMs + config.leaseMarginMs;

  const inFlightAbort = new AbortController();
  const budgetTimer = setTimeout(() => inFlightAbort.abort('worker time budget exhausted'), Math.max(0, deadline - Date.now()));
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

  const counts = { claimed: 0, published: 0, retried: 0, failed: 0, fencedOut: 0 };
  let timedOut = false;
  let error: Error | null = null;

  // Wake-ups of the main loop: a publish settled, or a stop came.
  let wakeResolve: (() => void) | null = null;
  function wake(): void {
    const resolve = wakeResolve;
    wakeResolve = null;
    resolve?.();
  }
  const sleep = () => new Promise<void>((resolve) => (wakeResolve = resolve));

  // Outcome recording, grouped.
  const queued: Outcome[] = [];
  let flushing: Promise<void> | null = null;
  const flush = (): Promise<void> => {
    flushing ??= (async () => {
      try {
        while (queued.length > 0 && error === null) {
          const batch = queued.splice(0, queued.length);
          const applied = new Set(await store.recordOutcomes(workerId, batch));
          for (const o of batch) {
            if (!applied.has(o.postId)) {
              counts.fencedOut++;
              log.warn(`Post ${o.postId}: outcome ${o.kind} not recorded, the claim is no longer ours (lease expired)`);
            } else if (o.kind === 'published') counts.published++;
            else if (o.kind === 'retry') counts.retried++;
            else counts.failed++;
          }
        }
      } catch (e) {
        error ??= new Error(`recording outcomes failed: ${errorMessage(e)}`);
      } finally {
        flushing = null;
      }
    })();
    return flushing;
  };

  const modules = new Map<string, Promise<PublisherModule | null>>();
  const publishers = new Map<string, Publisher>();
  const publisherFor = async (platform: string): Promise<Publisher | null> => {
    let mod = modules.get(platform);
    if (mod === undefined) {
      mod = loadPublisherModule(platform);
      modules.set(platform, mod);
    }
    const loaded = await mod;
    if (loaded === null) return null;
    let publisher = publishers.get(platform);
    if (publisher === undefined) {
      publisher = loaded.createPublisher({ timeoutMs: config.publishTimeoutMs, concurrency: config.workerConcurrency });
      publishers.set(platform, publisher);
    }
    return publisher;
  };

  const retryOrFail = (post: ClaimedPost, reason: string, retryAfterMs: number | null): Outcome => {
    if (post.attempt >= config.maxAttempts) {
      log.warn(`Post ${post.id} failed after ${post.attempt} attempts: ${reason}`);
      return { kind: 'failed', postId: post.id, attempt: post.attempt, error: `gave up after ${post.attempt} attempts: ${reason}` };
    }
    const delayMs = Math.max(backoffDelay(post.attempt, config.retryBaseMs, config.retryMaxMs), retryAfterMs ?? 0);
    log.warn(`Post ${post.id} will retry in ${Math.round(delayMs / 1000)}s (attempt ${post.attempt}/${config.maxAttempts}): ${reason}`);
    return { kind: 'retry', postId: post.id, attempt: post.attempt, error: reason, delayMs };
  };

  const fail = (post: ClaimedPost, reason: string): Outcome => {
    log.warn(`Post ${post.id} failed: ${reason}`);
    return { kind: 'failed', postId: post.id, attempt: post.attempt, error: reason };
  };

  const publishOne = async (post: ClaimedPost): Promise<Outcome> => {
    const channel = post.channel;
    if (channel === null) return fail(post, 'its channel no longer exists');
    if (!channel.enabled) return fail(post, `channel ${channel.name} is disabled`);
    if (post.text === null) return fail(post, 'its content (post_details row) is missing');
    let publisher: Publisher | null;
    try {
      publisher = await publisherFor(channel.platform);
    } catch (e) {
      return retryOrFail(post, `cannot load publisher for ${channel.platform}: ${errorMessage(e)}`, null);
    }
    if (publisher === null) return fail(post, `unknown platform "${channel.platform}" on channel ${channel.name}`);
    if (inFlightAbort.signal.aborted) return retryOrFail(post, `interrupted before sending: ${String(inFlightAbort.signal.reason)}`, 0);
    try {
      const result = await publisher.publish({
        postId: post.id,
        attempt: post.attempt,
        text: post.text,
        runAt: post.runAt,
        idempotencyKey: post.idempotencyKey,
        channel,
        signal: inFlightAbort.signal,
      });
      return { kind: 'published', postId: post.id, attempt: post.attempt, externalId: result.externalId, externalUrl: result.externalUrl };
    } catch (e) {
      if (e instanceof PermanentPublishError || e instanceof SettingsError) return fail(post, e.message);
      if (e instanceof RetryablePublishError) return retryOrFail(post, e.message, e.retryAfterMs);
      return retryOrFail(post, `${channel.platform} publisher error: ${errorMessage(e)}`, null);
    }
  };

  let inFlight = 0;
  const start = (post: ClaimedPost): void => {
    inFlight++;
    void publishOne(post).then((outcome) => {
      inFlight--;
      queued.push(outcome);
      void flush();
      wake();
    });
  };

  let drained = false;
  let firstClaim = true;
  try {
    for (;;) {
      const canClaim = !stopping && !drained && error === null && Date.now() < claimCutoff && !inFlightAbort.signal.aborted;
      const free = config.workerConcurrency - inFlight;
      if (canClaim && free > 0) {
        const want = Math.min(free, config.batchSize);
        let posts: ClaimedPost[];
        try {
          posts = await store.claim(workerId, want, leaseMs);
        } catch (e) {
          error = new Error(`claiming posts failed: ${errorMessage(e)}`);
          continue;
        }
        counts.claimed += posts.length;
        if (firstClaim) {
          firstClaim = false;
          const fields = { claimed: posts.length, msSinceProcessStart: Math.round(performance.now()) };
          log.info(posts.length === 0 ? 'No due posts left to claim' : `Processing ${posts.length} posts...`, fields);
        }
        if (posts.length < want) drained = true;
        for (const post of posts) start(post);
        continue;
      }
      if (inFlight === 0) break;
      await sleep();
      // Let publishes that settle together free their slots before the next claim.
      await nextTick();
    }
    timedOut = inFlightAbort.signal.aborted;
    while (error === null && (flushing !== null || queued.length > 0)) await (flushing ?? flush());
  } finally {
    clearTimeout(budgetTimer);
    clearTimeout(stopTimer);
    options.stop?.removeEventListener('abort', onStop);
    options.abort?.removeEventListener('abort', onAbort);
    await Promise.all([...publishers.values()].map((p) => p.close().catch(() => undefined)));
  }

  const parts = [`Published ${counts.published} posts`];
  if (counts.retried > 0) parts.push(`${counts.retried} ${counts.retried === 1 ? 'retry' : 'retries'}`);
  if (counts.failed > 0) parts.push(`${counts.failed} failed`);
  if (counts.fencedOut > 0) parts.push(`${counts.fencedOut} taken away`);
  const clean = counts.retried === 0 && counts.failed === 0 && counts.fencedOut === 0;
  const fields = { ...counts, durationMs: Date.now() - started, maxRssMb: Math.round(process.resourceUsage().maxRSS / 1024) };
  if (counts.claimed > 0) log.info(clean ? `${parts[0] ?? ''} successfully` : parts.join(', '), fields);
  else log.info('Done', fields);
  if (timedOut) log.warn(`Stopped with publishes in flight: ${String(inFlightAbort.signal.reason)}`);
  if (error !== null) log.error(error.message);
  return { ...counts, timedOut, error };
}
