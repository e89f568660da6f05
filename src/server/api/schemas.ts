import * as v from 'valibot';
import { MAX_TEXT } from '../../cli/posts.ts';
import { MAX_KEY, MAX_LIST } from '../../operations/posts.ts';
import { POST_STATUSES } from '../../types.ts';
import { parseWhen } from '../../when.ts';

/**
 * The request and response shapes of the HTTP API, as valibot schemas: the requests are
 * validated with them, and /openapi.json is generated from them (src/server/api/openapi.ts).
 */

const whenString = (field: string) =>
  v.pipe(
    v.string(`${field} must be a string`),
    v.check((s) => {
      try {
        parseWhen(s);
        return true;
      } catch {
        return false;
      }
    }, `${field} must be now, +30s, +5m, +2h, +1d or an ISO-8601 time`),
    v.description('now, +30s, +5m, +2h, +1d or an ISO-8601 time (UTC when it has no zone)'),
  );

/** An ISO-8601 time as `at` takes one (parseWhen's rules: UTC when it has no zone); parse it with isoDate. */
const isoTime = (field: string) =>
  v.pipe(
    v.string(`${field} must be a string`),
    v.check((s) => isoDate(s) !== null, `${field} must be an ISO-8601 time such as 2026-12-01T09:00:00Z (UTC when it has no zone)`),
    v.description('an ISO-8601 time (UTC when it has no zone)'),
  );

/** The time an ISO-8601 string names, read as `at` reads it (never now or +1h), or null. */
export function isoDate(s: string): Date | null {
  if (s.trim() === '' || s.trim() === 'now' || s.trim().startsWith('+')) return null;
  try {
    return parseWhen(s);
  } catch {
    return null;
  }
}

const text = v.pipe(v.string('text must be a string'), v.maxLength(MAX_TEXT, `text is longer than ${MAX_TEXT} characters`));

export const ImageInput = v.strictObject(
  {
    source: v.pipe(v.string('source must be a string'), v.minLength(1, 'source is empty'), v.maxLength(4096, 'source is longer than 4096 characters'), v.description('an http(s) URL, or a file path inside MEDIA_DIR')),
    alt: v.optional(v.pipe(v.string('alt must be a string'), v.maxLength(10_000, 'alt is longer than 10000 characters'))),
  },
  (issue) => `unknown field or not an object {"source", "alt"}${issue.received === 'Object' ? '' : ` (got ${issue.received})`}`,
);

const images = v.pipe(v.array(ImageInput, 'images must be a list'), v.maxLength(20, 'at most 20 images'));

export const PartInput = v.strictObject(
  { text, images: v.optional(images) },
  'each part is {"text", "images"?} and nothing else',
);

export const SchedulePostBody = v.pipe(
  v.strictObject(
    {
      channel: v.pipe(v.string('channel must be a string'), v.minLength(1, 'channel is empty'), v.maxLength(200, 'channel is longer than 200 characters')),
      text: v.optional(text),
      images: v.optional(images),
      replies: v.optional(v.pipe(v.array(v.pipe(text, v.minLength(1, 'a reply is empty')), 'replies must be a list of texts'), v.maxLength(100, 'at most 100 replies'))),
      parts: v.optional(v.pipe(v.array(PartInput, 'parts must be a list'), v.minLength(1, 'parts is empty'), v.maxLength(100, 'at most 100 parts'))),
      at: v.optional(whenString('at')),
      key: v.optional(v.pipe(v.string('key must be a string'), v.minLength(1, 'key is empty'), v.maxLength(MAX_KEY, `key is longer than ${MAX_KEY} characters`))),
    },
    (issue) => (issue.expected === 'never' ? `unknown field` : 'the body must be a JSON object'),
  ),
  v.description('{channel, text, images?, replies?} or {channel, parts}; plus at? and key? (or the Idempotency-Key header)'),
);

