import type { Readable } from 'node:stream';
import type { z } from 'zod';
import type { CommandContext } from '../commands/command-bus.ts';
import type { Actor } from '../commands/user/accounts.ts';

export type { Actor };

export type Access = 'public' | 'user' | 'admin';

export interface RouteRequest<Body, Query, Access_ extends Access> {
  readonly body: Body;
  readonly query: Query;
  readonly params: Record<string, string>;
  readonly actor: Access_ extends 'public' ? Actor | undefined : Actor;
  /** Metadata for the commands this request runs (acting user, time, correlation id, address). */
  readonly context: CommandContext;
  readonly headers: Record<string, string | string[] | undefined>;
}

export interface RouteResponse {
  readonly status?: number;
  readonly body?: unknown;
}

/**
 * One HTTP operation: its schemas validate requests and also generate the OpenAPI document, so
 * the contract and the checks cannot drift apart.
 */
export interface RouteSpec<
  B extends z.ZodType | undefined = z.ZodType | undefined,
  Q extends z.ZodType | undefined = z.ZodType | undefined,
  A extends Access = Access,
> {
  readonly method: 'get' | 'post' | 'patch' | 'put' | 'delete';
  /** Relative to /api/v1, Koa style: `/users/:id`. */
  readonly path: string;
  readonly summary: string;
  readonly tag: string;
  readonly access: A;
  readonly body?: B;
  readonly query?: Q;
  readonly response?: z.ZodType;
  /** Status of a successful answer (200 unless given). */
  readonly status?: number;
  /**
   * Runs before the body and query are validated: whether the thing the path names is the
   * caller's. A stranger's instance is then 404 whatever they send, not a 400 about their body.
   */
  readonly guard?: (request: { actor: A extends 'public' ? Actor | undefined : Actor; params: Record<string, string> }) => Promise<unknown>;
  handler(
    request: RouteRequest<B extends z.ZodType ? z.output<B> : undefined, Q extends z.ZodType ? z.output<Q> : undefined, A>,
  ): Promise<RouteResponse | unknown>;
}

/** Identity function that keeps the inferred types of one route. */
export function route<B extends z.ZodType | undefined = undefined, Q extends z.ZodType | undefined = undefined, A extends Access = Access>(
  spec: RouteSpec<B, Q, A>,
): RouteSpec {
  return spec as unknown as RouteSpec;
}

/** A handler's answer with an explicit status (or no body). */
export function reply(status: number, body?: unknown): RouteResponse & { readonly __reply: true } {
  return { status, body, __reply: true };
}

export function isReply(value: unknown): value is RouteResponse {
  return typeof value === 'object' && value !== null && (value as { __reply?: boolean }).__reply === true;
}

/** A CSV answer: the HTTP edge sends it as text/csv instead of JSON. */
export class CsvBody {
  constructor(readonly text: string) {}
}

/** A non-JSON answer (a shell script, a binary): sent with its own content type. */
export class RawBody {
  constructor(
    readonly contentType: string,
    readonly body: string | Buffer | Readable,
    /** Sent as an attachment with this file name (a download). */
    readonly filename?: string,
  ) {}
}
