import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import * as v from 'valibot';
import { validationError } from './errors.ts';

type Schema = v.GenericSchema;

/** One route of the API: its validation schemas and answers, from which /openapi.json is made. */
export interface RouteSpec<P extends Schema | undefined, Q extends Schema | undefined, B extends Schema | undefined> {
  readonly method: 'GET' | 'POST' | 'PATCH' | 'DELETE';
  /** fastify's form: /api/posts/:id */
  readonly url: string;
  readonly summary: string;
  readonly params?: P;
  readonly query?: Q;
  readonly body?: B;
  /** headers read (documented only) */
  readonly headers?: readonly { readonly name: string; readonly description: string }[];
  /** status -> answer schema */
  readonly answers: Readonly<Record<number, Schema>>;
}

type Out<S> = S extends Schema ? v.InferOutput<S> : undefined;

export interface Validated<P, Q, B> {
  readonly params: P;
  readonly query: Q;
  readonly body: B;
  readonly request: FastifyRequest;
  readonly reply: FastifyReply;
}

/** The routes registered, in order: what /openapi.json describes. */
export type RouteTable = RouteSpec<Schema | undefined, Schema | undefined, Schema | undefined>[];

function check<S extends Schema | undefined>(schema: S, value: unknown, where: 'body' | 'query' | 'params'): Out<S> {
  if (schema === undefined) return undefined as Out<S>;
  const parsed = v.safeParse(schema, value);
  if (!parsed.success) throw validationError(where, parsed.issues);
  return parsed.output as Out<S>;
}

/**
 * Registers a route whose params, query and body are validated with its schemas before
 * the handler runs (a 400 naming the field otherwise); the handler's value is the answer.
 */
export function route<P extends Schema | undefined, Q extends Schema | undefined, B extends Schema | undefined>(
  app: FastifyInstance,
  table: RouteTable,
  spec: RouteSpec<P, Q, B>,
  handler: (input: Validated<Out<P>, Out<Q>, Out<B>>) => Promise<unknown>,
): void {
  table.push(spec);
  app.route({
    method: spec.method,
    url: spec.url,
    handler: async (request, reply) => {
      const params = check(spec.params, request.params, 'params') as Out<P>;
      const query = check(spec.query, { ...(request.query as object) }, 'query') as Out<Q>;
      const body = spec.body === undefined ? undefined : check(spec.body, request.body ?? {}, 'body');
      return handler({ params, query, body: body as Out<B>, request, reply });
    },
  });
}