export const EditPostBody = v.strictObject(
  { text: v.optional(v.pipe(text, v.minLength(1, 'text is empty'))), at: v.optional(whenString('at')) },
  (issue) => (issue.expected === 'never' ? 'unknown field' : 'the body must be a JSON object'),
);

const ids = v.pipe(v.array(v.pipe(v.number('each id must be a number'), v.integer('each id must be a whole number'), v.minValue(1, 'each id is at least 1')), 'ids must be a list of post ids'), v.minLength(1, 'ids is empty'), v.maxLength(1000, 'at most 1000 ids'));

export const CancelPostsBody = v.strictObject({ ids }, (issue) => (issue.expected === 'never' ? 'unknown field' : 'the body must be a JSON object'));

export const RetryPostsBody = v.strictObject(
  { ids: v.optional(ids), failed: v.optional(v.literal(true, 'failed must be true')) },
  (issue) => (issue.expected === 'never' ? 'unknown field' : 'the body must be a JSON object'),
);

export const UpdateChannelBody = v.strictObject(
  {
    url: v.optional(v.pipe(v.string('url must be a string'), v.minLength(1, 'url is empty'), v.maxLength(4096, 'url is longer than 4096 characters'))),
    secret: v.optional(v.pipe(v.string('secret must be a string'), v.minLength(1, 'secret is empty'), v.maxLength(4096, 'secret is longer than 4096 characters'))),
  },
  (issue) => (issue.expected === 'never' ? 'unknown field' : 'the body must be a JSON object'),
);

export const ListPostsQuery = v.strictObject(
  {
    status: v.optional(
      v.pipe(
        v.string(),
        v.check((s) => s.split(',').every((x) => (POST_STATUSES as readonly string[]).includes(x.trim())), `status must be a comma-separated list of ${POST_STATUSES.join(', ')}`),
        v.description(`comma-separated: ${POST_STATUSES.join(', ')}`),
      ),
    ),
    channel: v.optional(v.pipe(v.string(), v.minLength(1, 'channel is empty'))),
    from: v.optional(isoTime('from')),
    to: v.optional(isoTime('to')),
    order: v.optional(v.picklist(['next', 'newest'], 'order must be next or newest')),
    limit: v.optional(v.pipe(v.string(), v.regex(/^\d{1,4}$/, `limit must be a whole number from 1 to ${MAX_LIST}`), v.check((s) => Number(s) >= 1 && Number(s) <= MAX_LIST, `limit must be a whole number from 1 to ${MAX_LIST}`))),
    cursor: v.optional(v.pipe(v.string(), v.maxLength(100, 'cursor is too long'), v.description('the `next` of the page before'))),
  },
  'unknown query parameter',
);

export const CyclesQuery = v.strictObject(
  { limit: v.optional(v.pipe(v.string(), v.regex(/^\d{1,3}$/, 'limit must be a whole number from 1 to 200'), v.check((s) => Number(s) >= 1 && Number(s) <= 200, 'limit must be a whole number from 1 to 200'))) },
  'unknown query parameter',
);

export const ActivityQuery = v.strictObject(
  { hours: v.optional(v.pipe(v.string(), v.regex(/^\d{1,2}$/, 'hours must be a whole number from 1 to 48'), v.check((s) => Number(s) >= 1 && Number(s) <= 48, 'hours must be a whole number from 1 to 48'))) },
  'unknown query parameter',
);

export const RemoveChannelQuery = v.strictObject({ cancelPosts: v.optional(v.picklist(['true', 'false'], 'cancelPosts must be true or false')) }, 'unknown query parameter');

export const IdParams = v.object({ id: v.pipe(v.string(), v.regex(/^[1-9]\d{0,15}$/, 'id must be a post id (a whole number from 1)')) });
export const NameParams = v.object({ name: v.pipe(v.string(), v.minLength(1, 'name is empty'), v.maxLength(200, 'name is longer than 200 characters')) });

// ---- responses (documented in /openapi.json; the handlers build them) ----

const time = v.pipe(v.string(), v.description('ISO-8601 (UTC)'));
const nullableTime = v.nullable(time);
const status = v.picklist(POST_STATUSES);

