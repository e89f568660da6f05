import type { FastifyError, FastifyInstance } from 'fastify';
import * as v from 'valibot';
import { OperationError, type OperationErrorKind } from '../../operations/errors.ts';

/** A refusal of the API: its status and one line naming the field and the reason. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

const STATUS_OF: Record<OperationErrorKind, number> = { 'not-found': 404, conflict: 409, invalid: 400 };

/** The first issue of a failed validation as a 400: `body.text: text must be a string`, field `text`. */
export function validationError(where: 'body' | 'query' | 'params' | 'headers', issues: readonly v.BaseIssue<unknown>[]): ApiError {
  const issue = issues[0];
  const field = (issue?.path ?? []).map((p) => String(p.key)).join('.');
  const message = issue?.message ?? 'invalid';
  return new ApiError(400, `${where}${field === '' ? '' : `.${field}`}: ${message}`, field === '' ? undefined : field);
}

/** Every error of /api/ as `{ error, field? }`: validation 400, OperationError 404/409/400, body too large 413. */
export function installErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler(async (error: FastifyError | Error, _request, reply) => {
    if (error instanceof ApiError) return reply.code(error.status).send({ error: error.message, ...(error.field === undefined ? {} : { field: error.field }) });
    if (error instanceof OperationError) return reply.code(STATUS_OF[error.kind]).send({ error: error.message });
    const code = (error as FastifyError).code;
    if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') return reply.code(413).send({ error: 'body: larger than 1 MiB' });
    if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return reply.code(415).send({ error: 'body: send application/json' });
    if (code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || code === 'FST_ERR_CTP_INVALID_JSON_BODY' || (error instanceof SyntaxError && (error as FastifyError).statusCode === 400)) {
      return reply.code(400).send({ error: 'body: not valid JSON' });
    }
    const status = (error as FastifyError).statusCode;
    if (status !== undefined && status >= 400 && status < 500) return reply.code(status).send({ error: error.message });
    // no driver message: it could name the database's address
    return reply.code(500).send({ error: 'internal error (see the server log)' });
  });
  app.setNotFoundHandler(async (request, reply) => reply.code(404).send({ error: `no route ${request.method} ${request.url.split('?')[0] ?? ''}` }));
}
