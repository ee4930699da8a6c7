import { describe, expect, it } from 'vitest';
import type { ConnectionAttempt } from './connection-error.ts';
import { classifyConnectionError } from './connection-error.ts';

/** The errors below are what dockerode 4 / Node 20 really threw against dockerd and small test servers. */
function nodeError(code: string | undefined, message: string, extra: Record<string, unknown> = {}): Error {
  return Object.assign(new Error(message), code === undefined ? {} : { code }, extra);
}

const tls: ConnectionAttempt = {
  target: '127.0.0.1:2376',
  transport: 'tcp',
  tls: true,
  caCertificate: true,
  clientCertificate: true,
};
const plain: ConnectionAttempt = { ...tls, target: '127.0.0.1:2375', tls: false, caCertificate: false, clientCertificate: false };
const socket: ConnectionAttempt = { ...plain, target: '/var/run/docker.sock', transport: 'unix' };

const BAD_CERTIFICATE_ALERT =
  '80ECC28F8A7F0000:error:0A000412:SSL routines:ssl3_read_bytes:sslv3 alert bad certificate:' +
  '../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 42\n';
const CERTIFICATE_REQUIRED_ALERT =
  '80FC894D277F0000:error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:' +
  '../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 116\n';

describe('classifyConnectionError', () => {
  it('names a server certificate that does not verify against the CA', () => {
    const error = nodeError('UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'unable to verify the first certificate');
    expect(classifyConnectionError(error, tls)).toEqual({
      kind: 'certificate',
      reason: 'TLS certificate rejected: unable to verify the first certificate (check the CA certificate)',
    });
    expect(classifyConnectionError(nodeError('SELF_SIGNED_CERT_IN_CHAIN', 'self-signed certificate in certificate chain'), tls))
      .toEqual({
        kind: 'certificate',
        reason: 'TLS certificate rejected: self-signed certificate in certificate chain (check the CA certificate)',
      });
    expect(classifyConnectionError(error, { ...tls, caCertificate: false }).reason).toMatch(/only public CAs were trusted/);
  });

  it('names an expired certificate and a host name the certificate does not list', () => {
    expect(classifyConnectionError(nodeError('CERT_HAS_EXPIRED', 'certificate has expired'), tls)).toMatchObject({
      kind: 'certificate',
      reason: expect.stringMatching(/has expired/),
    });
    const altname = nodeError(
      'ERR_TLS_CERT_ALTNAME_INVALID',
      "Hostname/IP does not match certificate's altnames: IP: 10.0.0.9 is not in the cert's list: 127.0.0.1",
    );
    expect(classifyConnectionError(altname, tls)).toMatchObject({
      kind: 'certificate',
      reason: expect.stringMatching(/10\.0\.0\.9 is not in the cert's list.*name or address the engine's certificate lists/),
    });
  });

  it('tells a refused client certificate from a missing one by the TLS alert', () => {
    const alert = nodeError('ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE', BAD_CERTIFICATE_ALERT, { reason: 'sslv3 alert bad certificate' });
    expect(classifyConnectionError(alert, tls)).toEqual({
      kind: 'certificate',
      reason: "the engine refused the client certificate (TLS alert: bad certificate; check that the engine's CA issued it)",
    });
    expect(classifyConnectionError(alert, { ...tls, clientCertificate: false })).toEqual({
      kind: 'certificate',
      reason: 'the engine refused the client certificate: none was given and it requires one (TLS alert: bad certificate)',
    });
    const required = nodeError('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED', CERTIFICATE_REQUIRED_ALERT);
    expect(classifyConnectionError(required, { ...tls, clientCertificate: false }).reason).toMatch(
      /refused the client certificate.*TLS alert: certificate required/,
    );
    const olderNode = nodeError('EPROTO', `write EPROTO ${BAD_CERTIFICATE_ALERT}`);
    expect(classifyConnectionError(olderNode, tls).kind).toBe('certificate');
  });

  it('reports other TLS alerts as a protocol failure', () => {
    const error = nodeError('EPROTO', 'write EPROTO 00:error:0A00042E:SSL routines:ssl3_read_bytes:tlsv1 alert protocol version:x.c:1:');
    expect(classifyConnectionError(error, tls)).toEqual({
      kind: 'protocol',
      reason: 'the TLS handshake with 127.0.0.1:2376 failed (TLS alert: protocol version)',
    });
  });

  it('names a mismatched or unreadable client certificate and key', () => {
    const mismatch = nodeError('ERR_OSSL_X509_KEY_VALUES_MISMATCH', 'error:05800074:x509 certificate routines::key values mismatch');
    expect(classifyConnectionError(mismatch, tls)).toEqual({
      kind: 'certificate',
      reason: 'the client certificate and the client key do not belong together',
    });
    const noPem = nodeError('ERR_OSSL_PEM_NO_START_LINE', 'error:0480006C:PEM routines::no start line', { reason: 'no start line' });
    expect(classifyConnectionError(noPem, tls)).toEqual({
      kind: 'certificate',
      reason: 'the CA certificate, client certificate or key could not be read (no start line); paste them as PEM',
    });
    const badKey = nodeError('ERR_OSSL_UNSUPPORTED', 'error:1E08010C:DECODER routines::unsupported', { reason: 'unsupported' });
    expect(classifyConnectionError(badKey, tls).kind).toBe('certificate');
  });

  it('says when TLS is on against a plain endpoint, and off against a TLS one', () => {
    const wrongVersion = nodeError(
      'EPROTO',
      'write EPROTO 802C2570697F0000:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/x.c:350:\n',
    );
    expect(classifyConnectionError(wrongVersion, tls)).toEqual({
      kind: 'protocol',
      reason: "127.0.0.1:2376 does not speak TLS (turn TLS off, or use the engine's TLS port)",
    });
    const http400 = nodeError(undefined, '(HTTP code 400) unexpected - Client sent an HTTP request to an HTTPS server.\n ', {
      statusCode: 400,
      json: Buffer.from('Client sent an HTTP request to an HTTPS server.\n'),
    });
    expect(classifyConnectionError(http400, plain)).toEqual({
      kind: 'protocol',
      reason: 'the endpoint speaks HTTPS but TLS is off (turn TLS on and give the certificates)',
    });
  });

  it('reports other HTTP answers with their status and body', () => {
    const notFound = nodeError(undefined, '(HTTP code 404) unexpected - not here ', { statusCode: 404, json: Buffer.from('not here') });
    expect(classifyConnectionError(notFound, plain)).toEqual({
      kind: 'protocol',
      reason: 'HTTP 404 from 127.0.0.1:2375: not here (is it a Docker engine?)',
    });
    const serverError = nodeError(undefined, '(HTTP code 500) server error - boom ', { statusCode: 500, json: { message: 'boom' } });
    expect(classifyConnectionError(serverError, plain)).toEqual({
      kind: 'other',
      reason: 'the engine at 127.0.0.1:2375 answered HTTP 500: boom',
    });
    const parse = nodeError('HPE_INVALID_CONSTANT', 'Parse Error: Expected HTTP/, RTSP/ or ICE/');
    expect(classifyConnectionError(parse, plain)).toEqual({
      kind: 'protocol',
      reason: '127.0.0.1:2375 does not answer in HTTP (is it a Docker engine?)',
    });
  });

  it('names refused, unresolvable, unreachable and timed-out TCP connections', () => {
    expect(classifyConnectionError(nodeError('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:2375'), plain)).toEqual({
      kind: 'refused',
      reason: 'connection refused at 127.0.0.1:2375',
    });
    expect(classifyConnectionError(nodeError('ENOTFOUND', 'getaddrinfo ENOTFOUND gpu-7'), plain)).toEqual({
      kind: 'not-found',
      reason: 'the host of 127.0.0.1:2375 could not be resolved (ENOTFOUND)',
    });
    expect(classifyConnectionError(nodeError('EHOSTUNREACH', 'connect EHOSTUNREACH'), plain)).toEqual({
      kind: 'other',
      reason: '127.0.0.1:2375 is unreachable (EHOSTUNREACH)',
    });
    expect(classifyConnectionError(nodeError('ETIMEDOUT', 'connect ETIMEDOUT'), plain).kind).toBe('timeout');
  });

  it('looks inside the AggregateError Node reports when every address of a host failed', () => {
    const error = new AggregateError(
      [nodeError('ECONNREFUSED', 'connect ECONNREFUSED ::1:2375'), nodeError('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:2375')],
      '',
    );
    expect(classifyConnectionError(error, plain).kind).toBe('refused');
  });

  it('names a missing, dead or forbidden Docker socket', () => {
    expect(classifyConnectionError(nodeError('ENOENT', 'connect ENOENT /var/run/docker.sock'), socket)).toEqual({
      kind: 'not-found',
      reason: 'no Docker socket at /var/run/docker.sock',
    });
    expect(classifyConnectionError(nodeError('ECONNREFUSED', 'connect ECONNREFUSED /var/run/docker.sock'), socket)).toEqual({
      kind: 'refused',
      reason: 'nothing listens on /var/run/docker.sock (is dockerd running?)',
    });
    expect(classifyConnectionError(nodeError('EACCES', 'connect EACCES /var/run/docker.sock'), socket)).toMatchObject({
      kind: 'refused',
      reason: expect.stringMatching(/^permission denied on \/var\/run\/docker\.sock/),
    });
  });

  it('reports a hang-up, hinting at the client certificate only when TLS is on', () => {
    const hangUp = nodeError('ECONNRESET', 'socket hang up');
    expect(classifyConnectionError(hangUp, plain)).toEqual({
      kind: 'other',
      reason: "127.0.0.1:2375 closed the connection without answering (ECONNRESET; if it is the engine's TLS port, turn TLS on)",
    });
    expect(classifyConnectionError(nodeError('EPIPE', 'write EPIPE'), socket).reason).toBe(
      '/var/run/docker.sock closed the connection without answering (EPIPE)',
    );
    expect(classifyConnectionError(hangUp, tls).reason).toMatch(/how an engine can refuse a client certificate/);
  });

  it('never puts PEM material into a reason, and copes with anything thrown', () => {
    const key = '-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----';
    const leaky = nodeError('ESOMETHING', `cannot use ${key} here`);
    const reason = classifyConnectionError(leaky, tls).reason;
    expect(reason).not.toMatch(/PRIVATE KEY|MIIEvQ/);
    expect(reason).toContain('[PEM redacted]');
    const cut = nodeError(undefined, 'body', { statusCode: 502, json: Buffer.from(`oops ${key.slice(0, 40)}`) });
    expect(classifyConnectionError(cut, tls).reason).not.toMatch(/PRIVATE KEY|MIIEvQ/);
    expect(classifyConnectionError('weird', tls)).toEqual({ kind: 'other', reason: '127.0.0.1:2376: weird' });
    expect(classifyConnectionError(undefined, tls).kind).toBe('other');
  });
});
