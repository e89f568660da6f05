import type { FastifyInstance } from 'fastify';
import * as v from 'valibot';
import type { Config } from '../../config.ts';
import { ContentError, cancelPosts, channelNamed, editPost, listPosts, markPublished, retryPosts, schedulePost, showPost } from '../../operations/posts.ts';
import { conflict, notFound } from '../../operations/errors.ts';
import type { Post, PostImage, PostPart, PostStatus } from '../../types.ts';
import { parseWhen } from '../../when.ts';
import type { StoreSource } from '../store-source.ts';
import { ApiError } from './errors.ts';
import { confinedSource } from './media.ts';
import { route, type RouteTable } from './routes.ts';
import * as s from './schemas.ts';

/** The post as GET /api/posts/:id shows it (never the platform idempotency key). */
export function postAnswer(post: Post): v.InferOutput<typeof s.PostAnswer> {
  return {
    id: post.id,
    status: post.status,
    channel: post.channelName ?? null,
    runAt: post.runAt.toISOString(),
    scheduledAt: post.scheduledAt.toISOString(),
    attempts: post.attempts,
    parts: post.parts.map((p) => ({ text: p.text, images: p.images.map((i) => ({ source: i.source, alt: i.alt })) })),
    externalId: post.externalId,
    externalUrl: post.externalUrl,
    publishedAt: post.publishedAt?.toISOString() ?? null,
    lastError: post.lastError,
    createdAt: post.createdAt?.toISOString() ?? null,
    updatedAt: post.updatedAt?.toISOString() ?? null,
  };
}

/** A time of the API (validated by the schema already): now, +5m, ISO. */
const at = (value: string | undefined, now: Date): Date => parseWhen(value ?? 'now', now);

type Body = v.InferOutput<typeof s.SchedulePostBody>;

async function partsOf(body: Body, mediaDir: string | null): Promise<PostPart[]> {
  const images = async (list: readonly { source: string; alt?: string | undefined }[] | undefined, field: string): Promise<PostImage[]> =>
    Promise.all((list ?? []).map(async (i, n) => ({ source: await confinedSource(i.source, mediaDir, `${field}.${n}.source`), alt: i.alt ?? '' })));
  if (body.parts !== undefined) {
    const other = (['text', 'images', 'replies'] as const).find((k) => body[k] !== undefined);
    if (other !== undefined) throw new ApiError(400, `body.${other}: give either parts or text (with images and replies), not both`, other);
    return Promise.all(
      body.parts.map(async (p, n) => {
        const part = { text: p.text, images: await images(p.images, `parts.${n}.images`) };
        if (part.text.trim() === '' && part.images.length === 0) throw new ApiError(400, `body.parts.${n}.text: the text is empty (only a part with images may have none)`, `parts.${n}.text`);
        return part;
      }),
    );
  }
  if (body.text === undefined) throw new ApiError(400, 'body.text: give text (or parts)', 'text');
  const first = { text: body.text, images: await images(body.images, 'images') };
  if (first.text.trim() === '' && first.images.length === 0) throw new ApiError(400, 'body.text: the text is empty', 'text');
  return [first, ...(body.replies ?? []).map((text) => ({ text, images: [] }))];
}

/** One post's retry, cancel or mark-published: 404 when unknown, 409 naming its status when it does not allow it. */
function single(id: number, refused: readonly { id: number; status: PostStatus | null }[], rule: string): void {
  const r = refused[0];
  if (r === undefined) return;
  if (r.status === null) throw notFound(`no post with id ${id}`);
  throw conflict(`post ${id} is ${r.status}; ${rule}`);
}

/** from/to of the list, validated by the schema already: read with the same rules. */
function queryTime(value: string, field: string): Date {
  const date = s.isoDate(value);
  if (date === null) throw new ApiError(400, `query.${field}: must be an ISO-8601 time`, field);
  return date;
}

