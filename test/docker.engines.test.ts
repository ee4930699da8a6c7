import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DockerPool } from '../src/adapters/docker/docker-pool.ts';
import { DockerodeEngines } from '../src/adapters/docker/dockerode.engines.ts';
import type { ConnectionCheck, DockerConnectionSettings } from '../src/ports/docker.port.ts';
import { describeWithService } from './support/services.ts';

/**
 * DockerodeEngines.check against the engine CI provides (unix socket and mutual TLS, see
 * .ci/run), and against small local servers that fail in the ways a node's engine can.
 */

const env = process.env;
const socketPath = env.TIANQI_TEST_DOCKER_SOCKET;
const tlsHost = env.TIANQI_TEST_DOCKER_TLS_HOST;
const tlsPort = Number(env.TIANQI_TEST_DOCKER_TLS_PORT);
const tlsFiles = { ca: env.TIANQI_TEST_DOCKER_TLS_CA, cert: env.TIANQI_TEST_DOCKER_TLS_CERT, key: env.TIANQI_TEST_DOCKER_TLS_KEY };
const engineAvailable = Boolean(socketPath && tlsHost && tlsPort > 0 && tlsFiles.ca && tlsFiles.cert && tlsFiles.key);

function failure(check: ConnectionCheck): Extract<ConnectionCheck, { ok: false }> {
  if (check.ok) throw new Error(`expected the check to fail, it succeeded: ${JSON.stringify(check.facts)}`);
  return check;
}

/** Runs `check` and measures how long it took. */
async function timed(run: () => Promise<ConnectionCheck>): Promise<{ check: ConnectionCheck; ms: number }> {
  const started = Date.now();
  const check = await run();
  return { check, ms: Date.now() - started };
}

