import { describe, expect, it } from 'vitest';
import type { NodeTarget } from '../../ports/container-runtime.port.ts';
import { EngineRejectedError, EngineUnavailableError } from '../../ports/container-runtime.port.ts';
import { dockerMessage, isStorageOptUnsupported, statusOf, toRuntimeError } from './runtime-errors.ts';

const tcp: NodeTarget = { nodeId: 'node-1', settings: { endpoint: 'tcp://10.0.0.5:2376', tls: true, ca: 'ca', cert: 'c', key: 'k' } };
const unix: NodeTarget = { nodeId: 'node-2', settings: { endpoint: 'unix:///var/run/docker.sock', tls: false } };

/** What docker-modem rejects with when the engine answers with a status it does not expect. */
function modemError(statusCode: number, reason: string, json: unknown): Error {
  const cause = typeof json === 'object' && json !== null && !Buffer.isBuffer(json) ? (json as { message: string }).message : String(json);
  return Object.assign(new Error(`(HTTP code ${statusCode}) ${reason} - ${cause} `), { statusCode, reason, json });
}

function systemError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

function unavailable(error: unknown): EngineUnavailableError {
  expect(error).toBeInstanceOf(EngineUnavailableError);
  return error as EngineUnavailableError;
}

function rejected(error: unknown): EngineRejectedError {
  expect(error).toBeInstanceOf(EngineRejectedError);
  return error as EngineRejectedError;
}

describe('dockerMessage', () => {
  it("takes the body's message verbatim", () => {
    const error = modemError(500, 'server error', { message: 'could not select device driver "nvidia" with capabilities: [[gpu]]' });
    expect(dockerMessage(error)).toBe('could not select device driver "nvidia" with capabilities: [[gpu]]');
  });

  it('takes the message out of docker-modem’s text for a streaming request, which keeps no body', () => {
    const message = 'Get "https://registry.invalid/v2/": dial tcp: lookup registry.invalid: no such host';
    const error = Object.assign(new Error(`(HTTP code 500) server error - ${message} `), { statusCode: 500, reason: 'server error', json: null });
    expect(dockerMessage(error)).toBe(message);
  });

  it('takes a body that is not JSON as text, and the reason when there is no body', () => {
    expect(dockerMessage(modemError(502, 'unexpected', Buffer.from('Bad Gateway\n')))).toBe('Bad Gateway');
    expect(dockerMessage(modemError(304, 'container already started', Buffer.alloc(0)))).toBe('container already started');
  });
});

describe('toRuntimeError', () => {
  it('turns an answer with a status into EngineRejectedError with Docker’s message', () => {
    const error = rejected(toRuntimeError(modemError(404, 'no such container', { message: 'No such container: abc' }), tcp));
    expect(error.statusCode).toBe(404);
    expect(error.message).toBe('No such container: abc');
  });

  it('turns a refused connection into EngineUnavailableError naming the address', () => {
    const error = unavailable(toRuntimeError(systemError('ECONNREFUSED', 'connect ECONNREFUSED 10.0.0.5:2376'), tcp));
    expect(error.nodeId).toBe('node-1');
    expect(error.message).toBe('connection refused at 10.0.0.5:2376');
  });

  it('says there is no socket for ENOENT on a unix endpoint', () => {
    const error = unavailable(toRuntimeError(systemError('ENOENT', 'connect ENOENT /var/run/docker.sock'), unix));
    expect(error.message).toBe('no Docker socket at /var/run/docker.sock');
  });

  it('treats a hang-up (also how docker-modem ends a request it timed out) and ETIMEDOUT as unavailable', () => {
    expect(unavailable(toRuntimeError(systemError('ECONNRESET', 'socket hang up'), tcp)).message).toMatch(
      /^10\.0\.0\.5:2376 closed the connection without answering \(ECONNRESET/,
    );
    expect(unavailable(toRuntimeError(systemError('ETIMEDOUT', 'connect ETIMEDOUT 10.0.0.5:2376'), tcp)).message).toBe(
      'connecting to 10.0.0.5:2376 timed out',
    );
  });

  it('treats TLS failures as unavailable, with the reason the classifier gives', () => {
    const error = unavailable(toRuntimeError(systemError('SELF_SIGNED_CERT_IN_CHAIN', 'self-signed certificate in certificate chain'), tcp));
    expect(error.message).toMatch(/^TLS certificate rejected: self-signed certificate in certificate chain/);
    const alert = systemError('ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE', 'error:0A000412:SSL routines::sslv3 alert bad certificate');
    expect(unavailable(toRuntimeError(alert, tcp)).message).toMatch(/refused the client certificate/);
  });

  it('reads the first error of an AggregateError (several addresses tried)', () => {
    const error = new AggregateError([systemError('ECONNREFUSED', 'connect ECONNREFUSED ::1:2375'), systemError('ECONNREFUSED', 'x')], '');
    expect(unavailable(toRuntimeError(error, tcp)).message).toBe('connection refused at 10.0.0.5:2376');
  });

  it('leaves programming errors and the port’s own errors as they are', () => {
    const bug = new TypeError("Cannot read properties of undefined (reading 'Id')");
    expect(toRuntimeError(bug, tcp)).toBe(bug);
    const invalidArg = systemError('ERR_INVALID_ARG_TYPE', 'The "path" argument must be of type string');
    expect(toRuntimeError(invalidArg, tcp)).toBe(invalidArg);
    const own = new EngineRejectedError(409, 'conflict');
    expect(toRuntimeError(own, tcp)).toBe(own);
  });
});

describe('statusOf', () => {
  it('reads the status of an engine answer, also once mapped', () => {
    expect(statusOf(modemError(304, 'container already stopped', Buffer.alloc(0)))).toBe(304);
    expect(statusOf(new EngineRejectedError(404, 'x'))).toBe(404);
    expect(statusOf(systemError('ECONNREFUSED', 'x'))).toBeUndefined();
    expect(statusOf(null)).toBeUndefined();
  });
});

describe('isStorageOptUnsupported', () => {
  it.each([
    "--storage-opt is supported only for overlay over xfs with 'pquota' mount option",
    'Filesystem does not support, or has not enabled quotas',
    'Storage opt size not supported',
    'quota size requested but no quota support',
  ])('recognises %j', (message) => {
    expect(isStorageOptUnsupported(modemError(500, 'server error', { message }))).toBe(true);
    expect(isStorageOptUnsupported(new EngineRejectedError(500, message))).toBe(true);
  });

  it('does not take other create failures for it', () => {
    expect(isStorageOptUnsupported(modemError(404, 'no such image', { message: 'No such image: tianqi/x:1' }))).toBe(false);
    expect(isStorageOptUnsupported(modemError(409, 'conflict', { message: 'Conflict. The container name "/a" is already in use' }))).toBe(false);
    expect(isStorageOptUnsupported(systemError('ECONNRESET', 'socket hang up'))).toBe(false);
  });
});
