import { z } from 'zod';
import type { RouteSpec } from './route.ts';

const ErrorSchema = z.object({
  error: z.object({ code: z.string(), message: z.string(), fields: z.record(z.string(), z.string()).optional() }),
});

function jsonSchema(schema: z.ZodType, io: 'input' | 'output') {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
}

/** OpenAPI 3.1 document generated from the same schemas that validate requests. */
export function openApiDocument(routes: readonly RouteSpec[], version: string) {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const path = `/api/v1${r.path.replace(/:(\w+)/g, '{$1}')}`;
    const params = [...r.path.matchAll(/:(\w+)/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
    const query = r.query ? jsonSchema(r.query, 'input') : undefined;
    const queryParams = query
      ? Object.entries((query.properties ?? {}) as Record<string, unknown>).map(([name, schema]) => ({
          name,
          in: 'query',
          required: ((query.required ?? []) as string[]).includes(name),
          schema,
        }))
      : [];
    const status = String(r.status ?? 200);
    const errors: Record<string, unknown> = {};
    const errorStatuses = ['400', ...(r.access === 'public' ? [] : ['401']), ...(r.access === 'admin' ? ['403'] : []), '404', '409'];
    for (const code of errorStatuses) {
      errors[code] = { description: 'Error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
    }
    (paths[path] ??= {})[r.method] = {
      summary: r.summary,
      tags: [r.tag],
      operationId: `${r.method}${r.path.replace(/[/:-](\w)/g, (_, c: string) => c.toUpperCase())}`,
      ...(r.access === 'public' ? { security: [] } : {}),
      parameters: [...params, ...queryParams],
      ...(r.body
        ? { requestBody: { required: true, content: { 'application/json': { schema: jsonSchema(r.body, 'input') } } } }
        : {}),
      responses: {
        [status]:
          status === '204' || !r.response
            ? { description: 'Done' }
            : { description: 'OK', content: { 'application/json': { schema: jsonSchema(r.response, 'output') } } },
        ...errors,
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'TianQi GPU Manager API', version, description: '天启算力管理平台 — see API.md' },
    servers: [{ url: '/' }],
    security: [{ bearer: [] }],
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
      schemas: { Error: jsonSchema(ErrorSchema, 'output') },
    },
    paths,
  };
}
