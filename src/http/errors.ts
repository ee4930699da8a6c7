import type { Context, Next } from 'koa';
import type { Logger } from 'pino';
import { ZodError } from 'zod';
import { DomainError } from '../domain/shared/errors.ts';

export interface ErrorBody {
  readonly error: { readonly code: string; readonly message: string; readonly fields?: Record<string, string> };
}

/** Errors the HTTP edge raises before a handler runs (bad JSON, body too large…). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly fields?: Record<string, string>,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export function zodFields(error: ZodError): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const issue of error.issues) {
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) fields[[...issue.path, key].join('.')] = 'is not a known field';
      continue;
    }
    const name = issue.path.length > 0 ? issue.path.join('.') : '(body)';
    fields[name] ??= issue.message;
  }
  return fields;
}

export function toErrorResponse(err: unknown): { status: number; body: ErrorBody; unexpected: boolean } {
  if (err instanceof DomainError || err instanceof HttpError) {
    const fields = err.fields && Object.keys(err.fields).length > 0 ? { fields: { ...err.fields } } : {};
    return { status: err.status, body: { error: { code: err.code, message: err.message, ...fields } }, unexpected: false };
  }
  if (err instanceof ZodError) {
    return {
      status: 400,
      body: { error: { code: 'VALIDATION_FAILED', message: 'The request has invalid fields.', fields: zodFields(err) } },
      unexpected: false,
    };
  }
  return {
    status: 500,
    body: { error: { code: 'INTERNAL', message: 'Something went wrong on our side. It has been logged.' } },
    unexpected: true,
  };
}

/** The one place where any error becomes API.md's error shape. */
export function errorMiddleware(logger: Logger) {
  return async (ctx: Context, next: Next) => {
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined) {
        ctx.status = 404;
        ctx.body = { error: { code: 'NOT_FOUND', message: `No route for ${ctx.method} ${ctx.path}.` } };
      }
    } catch (err) {
      const { status, body, unexpected } = toErrorResponse(err);
      if (unexpected) logger.error({ err, method: ctx.method, path: loggedPath(ctx.path) }, 'request failed');
      ctx.status = status;
      ctx.body = body;
    }
  };
}

/** The path as logged: a join token in it (a credential) is cut to its node. */
export function loggedPath(path: string): string {
  return path.replace(/^(\/api\/v1\/join\/tqj\.[0-9a-f-]{36})\.[^/]+/, '$1.…');
}
