import { randomUUID, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import Router from '@koa/router';
import Koa, { type Context } from 'koa';
import type { Logger } from 'pino';
import { assertAdmin, type Actor } from '../commands/user/accounts.ts';
import { UnauthorizedError } from '../domain/shared/errors.ts';
import { readJsonBody } from './body.ts';
import { errorMiddleware, HttpError, loggedPath } from './errors.ts';
import type { IdempotencyGuard } from './idempotency.ts';
import { openApiDocument } from './openapi.ts';
import { CsvBody, isReply, RawBody, type RouteSpec } from './route.ts';

export interface HttpDependencies {
  readonly routes: readonly RouteSpec[];
  readonly authenticate: (token: string) => Promise<Actor | null>;
  readonly idempotency: IdempotencyGuard;
  readonly logger: Logger;
  readonly version: string;
  /** False until the process can take commands; health answers 503 until then. */
  readonly isReady: () => boolean;
  /** Extra middleware mounted after the API (the console's static files). */
  readonly fallback?: Koa.Middleware;
  /** TIANQI_TRUST_PROXY: reverse proxies in front (0: none). */
  readonly trustProxy?: number;
  /** Prometheus text for `GET /metrics`, for admins or the bearer token in TIANQI_METRICS_TOKEN. */
  readonly metrics?: { registry: { metrics(): Promise<string>; contentType: string }; token?: string };
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function bearer(ctx: Context): string | undefined {
  const header = ctx.get('authorization');
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  return match?.[1];
}

/** The client's address: X-Forwarded-For's hop when it is an IP address, else the socket's. */
function clientAddress(ctx: Context): string {
  const ip = ctx.ip;
  return isIP(ip) ? ip : (ctx.req.socket.remoteAddress ?? '');
}

export function createHttpApp(deps: HttpDependencies): Koa {
  // Behind N trusted proxies the client is the Nth address from the right of X-Forwarded-For:
  // what each proxy appended, never what the client put in front of it.
  const proxies = deps.trustProxy ?? 0;
  const app = new Koa(proxies > 0 ? { proxy: true, maxIpsCount: proxies } : { proxy: false });
  const api = new Router({ prefix: '/api/v1' });

  app.use(async (ctx, next) => {
    const started = performance.now();
    ctx.state.requestId = ctx.get('x-request-id') || randomUUID();
    ctx.set('X-Request-Id', ctx.state.requestId as string);
    if (ctx.path.startsWith('/api/')) {
      ctx.set('X-Content-Type-Options', 'nosniff');
      ctx.set('Cache-Control', 'no-store');
    }
    try {
      await next();
    } finally {
      // Never log bodies or headers: they carry passwords, tokens and keys.
      deps.logger.info(
        { reqId: ctx.state.requestId, method: ctx.method, path: loggedPath(ctx.path), status: ctx.status, ms: Math.round(performance.now() - started) },
        'request',
      );
    }
  });
  app.use(errorMiddleware(deps.logger));

  const top = new Router();
  top.get('/api/health', (ctx) => {
    const ready = deps.isReady();
    ctx.status = ready ? 200 : 503;
    ctx.body = { status: ready ? 'ok' : 'starting' };
  });
  const document = openApiDocument(deps.routes, deps.version);
  top.get('/api/openapi.json', (ctx) => {
    ctx.body = document;
  });

  for (const spec of deps.routes) {
    api[spec.method](spec.path, async (ctx) => {
      const token = bearer(ctx);
      const actor = token ? await deps.authenticate(token) : null;
      if (spec.access !== 'public' && !actor) {
        throw new UnauthorizedError(token ? 'The token is invalid or expired, or the account is disabled.' : 'Sign in first.');
      }
      if (spec.access === 'admin') assertAdmin(actor!);
      if (spec.guard) await spec.guard({ actor: actor ?? undefined, params: ctx.params } as never);
      const raw = spec.method === 'get' || spec.method === 'delete' ? undefined : await readJsonBody(ctx);
      const body = spec.body ? spec.body.parse(raw ?? {}) : undefined;
      if (!spec.body && raw !== undefined && !(typeof raw === 'object' && raw !== null && Object.keys(raw).length === 0)) {
        throw new HttpError(400, 'VALIDATION_FAILED', 'This operation takes no body.', { '(body)': 'must be empty' });
      }
      const query = spec.query ? spec.query.parse(ctx.query) : undefined;
      const context = {
        ...(actor ? { userId: actor.id } : {}),
        correlationId: ctx.state.requestId as string,
        clientIp: clientAddress(ctx),
      };
      const run = async () => {
        const result = await spec.handler({ body, query, params: ctx.params, actor: actor ?? undefined, context, headers: ctx.headers } as never);
        return isReply(result) ? { status: result.status ?? 200, body: result.body } : { status: spec.status ?? 200, body: result };
      };
      const key = ctx.get('idempotency-key');
      // Public answers (a sign-in's token) are never stored: an idempotency claim lives in the event log.
      const answer = key && actor && spec.method !== 'get' && spec.access !== 'public'
        ? await deps.idempotency.run(actor.id, key, { method: spec.method, path: ctx.path, body }, context, run)
        : await run();
      if ('replayed' in answer && answer.replayed) ctx.set('Idempotent-Replayed', 'true');
      ctx.status = answer.status;
      if (answer.body instanceof CsvBody) {
        ctx.type = 'text/csv; charset=utf-8';
        ctx.attachment('tianqi-audit.csv');
        ctx.body = answer.body.text;
      } else if (answer.body instanceof RawBody) {
        ctx.type = answer.body.contentType;
        if (answer.body.filename) ctx.attachment(answer.body.filename);
        ctx.body = answer.body.body;
      } else if (answer.status !== 204) ctx.body = answer.body ?? null;
    });
  }

  top.get('/metrics', async (ctx) => {
    if (!deps.metrics) return;
    const token = bearer(ctx);
    const scraper = Boolean(token && deps.metrics.token && safeEqual(token, deps.metrics.token));
    if (!scraper) {
      const actor = token ? await deps.authenticate(token) : null;
      if (!actor) throw new UnauthorizedError('Send an admin token or TIANQI_METRICS_TOKEN as a bearer token.');
      assertAdmin(actor);
    }
    ctx.type = deps.metrics.registry.contentType;
    ctx.body = await deps.metrics.registry.metrics();
  });

  // A method a path does not have is 405 in the error shape (not Koa's default 501 for TRACE and the like).
  const methods = {
    throw: true,
    notImplemented: () => new HttpError(405, 'METHOD_NOT_ALLOWED', 'This method is not supported.'),
    methodNotAllowed: () => new HttpError(405, 'METHOD_NOT_ALLOWED', 'This path does not take this method.'),
  };
  app.use(top.routes()).use(top.allowedMethods(methods));
  app.use(api.routes()).use(api.allowedMethods(methods));
  app.use(async (ctx, next) => {
    if (ctx.path.startsWith('/api/')) {
      ctx.status = 404;
      ctx.body = { error: { code: 'NOT_FOUND', message: `No route for ${ctx.method} ${ctx.path}.` } };
      return;
    }
    if (deps.fallback) await deps.fallback(ctx, next);
  });
  return app;
}
