import { toJsonSchema } from '@valibot/to-json-schema';
import type * as v from 'valibot';
import type { RouteTable } from './routes.ts';

const convert = (schema: v.GenericSchema): Record<string, unknown> => {
  // custom checks (a time's format, a number range in a query string) cannot be said in JSON Schema: left out
  const json: Record<string, unknown> = { ...toJsonSchema(schema, { target: 'draft-2020-12', typeMode: 'input', errorMode: 'ignore' }) };
  delete json['$schema'];
  return json;
};

/** One parameter per property of a query or params schema. */
function parameters(schema: v.GenericSchema | undefined, where: 'query' | 'path'): Record<string, unknown>[] {
  if (schema === undefined) return [];
  const json = convert(schema) as { properties?: Record<string, Record<string, unknown>>; required?: string[] };
  return Object.entries(json.properties ?? {}).map(([name, property]) => ({
    name,
    in: where,
    required: where === 'path' || (json.required ?? []).includes(name),
    schema: property,
    ...(typeof property['description'] === 'string' ? { description: property['description'] } : {}),
  }));
}

/**
 * The OpenAPI 3.1 document of the API, made from the same valibot schemas that validate
 * each request (and the answer schemas), for every route in the table.
 */
export function openApiDocument(table: RouteTable, version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of table) {
    const url = r.url.replace(/:(\w+)/g, '{$1}');
    const operation: Record<string, unknown> = {
      summary: r.summary,
      parameters: [
        ...parameters(r.params, 'path'),
        ...parameters(r.query, 'query'),
        ...(r.headers ?? []).map((h) => ({ name: h.name, in: 'header', required: false, description: h.description, schema: { type: 'string' } })),
      ],
      responses: {
        ...Object.fromEntries(Object.entries(r.answers).map(([status, schema]) => [status, { description: `HTTP ${status}`, content: { 'application/json': { schema: convert(schema) } } }])),
        ...(r.params !== undefined || r.query !== undefined || r.body !== undefined ? { 400: { $ref: '#/components/responses/Invalid' } } : {}),
        401: { $ref: '#/components/responses/Unauthorized' },
        ...(r.method === 'GET' ? {} : { 403: { $ref: '#/components/responses/CrossSite' } }),
        ...(r.body === undefined ? {} : { 413: { $ref: '#/components/responses/TooLarge' }, 415: { $ref: '#/components/responses/NotJson' } }),
      },
    };
    if (r.body !== undefined) operation['requestBody'] = { required: true, content: { 'application/json': { schema: convert(r.body) } } };
    (paths[url] ??= {})[r.method.toLowerCase()] = operation;
  }
  const error = { type: 'object', properties: { error: { type: 'string' }, field: { type: 'string' } }, required: ['error'] };
  return {
    openapi: '3.1.0',
    info: { title: 'post-scheduler', version, description: 'Schedule and manage posts. With API_TOKEN set, send Authorization: Bearer <API_TOKEN>.' },
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      responses: {
        Invalid: { description: 'invalid input: the error names the field and the reason', content: { 'application/json': { schema: error } } },
        Unauthorized: { description: 'API_TOKEN is set and the request did not carry it', content: { 'application/json': { schema: error } } },
        CrossSite: { description: 'from another site: a body that is not application/json, Sec-Fetch-Site cross-site or same-site, an Origin other than this server (or, without API_TOKEN, a Host other than loopback)', content: { 'application/json': { schema: error } } },
        TooLarge: { description: 'the body is over 1 MiB', content: { 'application/json': { schema: error } } },
        NotJson: { description: 'the body is not application/json', content: { 'application/json': { schema: error } } },
      },
    },
    security: [{ bearer: [] }],
  };
}
