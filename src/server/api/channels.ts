import type { FastifyInstance } from 'fastify';
import type * as v from 'valibot';
import type { Config } from '../../config.ts';
import { pauseChannel, removeChannel, resumeChannel, rotateWebhook } from '../../operations/channels.ts';
import { channelNamed } from '../../operations/posts.ts';
import type { Channel } from '../../types.ts';
import type { StoreSource } from '../store-source.ts';
import { ApiError } from './errors.ts';
import { route, type RouteTable } from './routes.ts';
import * as s from './schemas.ts';

/** A channel as the API shows it: never its settings (URLs, paths) nor its credentials. */
export function channelAnswer(c: Channel, now = new Date()): v.InferOutput<typeof s.ChannelAnswer> {
  const until = c.rateLimitedUntil ?? null;
  return {
    name: c.name,
    platform: c.platform,
    enabled: c.enabled,
    pausedAt: c.pausedAt?.toISOString() ?? null,
    rateLimitedUntil: until !== null && until > now ? until.toISOString() : null,
    attention: c.attention,
    onUnknown: c.onUnknown,
  };
}

export function registerChannelRoutes(app: FastifyInstance, table: RouteTable, stores: StoreSource, config: Config): void {
  route(app, table, { method: 'GET', url: '/api/channels', summary: 'List channels (no secret, URL or token)', answers: { 200: s.ChannelsAnswer } }, async () => ({
    channels: (await (await stores.get()).listChannels()).map((c) => channelAnswer(c)),
  }));
  route(app, table, { method: 'POST', url: '/api/channels/:name/pause', summary: "Pause a channel: its posts wait until resume", params: s.NameParams, answers: { 200: s.OneChannelAnswer, 404: s.ErrorAnswer } }, async ({ params }) => ({
    channel: channelAnswer(await pauseChannel(await stores.get(), params.name)),
  }));
  route(app, table, { method: 'POST', url: '/api/channels/:name/resume', summary: "Lift an operator's pause", params: s.NameParams, answers: { 200: s.OneChannelAnswer, 404: s.ErrorAnswer } }, async ({ params }) => ({
    channel: channelAnswer(await resumeChannel(await stores.get(), params.name)),
  }));
  route(
    app,
    table,
    { method: 'DELETE', url: '/api/channels/:name', summary: 'Remove a channel (409 while it has posts, unless cancelPosts=true)', params: s.NameParams, query: s.RemoveChannelQuery, answers: { 200: s.RemovedAnswer, 404: s.ErrorAnswer, 409: s.ErrorAnswer } },
    async ({ params, query }) => {
      const result = await removeChannel(await stores.get(), params.name, query.cancelPosts === 'true');
      return { removed: true, cancelled: result.cancelled };
    },
  );
  route(
    app,
    table,
    { method: 'PATCH', url: '/api/channels/:name', summary: "Rotate a webhook channel's URL and/or signing secret", params: s.NameParams, body: s.UpdateChannelBody, answers: { 200: s.OneChannelAnswer, 404: s.ErrorAnswer, 409: s.ErrorAnswer } },
    async ({ params, body }) => {
      if (body.url === undefined && body.secret === undefined) throw new ApiError(400, 'body: nothing to change: give url or secret');
      const store = await stores.get();
      const channel = await channelNamed(store, params.name);
      return { channel: channelAnswer(await rotateWebhook(store, channel, { url: body.url, secret: body.secret }, config.secretKey)) };
    },
  );
}