/** Listens on a free loopback port; `close` also ends the connections it accepted. */
async function listen(server: net.Server): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  server.on('connection', (socket: net.Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

describe('DockerodeEngines.check without an engine', () => {
  const engines = new DockerodeEngines(new DockerPool());
  afterAll(() => engines.close());

  it('says "refused" quickly for a closed port', async () => {
    const { port, close } = await listen(net.createServer());
    await close();
    const { check, ms } = await timed(() => engines.check({ endpoint: `tcp://127.0.0.1:${port}`, tls: false }));
    expect(failure(check)).toEqual({ ok: false, kind: 'refused', reason: `connection refused at 127.0.0.1:${port}` });
    expect(ms).toBeLessThan(5_000);
  });

  it('gives up on a peer that accepts and stays silent after 5 s, whatever timeout was asked for', async () => {
    const silent = await listen(net.createServer());
    try {
      const { check, ms } = await timed(() => engines.check({ endpoint: `tcp://127.0.0.1:${silent.port}`, tls: false }, 60_000));
      expect(failure(check)).toEqual({
        ok: false,
        kind: 'timeout',
        reason: `timed out after 5 s (no answer from 127.0.0.1:${silent.port})`,
      });
      expect(ms).toBeGreaterThanOrEqual(4_900);
      expect(ms).toBeLessThanOrEqual(5_500);
    } finally {
      await silent.close();
    }
  });

  it('keeps to a shorter timeout, also in the middle of a TLS handshake', async () => {
    const silent = await listen(net.createServer());
    try {
      const { check, ms } = await timed(() => engines.check({ endpoint: `tcp://127.0.0.1:${silent.port}`, tls: true }, 300));
      expect(failure(check)).toMatchObject({ kind: 'timeout', reason: expect.stringMatching(/^timed out after 0\.3 s/) });
      expect(ms).toBeLessThan(1_000);
    } finally {
      await silent.close();
    }
  });

  it('says "protocol" when TLS is on against a plain HTTP endpoint', async () => {
    const plain = await listen(http.createServer((_request, response) => response.end('OK')));
    try {
      const check = await engines.check({ endpoint: `tcp://127.0.0.1:${plain.port}`, tls: true });
      expect(failure(check)).toEqual({
        ok: false,
        kind: 'protocol',
        reason: `127.0.0.1:${plain.port} does not speak TLS (turn TLS off, or use the engine's TLS port)`,
      });
    } finally {
      await plain.close();
    }
  });

  it('says "protocol" when an HTTP server that is not an engine answers', async () => {
    const other = await listen(http.createServer((_request, response) => response.writeHead(404).end('no such page')));
    try {
      const check = await engines.check({ endpoint: `tcp://127.0.0.1:${other.port}`, tls: false });
      expect(failure(check)).toEqual({
        ok: false,
        kind: 'protocol',
        reason: `HTTP 404 from 127.0.0.1:${other.port}: no such page (is it a Docker engine?)`,
      });
    } finally {
      await other.close();
    }
  });

  it('says "not-found" for a missing socket and names a bad endpoint', async () => {
    const missing = join(tmpdir(), `tianqi-no-such-${process.pid}.sock`);
    expect(await engines.check({ endpoint: `unix://${missing}`, tls: false })).toEqual({
      ok: false,
      kind: 'not-found',
      reason: `no Docker socket at ${missing}`,
    });
    expect(failure(await engines.check({ endpoint: 'http://10.0.0.5:2375', tls: false }))).toMatchObject({
      kind: 'other',
      reason: expect.stringMatching(/^unsupported Docker endpoint "http:\/\/10\.0\.0\.5:2375"/),
    });
  });
});

describeWithService(
  'Docker engine',
  engineAvailable,
  'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET / TIANQI_TEST_DOCKER_TLS_*',
  'DockerodeEngines.check against a real engine',
  () => {
    const engines = new DockerodeEngines(new DockerPool());
    let scratch: string;
    let tls: DockerConnectionSettings;
    let wrongCa: string;
    /** A certificate and key the engine's CA never issued. */
    let stranger: { cert: string; key: string };

    function selfSigned(name: string): { cert: string; key: string } {
      const keyFile = join(scratch, `${name}-key.pem`);
      const certFile = join(scratch, `${name}.pem`);
      execFileSync('openssl', [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
        '-subj', `/CN=TianQi test ${name}`, '-keyout', keyFile, '-out', certFile,
      ], { stdio: 'pipe' });
      return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') };
    }

    beforeAll(() => {
      scratch = mkdtempSync(join(tmpdir(), 'tianqi-docker-engines-'));
      tls = {
        endpoint: `tcp://${tlsHost}:${tlsPort}`,
        tls: true,
        ca: readFileSync(tlsFiles.ca!, 'utf8'),
        cert: readFileSync(tlsFiles.cert!, 'utf8'),
        key: readFileSync(tlsFiles.key!, 'utf8'),
      };
      wrongCa = env.TIANQI_TEST_WRONG_CA ? readFileSync(env.TIANQI_TEST_WRONG_CA, 'utf8') : selfSigned('unrelated-ca').cert;
      stranger = selfSigned('stranger');
    });

    afterAll(async () => {
      await engines.close();
      rmSync(scratch, { recursive: true, force: true });
    });

    /** No reason may carry key material, whatever failed. */
    function expectNoKeyIn(reason: string): void {
      expect(reason).not.toMatch(/PRIVATE KEY|-----BEGIN/);
      for (const key of [tls.key!, stranger.key]) {
        const body = key.split('\n').find((line) => line.length > 40);
        expect(reason).not.toContain(body);
      }
    }

    it('reads the facts of the engine over mutual TLS', async () => {
      const check = await engines.check(tls);
      if (!check.ok) throw new Error(`TLS check failed: ${check.kind}: ${check.reason}`);
      expect(check.facts.serverVersion).not.toBe('');
      expect(check.facts.cpus).toBeGreaterThan(0);
      expect(check.facts.memoryBytes).toBeGreaterThan(0);
      expect(check.facts.kernelVersion).not.toBe('');
      expect(check.facts.operatingSystem).not.toBe('');
      expect(check.facts.architecture).not.toBe('');
      expect(check.facts.storageDriver).not.toBe('');
      expect(check.facts.dockerRootDir).toMatch(/^\//);
      expect(check.facts.runtimes).toContain('runc');
      expect(check.facts.nvidiaRuntime).toBe(false);
      expect(check.latencyMs).toBeGreaterThanOrEqual(0);
    });

    it('reads the same engine over its unix socket', async () => {
      const check = await engines.check({ endpoint: `unix://${socketPath}`, tls: false });
      if (!check.ok) throw new Error(`socket check failed: ${check.kind}: ${check.reason}`);
      expect(check.facts.serverVersion).not.toBe('');
      expect(check.facts.cpus).toBeGreaterThan(0);
    });

    it('says "certificate" when the engine\'s certificate is checked against a wrong CA', async () => {
      const check = failure(await engines.check({ ...tls, ca: wrongCa }));
      expect(check.kind).toBe('certificate');
      expect(check.reason).toMatch(/^TLS certificate rejected: .*certificate.*\(check the CA certificate\)$/);
      expectNoKeyIn(check.reason);
    });

    it('says the engine refused the client certificate when none is given', async () => {
      const check = failure(await engines.check({ endpoint: tls.endpoint, tls: true, ca: tls.ca }));
      expect(check.kind).toBe('certificate');
      expect(check.reason).toMatch(/^the engine refused the client certificate: none was given and it requires one \(TLS alert: /);
    });

    it('names the client certificate when the engine does not accept the one given', async () => {
      const check = failure(await engines.check({ ...tls, ...stranger }));
      expect(check.reason).toMatch(/client certificate/);
      // dockerd sends a TLS alert; a TLS 1.3 front such as CI's proxy may just hang up instead.
      expect(['certificate', 'other']).toContain(check.kind);
      expectNoKeyIn(check.reason);
    });

    it('says "protocol" when TLS is off against the TLS port', async () => {
      const check = failure(await engines.check({ endpoint: tls.endpoint, tls: false }));
      // dockerd answers the plain request with HTTP 400; a TLS front such as CI's proxy (used
      // when .ci/run reuses an engine) hangs up instead, and the reason then says what to try.
      if (check.kind === 'protocol') {
        expect(check.reason).toBe('the endpoint speaks HTTPS but TLS is off (turn TLS on and give the certificates)');
      } else {
        expect(check).toMatchObject({ kind: 'other', reason: expect.stringMatching(/turn TLS on\)$/) });
      }
    });

    it('pools one working client per node and rebuilds it when the settings change', async () => {
      const pool = new DockerPool();
      try {
        const viaTls = pool.client('node-1', tls);
        expect(pool.client('node-1', { ...tls })).toBe(viaTls);
        expect(String(await viaTls.ping())).toBe('OK');
        const viaSocket = pool.client('node-1', { endpoint: `unix://${socketPath}`, tls: false });
        expect(viaSocket).not.toBe(viaTls);
        expect(String(await viaSocket.ping())).toBe('OK');
        pool.forget('node-1');
        expect(pool.client('node-1', { endpoint: `unix://${socketPath}`, tls: false })).not.toBe(viaSocket);
      } finally {
        await pool.close();
      }
    });
  },
);
