import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { expect, it } from 'vitest';
import { describeWithService } from './support/services.ts';

/**
 * Checks the Docker engine that CI (`.ci/run`) provides: the unix socket and the mutual-TLS TCP
 * endpoint both answer `GET /_ping`, and the TLS endpoint really verifies both sides.
 */

const env = process.env;
const socketPath = env.TIANQI_TEST_DOCKER_SOCKET;
const tlsHost = env.TIANQI_TEST_DOCKER_TLS_HOST;
const tlsPort = Number(env.TIANQI_TEST_DOCKER_TLS_PORT);
const tlsCa = env.TIANQI_TEST_DOCKER_TLS_CA;
const tlsCert = env.TIANQI_TEST_DOCKER_TLS_CERT;
const tlsKey = env.TIANQI_TEST_DOCKER_TLS_KEY;
const wrongCa = env.TIANQI_TEST_WRONG_CA;

const socketAvailable = Boolean(socketPath);
const tlsAvailable = Boolean(tlsHost && tlsPort > 0 && tlsCa && tlsCert && tlsKey);

const HOW_TO_START =
  'run `bash .ci/run` (starts dockerd with a TLS listener), or start dockerd yourself and set ' +
  'TIANQI_TEST_DOCKER_SOCKET, TIANQI_TEST_DOCKER_TLS_HOST/_PORT/_CA/_CERT/_KEY and TIANQI_TEST_WRONG_CA';

const REQUEST_TIMEOUT_MS = 10_000;

interface Reply {
  status: number;
  body: string;
}

/** One request, no keep-alive agent, no TLS session reuse: each call does a fresh handshake. */
function request(
  transport: typeof http | typeof https,
  options: http.RequestOptions & https.RequestOptions,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = transport.request({ method: 'GET', agent: false, ...options }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** The error a request fails with; a request that gets an answer fails the test. */
async function failureOf(pending: Promise<Reply>): Promise<NodeJS.ErrnoException> {
  let reply: Reply;
  try {
    reply = await pending;
  } catch (error) {
    expect(error).toBeInstanceOf(Error);
    return error as NodeJS.ErrnoException;
  }
  throw new Error(`expected the TLS handshake to fail, got HTTP ${reply.status} ${JSON.stringify(reply.body)}`);
}

function tlsOptions(ca: string): https.RequestOptions {
  return {
    host: tlsHost,
    port: tlsPort,
    path: '/_ping',
    ca: readFileSync(ca),
    cert: readFileSync(tlsCert!),
    key: readFileSync(tlsKey!),
  };
}

describeWithService('dockerd', socketAvailable, HOW_TO_START, 'Docker engine over the unix socket', () => {
  it('answers GET /_ping with OK', async () => {
    const reply = await request(http, { socketPath, path: '/_ping', host: 'localhost' });
    expect(reply).toEqual({ status: 200, body: 'OK' });
  });
});

describeWithService('dockerd TLS endpoint', tlsAvailable, HOW_TO_START, 'Docker engine over mutual TLS', () => {
  it('answers GET /_ping with OK to a client holding a certificate of the CI CA', async () => {
    const reply = await request(https, tlsOptions(tlsCa!));
    expect(reply).toEqual({ status: 200, body: 'OK' });
  });

  it('refuses a client that presents no certificate', async () => {
    const { cert: _cert, key: _key, ...withoutClientCert } = tlsOptions(tlsCa!);
    const error = await failureOf(request(https, withoutClientCert));
    // The server ends the handshake with an alert (or drops the connection), it does not answer.
    expect(error.code, error.message).toMatch(/SSL|ALERT|ECONNRESET|EPIPE/);
  });
});

describeWithService(
  'dockerd TLS endpoint and a wrong CA',
  tlsAvailable && Boolean(wrongCa),
  HOW_TO_START,
  'Docker engine over mutual TLS, checked against an unrelated CA',
  () => {
    it('fails the TLS handshake when the server certificate is checked against the wrong CA', async () => {
      const error = await failureOf(request(https, tlsOptions(wrongCa!)));
      // A certificate-verification error (e.g. UNABLE_TO_VERIFY_LEAF_SIGNATURE), not a refused connection.
      expect(error.code, error.message).toMatch(/CERT|VERIFY|SIGNATURE|ISSUER/);
    });
  },
);
