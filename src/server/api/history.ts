import type { FastifyInstance } from 'fastify';
import type { Config } from '../../config.ts';
import { statusObject, statusOf } from '../../operations/status.ts';
import type { StoreSource } from '../store-source.ts';
import { route, type RouteTable } from './routes.ts';
import * as s from './schemas.ts';

/** The cycles `GET /api/status` covers, as `status` does by default. */
const STATUS_CYCLES = 10;
/** A minute: the buckets of /api/activity. */
const BUCKET_MS = 60_000;
/** The most ended posts /api/activity reads (a bounded index read, as /metrics does). */
const ACTIVITY_LIMIT = 100_000;

export function registerHistoryRoutes(app: FastifyInstance, table: RouteTable, stores: StoreSource, config: Config): void {
  route(app, table, { method: 'GET', url: '/api/status', summary: 'What `post-scheduler status --json` prints', answers: { 200: s.StatusAnswer } }, async () =>
    statusObject(config.databaseLabel, await statusOf(await stores.get(), config.secretKey, STATUS_CYCLES)),
  );

  route(app, table, { method: 'GET', url: '/api/cycles', summary: 'The latest cycles with their worker runs, newest first', query: s.CyclesQuery, answers: { 200: s.CyclesAnswer } }, async ({ query }) => {
    const cycles = await (await stores.get()).recentCycles(query.limit === undefined ? 20 : Number(query.limit));
    return {
      cycles: cycles.map((c) => ({
        ...c,
        startedAt: c.startedAt.toISOString(),
        finishedAt: c.finishedAt?.toISOString() ?? null,
        runs: c.runs.map((r) => ({ ...r, startedAt: r.startedAt.toISOString(), finishedAt: r.finishedAt.toISOString(), durationMs: r.finishedAt.getTime() - r.startedAt.getTime() })),
      })),
    };
  });

  route(app, table, { method: 'GET', url: '/api/activity', summary: 'Posts published and failed per minute, and each cycle’s due count, over the last hours', query: s.ActivityQuery, answers: { 200: s.ActivityAnswer } }, async ({ query }) => {
    const hours = query.hours === undefined ? 6 : Number(query.hours);
    const a = await (await stores.get()).activity(hours * 3_600_000, BUCKET_MS, ACTIVITY_LIMIT);
    const points = (list: readonly { at: Date; posts: number }[]) => list.map((x) => ({ at: x.at.toISOString(), posts: x.posts }));
    return {
      from: a.from.toISOString(),
      to: a.to.toISOString(),
      bucketMs: BUCKET_MS,
      published: points(a.published),
      failed: points(a.failed),
      backlog: a.backlog.map((x) => ({ at: x.at.toISOString(), due: x.due })),
    };
  });
}
