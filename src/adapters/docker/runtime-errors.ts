import type { NodeTarget } from '../../ports/container-runtime.port.ts';
import { EngineRejectedError, EngineUnavailableError } from '../../ports/container-runtime.port.ts';
import type { ConnectionAttempt } from './connection-error.ts';
import { classifyConnectionError } from './connection-error.ts';
import { describeAddress, parseEndpoint } from './docker-client.ts';

/**
 * Error codes of a request that never got an answer: Node's errno codes (ECONNREFUSED, ENOENT on
 * a socket path, ETIMEDOUT, ECONNRESET, which is also how docker-modem's own request timeout ends
 * as "socket hang up"), TLS and OpenSSL failures, HTTP parser errors, and certificate checks.
 * Node's other ERR_* codes are programming errors and are left as they are.
 */
const CONNECTION_CODE = /^(?:E[A-Z0-9]+|ERR_(?:TLS|SSL|OSSL|SOCKET)_\w+|HPE_\w+|\w*CERT\w*|UNABLE_TO_\w+|INVALID_CA)$/;

/**
 * What the storage driver says when it cannot honour `StorageOpt.size`: overlay2 off xfs/pquota,
 * vfs without quotas, a driver without the option at all.
 */
const STORAGE_OPT_UNSUPPORTED = [
  /--storage-opt is supported only for/i,
  /storage opt\b.*\bnot supported/i,
  /does not support, or has not enabled quotas/i,
  /no quota support/i,
];

/**
 * Docker's own text of a refusal: the body's `message`, else the body, else docker-modem's reason.
 * For a streaming request (a pull) docker-modem keeps no body, only its own message
 * `(HTTP code 500) server error - <Docker's message> `, from which the text is taken.
 */
export function dockerMessage(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const { json, reason, statusCode } = error as Error & { json?: unknown; reason?: unknown; statusCode?: unknown };
  if (typeof json === 'object' && json !== null && !Buffer.isBuffer(json)) {
    const message = (json as { message?: unknown }).message;
    if (typeof message === 'string' && message.trim()) return message.trim();
  }
  const body = Buffer.isBuffer(json) ? json.toString('utf8').trim() : typeof json === 'string' ? json.trim() : '';
  if (body) return body;
  const prefix = `(HTTP code ${String(statusCode)}) ${typeof reason === 'string' ? reason : 'unexpected'} - `;
  const cause = error.message.startsWith(prefix) ? error.message.slice(prefix.length).trim() : '';
  if (cause) return cause;
  if (typeof reason === 'string' && reason) return reason;
  return error.message;
}

/** The HTTP status of an engine's answer, when the error is one. */
export function statusOf(error: unknown): number | undefined {
  if (error instanceof EngineRejectedError) return error.statusCode;
  const statusCode = (error as { statusCode?: unknown } | null)?.statusCode;
  return typeof statusCode === 'number' ? statusCode : undefined;
}

/**
 * Maps what dockerode threw to the port's errors: an answer with a status to EngineRejectedError
 * with Docker's message, a failed connection to EngineUnavailableError with a readable reason.
 * Anything else (a bug) is returned unchanged. Pure.
 */
export function toRuntimeError(error: unknown, target: NodeTarget): unknown {
  if (error instanceof EngineRejectedError || error instanceof EngineUnavailableError) return error;
  const statusCode = statusOf(error);
  if (statusCode !== undefined) return new EngineRejectedError(statusCode, dockerMessage(error));
  if (isConnectionFailure(error)) {
    return new EngineUnavailableError(target.nodeId, classifyConnectionError(error, attemptOf(target)).reason);
  }
  return error;
}

/** True for a refusal of `StorageOpt.size` by the storage driver (as opposed to any other create error). */
export function isStorageOptUnsupported(error: unknown): boolean {
  if (statusOf(error) === undefined) return false;
  const message = error instanceof EngineRejectedError ? error.message : dockerMessage(error);
  return STORAGE_OPT_UNSUPPORTED.some((pattern) => pattern.test(message));
}

function isConnectionFailure(error: unknown): boolean {
  // Node 20 reports a failed connect to a name with several addresses as an AggregateError.
  const source = error instanceof AggregateError && !codeOf(error) ? (error.errors[0] as unknown) : error;
  return CONNECTION_CODE.test(codeOf(source));
}

function codeOf(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : '';
}

function attemptOf(target: NodeTarget): ConnectionAttempt {
  const { settings } = target;
  let where = settings.endpoint;
  let transport: ConnectionAttempt['transport'] = 'tcp';
  try {
    const address = parseEndpoint(settings.endpoint, settings.tls);
    where = describeAddress(address);
    transport = address.transport;
  } catch {
    // The pool refuses such an endpoint before any request; the text as given still names it.
  }
  return {
    target: where,
    transport,
    tls: settings.tls,
    caCertificate: Boolean(settings.ca),
    clientCertificate: Boolean(settings.cert && settings.key),
  };
}