export function registerPostRoutes(app: FastifyInstance, table: RouteTable, stores: StoreSource, config: Config): void {
  const options = { moduleDir: config.moduleDir, mediaDir: config.mediaDir };

  route(app, table, { method: 'GET', url: '/api/posts', summary: 'List posts (filters combine; keyset pages)', query: s.ListPostsQuery, answers: { 200: s.PostPageAnswer } }, async ({ query }) => {
    const page = await listPosts(await stores.get(), {
      ...(query.status === undefined ? {} : { statuses: query.status.split(',').map((x) => x.trim() as PostStatus) }),
      ...(query.channel === undefined ? {} : { channel: query.channel }),
      ...(query.from === undefined ? {} : { from: queryTime(query.from, 'from') }),
      ...(query.to === undefined ? {} : { to: queryTime(query.to, 'to') }),
      ...(query.order === undefined ? {} : { order: query.order }),
      ...(query.limit === undefined ? {} : { limit: Number(query.limit) }),
      ...(query.cursor === undefined ? {} : { cursor: query.cursor }),
    });
    return { posts: page.posts.map((p) => ({ id: p.id, status: p.status, channel: p.channel, runAt: p.runAt.toISOString(), attempts: p.attempts, text: p.text, externalUrl: p.externalUrl, lastError: p.lastError })), next: page.next };
  });

  route(
    app,
    table,
    {
      method: 'POST',
      url: '/api/posts',
      summary: 'Schedule a post (idempotent with key or Idempotency-Key)',
      body: s.SchedulePostBody,
      headers: [{ name: 'Idempotency-Key', description: 'the same as body.key (both given and different: 400)' }],
      answers: { 201: s.ScheduledAnswer, 200: s.ScheduledAnswer, 404: s.ErrorAnswer, 409: s.ErrorAnswer },
    },
    async ({ body, request, reply }) => {
      const header = request.headers['idempotency-key'];
      const headerKey = Array.isArray(header) ? header[0] : header;
      if (headerKey !== undefined && body.key !== undefined && headerKey !== body.key) throw new ApiError(400, 'body.key: differs from the Idempotency-Key header (give one, or the same)', 'key');
      const key = body.key ?? headerKey;
      if (key !== undefined && (key.length === 0 || key.length > 200)) throw new ApiError(400, 'headers.idempotency-key: 1 to 200 characters', 'key');
      const now = new Date();
      // an unknown channel is refused before any image path is looked at
      await channelNamed(await stores.get(), body.channel);
      const parts = await partsOf(body, config.mediaDir);
      const exactTime = body.at !== undefined && body.at !== 'now' && !body.at.startsWith('+');
      let done;
      try {
        done = await schedulePost(await stores.get(), { channel: body.channel, parts, runAt: at(body.at, now), ...(key === undefined ? {} : { key, exactTime }) }, options);
      } catch (e) {
        if (e instanceof ContentError) throw new ApiError(400, `body.${body.parts === undefined ? e.problem.field : 'parts'}: ${e.message}`, body.parts === undefined ? e.problem.field : 'parts');
        throw e;
      }
      return reply.code(done.created ? 201 : 200).send({ id: done.id, created: done.created, channel: done.channel.name, runAt: done.runAt.toISOString(), warnings: done.warnings });
    },
  );

  route(app, table, { method: 'GET', url: '/api/posts/:id', summary: 'One post with every attempt', params: s.IdParams, answers: { 200: s.PostDetailsAnswer, 404: s.ErrorAnswer } }, async ({ params }) => {
    const { post, attempts } = await showPost(await stores.get(), Number(params.id));
    return {
      post: postAnswer(post),
      attempts: attempts.map((a) => ({ ...a, startedAt: a.startedAt?.toISOString() ?? null, finishedAt: a.finishedAt.toISOString() })),
    };
  });

  route(
    app,
    table,
    { method: 'PATCH', url: '/api/posts/:id', summary: "Change a pending post's text or time", params: s.IdParams, body: s.EditPostBody, answers: { 200: s.EditedAnswer, 404: s.ErrorAnswer, 409: s.ErrorAnswer } },
    async ({ params, body }) => {
      if (body.text === undefined && body.at === undefined) throw new ApiError(400, 'body: nothing to change: give text or at');
      try {
        const post = await editPost(await stores.get(), Number(params.id), { ...(body.text === undefined ? {} : { text: body.text }), ...(body.at === undefined ? {} : { runAt: at(body.at, new Date()) }) }, options);
        return { post: postAnswer(post) };
      } catch (e) {
        if (e instanceof ContentError) throw new ApiError(400, `body.text: ${e.message}`, 'text');
        throw e;
      }
    },
  );

  const one = (url: string, summary: string, act: (id: number) => Promise<{ status: PostStatus }>) =>
    route(app, table, { method: 'POST', url, summary, params: s.IdParams, answers: { 200: s.PostStatusAnswer, 404: s.ErrorAnswer, 409: s.ErrorAnswer } }, async ({ params }) => {
      const id = Number(params.id);
      return { id, status: (await act(id)).status };
    });
  const statusNow = async (id: number): Promise<{ status: PostStatus }> => {
    const post = await (await stores.get()).getPost(id);
    if (post === null) throw notFound(`no post with id ${id}`);
    return post;
  };
  one('/api/posts/:id/retry', 'Publish a failed or unknown post again, due now', async (id) => {
    single(id, (await retryPosts(await stores.get(), [id])).refused, 'only failed or unknown posts can be retried');
    return statusNow(id);
  });
  one('/api/posts/:id/mark-published', 'An unknown post did go out: record it as published', async (id) => {
    single(id, (await markPublished(await stores.get(), [id])).refused, 'only posts whose outcome is unknown can be marked published');
    return statusNow(id);
  });
  one('/api/posts/:id/cancel', 'Cancel a pending post, or give up on an unknown one', async (id) => {
    single(id, (await cancelPosts(await stores.get(), [id])).refused, 'only pending or unknown posts can be cancelled');
    return statusNow(id);
  });

  route(app, table, { method: 'POST', url: '/api/posts/cancel', summary: 'Cancel several posts', body: s.CancelPostsBody, answers: { 200: s.CancelledAnswer } }, async ({ body }) =>
    cancelPosts(await stores.get(), body.ids),
  );
  route(app, table, { method: 'POST', url: '/api/posts/retry', summary: 'Retry several posts, or every failed one', body: s.RetryPostsBody, answers: { 200: s.RequeuedAnswer } }, async ({ body }) => {
    if ((body.ids === undefined) === (body.failed === undefined)) throw new ApiError(400, 'body: give either ids or "failed": true');
    return retryPosts(await stores.get(), body.ids ?? 'allFailed');
  });
}