export const ErrorAnswer = v.object({ error: v.string(), field: v.optional(v.string()) });

export const PostListItemAnswer = v.object({
  id: v.number(),
  status,
  channel: v.nullable(v.string()),
  runAt: time,
  attempts: v.number(),
  text: v.string(),
  externalUrl: v.nullable(v.string()),
  lastError: v.nullable(v.string()),
});
export const PostPageAnswer = v.object({ posts: v.array(PostListItemAnswer), next: v.nullable(v.string()) });

export const ScheduledAnswer = v.object({ id: v.number(), created: v.boolean(), channel: v.string(), runAt: time, warnings: v.array(v.string()) });

export const PostAnswer = v.object({
  id: v.number(),
  status,
  channel: v.nullable(v.string()),
  runAt: time,
  scheduledAt: time,
  attempts: v.number(),
  parts: v.array(v.object({ text: v.string(), images: v.array(v.object({ source: v.string(), alt: v.string() })) })),
  externalId: v.nullable(v.string()),
  externalUrl: v.nullable(v.string()),
  publishedAt: nullableTime,
  lastError: v.nullable(v.string()),
  createdAt: nullableTime,
  updatedAt: nullableTime,
});
export const AttemptAnswer = v.object({
  attempt: v.number(),
  workerId: v.nullable(v.string()),
  startedAt: nullableTime,
  finishedAt: time,
  outcome: v.string(),
  error: v.nullable(v.string()),
  externalId: v.nullable(v.string()),
  externalUrl: v.nullable(v.string()),
});
export const PostDetailsAnswer = v.object({ post: PostAnswer, attempts: v.array(AttemptAnswer) });
export const EditedAnswer = v.object({ post: PostAnswer });
export const PostStatusAnswer = v.object({ id: v.number(), status });
const refused = v.array(v.object({ id: v.number(), status: v.nullable(status) }));
export const CancelledAnswer = v.object({ cancelled: v.array(v.number()), refused });
export const RequeuedAnswer = v.object({ requeued: v.array(v.number()), refused });

export const ChannelAnswer = v.object({
  name: v.string(),
  platform: v.string(),
  enabled: v.boolean(),
  pausedAt: nullableTime,
  rateLimitedUntil: nullableTime,
  attention: v.nullable(v.string()),
  onUnknown: v.picklist(['retry', 'check', 'hold']),
});
export const ChannelsAnswer = v.object({ channels: v.array(ChannelAnswer) });
export const OneChannelAnswer = v.object({ channel: ChannelAnswer });
export const RemovedAnswer = v.object({ removed: v.literal(true), cancelled: v.number() });

export const StatusAnswer = v.pipe(v.record(v.string(), v.unknown()), v.description('the object `post-scheduler status --json` prints'));

const run = v.object({
  workerId: v.string(),
  startedAt: time,
  finishedAt: time,
  durationMs: v.number(),
  exitCode: v.nullable(v.number()),
  signal: v.nullable(v.string()),
  published: v.number(),
  retried: v.number(),
  failed: v.number(),
});
export const CyclesAnswer = v.object({
  cycles: v.array(
    v.object({
      id: v.number(),
      host: v.string(),
      state: v.picklist(['running', 'finished', 'dead']),
      startedAt: time,
      finishedAt: nullableTime,
      pending: v.number(),
      workersSpawned: v.number(),
      workersSucceeded: v.number(),
      workersFailed: v.number(),
      exitCode: v.nullable(v.number()),
      durationMs: v.nullable(v.number()),
      recovered: v.number(),
      runs: v.array(run),
    }),
  ),
});
const bucket = v.object({ at: time, posts: v.number() });
export const ActivityAnswer = v.object({
  from: time,
  to: time,
  bucketMs: v.number(),
  published: v.array(bucket),
  failed: v.array(bucket),
  backlog: v.array(v.object({ at: time, due: v.number() })),
});
