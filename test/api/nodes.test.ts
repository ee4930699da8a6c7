import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { describeWithService } from '../support/services.ts';
import { freePort } from '../support/ports.ts';

const env = process.env;
const tlsReady = Boolean(env.TIANQI_TEST_DOCKER_TLS_HOST && env.TIANQI_TEST_DOCKER_TLS_CA && env.TIANQI_TEST_DOCKER_TLS_CERT && env.TIANQI_TEST_DOCKER_TLS_KEY && env.TIANQI_TEST_WRONG_CA && env.TIANQI_TEST_DOCKER_SOCKET);

interface Node {
  id: string;
  name: string;
  dockerStatus: string;
  dockerError: string | null;
  dockerCheckedAt: string | null;
  hasTlsKey: boolean;
  hasSshPassword: boolean;
  engine: { serverVersion: string; cpus: number; memoryBytes: number; kernelVersion: string; operatingSystem: string; nvidiaRuntime: boolean } | null;
  capacity: { cpuCores: number | null; memoryGb: number | null; dataDiskGb: number | null };
  gpus: { index: number; totalMemoryGb: number; freeMemoryGb: number }[];
  hamiCoreDir: string;
  dockerEndpoint: string;
}
type ErrorBody = { error: { code: string; fields?: Record<string, string> } };

describeWithService('Docker engine', tlsReady, 'start dockerd with TLS (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET and TIANQI_TEST_DOCKER_TLS_*', 'catalog: compute nodes against a real dockerd', () => {
  let t: TestApp;
  let admin: string;
  let user: string;
  const read = (path: string | undefined) => readFileSync(path!, 'utf8');
  const tls = () => ({
    dockerEndpoint: `tcp://${env.TIANQI_TEST_DOCKER_TLS_HOST}:${env.TIANQI_TEST_DOCKER_TLS_PORT ?? 2376}`,
    dockerTls: true,
    tlsCa: read(env.TIANQI_TEST_DOCKER_TLS_CA),
    tlsCert: read(env.TIANQI_TEST_DOCKER_TLS_CERT),
    tlsKey: read(env.TIANQI_TEST_DOCKER_TLS_KEY),
  });
  const sshPassword = 'node-ssh-secret-Z9';
  const base = { publicIp: '203.0.113.7', privateIp: '127.0.0.1', gpuModel: 'NVIDIA A100', gpuCount: 2, gpuMemoryGb: 80, sshPassword };

  beforeAll(async () => {
    t = await startTestApp();
    admin = await t.login('admin', ADMIN_PASSWORD);
    await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'tenant', password: 'tenant-password' } });
    user = await t.login('tenant', 'tenant-password');
  });
  afterAll(() => t?.stop());

  it('connects a TLS node with the generated certificates and records the engine facts', async () => {
    const r = await t.api<Node>('POST', '/api/v1/nodes', { token: admin, body: { name: 'gpu-tls', ...base, ...tls() } });
    expect(r.status).toBe(201);
    expect(r.body).toMatchObject({ dockerStatus: 'connected', dockerError: null, hasTlsKey: true, hasSshPassword: true, hamiCoreDir: '/root/HAMi-core/build' });
    expect(r.body.dockerCheckedAt).not.toBeNull();
    expect(r.body.engine!.serverVersion).not.toBe('');
    expect(r.body.engine!.cpus).toBeGreaterThan(0);
    expect(r.body.engine!.memoryBytes).toBeGreaterThan(0);
    expect(r.body.engine!.kernelVersion).not.toBe('');
    expect(r.body.engine!.nvidiaRuntime).toBe(false);
    // capacity from the engine's report where the form left it empty; the form's two cards are not
    // offered: this engine has no NVIDIA device driver to give a container one
    expect(r.body.capacity.cpuCores).toBe(r.body.engine!.cpus);
    expect(r.body.gpus).toEqual([]);
    expect((r.body.engine as { gpuInventory?: { noDeviceDriver?: boolean } }).gpuInventory?.noDeviceDriver).toBe(true);
    expect(JSON.stringify(r.body)).not.toMatch(/PRIVATE KEY|tlsKey"|sshPassword"|node-ssh-secret/);
  });

  it('records a wrong CA as failed, with a reason that names the certificate, and still saves the node', async () => {
    const r = await t.api<Node>('POST', '/api/v1/nodes', { token: admin, body: { name: 'gpu-wrong-ca', ...base, ...tls(), tlsCa: read(env.TIANQI_TEST_WRONG_CA) } });
    expect(r.status).toBe(201);
    expect(r.body.dockerStatus).toBe('failed');
    expect(r.body.dockerError).toMatch(/certificate/i);
    expect((await t.api('GET', `/api/v1/nodes/${r.body.id}`, { token: admin })).status).toBe(200);
  });

  it('records a closed port as failed within 5 s', async () => {
    const port = await freePort();
    const started = Date.now();
    const r = await t.api<Node>('POST', '/api/v1/nodes', {
      token: admin,
      body: { name: 'gpu-closed', ...base, dockerEndpoint: `tcp://127.0.0.1:${port}`, dockerTls: false },
    });
    expect(Date.now() - started).toBeLessThan(5_500);
    expect(r.body).toMatchObject({ dockerStatus: 'failed' });
    expect(r.body.dockerError).toMatch(/refused/i);
    // plain TCP to an engine is root on the node for anyone on the way: said on the node
    expect((r.body as unknown as { warnings: { code: string }[] }).warnings.map((w) => w.code)).toEqual(['DOCKER_WITHOUT_TLS']);
  });

  it('connects a unix-socket node, and re-tests on demand and when the endpoint changes', async () => {
    const r = await t.api<Node>('POST', '/api/v1/nodes', {
      token: admin,
      body: { name: 'local', publicIp: '127.0.0.1', privateIp: '127.0.0.1', dockerEndpoint: `unix://${env.TIANQI_TEST_DOCKER_SOCKET}`, cpuCores: 2 },
    });
    expect(r.body).toMatchObject({ dockerStatus: 'connected', gpus: [], capacity: { cpuCores: 2 }, warnings: [] });
    const moved = await t.api<Node>('PATCH', `/api/v1/nodes/${r.body.id}`, { token: admin, body: { dockerEndpoint: 'unix:///nonexistent/docker.sock' } });
    expect(moved.body.dockerStatus).toBe('failed');
    const back = await t.api<Node>('PATCH', `/api/v1/nodes/${r.body.id}`, { token: admin, body: { dockerEndpoint: `unix://${env.TIANQI_TEST_DOCKER_SOCKET}` } });
    expect(back.body.dockerStatus).toBe('connected');
    const tested = await t.api<Node>('POST', `/api/v1/nodes/${r.body.id}/test`, { token: admin });
    expect(tested.status).toBe(200);
    expect(tested.body.dockerCheckedAt! >= back.body.dockerCheckedAt!).toBe(true);
  });

  it('answers bad input for each node field with 400 naming the field, and saves nothing', async () => {
    const before = await t.app.eventStore.headPosition();
    const good = { name: 'bad-input', ...base, ...tls() };
    const otherKey = read(env.TIANQI_TEST_DOCKER_TLS_CA!.replace('ca.pem', 'server-key.pem'));
    const cases: [Record<string, unknown>, string][] = [
      [{ ...good, name: '' }, 'name'],
      [{ ...good, publicIp: 'not-an-ip' }, 'publicIp'],
      [{ ...good, privateIp: undefined }, 'privateIp'],
      [{ ...good, sshPort: 70_000 }, 'sshPort'],
      [{ ...good, dockerEndpoint: 'http://127.0.0.1:2376' }, 'dockerEndpoint'],
      [{ ...good, tlsCa: 'not a pem' }, 'tlsCa'],
      [{ ...good, tlsCa: read(env.TIANQI_TEST_DOCKER_TLS_CERT) }, 'tlsCa'],
      [{ ...good, tlsCert: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----' }, 'tlsCert'],
      [{ ...good, tlsKey: 'garbage' }, 'tlsKey'],
      [{ ...good, tlsKey: otherKey }, 'tlsKey'],
      [{ ...good, tlsKey: undefined }, 'tlsKey'],
      [{ ...good, hamiCoreDir: 'relative/dir' }, 'hamiCoreDir'],
      [{ ...good, gpuModel: '' }, 'gpuModel'],
      [{ ...good, gpuCount: -1 }, 'gpuCount'],
      [{ ...good, cpuCores: 1.5 }, 'cpuCores'],
      [{ ...good, dockerTls: 'yes' }, 'dockerTls'],
      [{ ...good, secretSauce: 1 }, 'secretSauce'],
    ];
    for (const [body, field] of cases) {
      const r = await t.api<ErrorBody>('POST', '/api/v1/nodes', { token: admin, body });
      expect(r.status, field).toBe(400);
      expect(r.body.error.fields, field).toHaveProperty(field);
      expect(JSON.stringify(r.body)).not.toContain('PRIVATE KEY');
    }
    expect(await t.app.eventStore.headPosition()).toBe(before);
  });

  it('refuses a second node with the same name', async () => {
    const r = await t.api<ErrorBody>('POST', '/api/v1/nodes', { token: admin, body: { name: 'GPU-TLS', ...base, ...tls() } });
    expect(r.status).toBe(400);
    expect(r.body.error.fields).toEqual({ name: 'is taken by another node' });
  });

  it('keeps nodes from users entirely', async () => {
    const nodes = (await t.api<Node[]>('GET', '/api/v1/nodes', { token: admin })).body;
    expect(nodes.map((n) => n.name)).toEqual(['gpu-closed', 'gpu-tls', 'gpu-wrong-ca', 'local']);
    expect((await t.api('GET', '/api/v1/nodes', { token: user })).status).toBe(403);
    expect((await t.api('GET', `/api/v1/nodes/${nodes[0]!.id}`, { token: user })).status).toBe(403);
    expect((await t.api('POST', '/api/v1/nodes', { token: user, body: { name: 'x', ...base } })).status).toBe(403);
    expect((await t.api('POST', `/api/v1/nodes/${nodes[0]!.id}/test`, { token: user })).status).toBe(403);
    expect((await t.api('DELETE', `/api/v1/nodes/${nodes[0]!.id}`, { token: user })).status).toBe(403);
  });

  it('stores secrets only as ciphertext: not in the event log, any response or any log line', async () => {
    const key = tls().tlsKey;
    const keyBody = key.split('\n').find((l) => l.length > 40)!;
    const events = await t.app.eventStore.readAll({ limit: 10_000 });
    const log = JSON.stringify(events);
    expect(log).not.toContain(keyBody);
    expect(log).not.toContain(sshPassword);
    expect(log).toContain('tlsKeySealed');
    for (const n of (await t.api<Node[]>('GET', '/api/v1/nodes', { token: admin })).body) {
      expect(JSON.stringify(n)).not.toMatch(/Sealed|PRIVATE KEY|node-ssh-secret/);
    }
    const lines = t.logs.join('');
    expect(lines).not.toContain(keyBody);
    expect(lines).not.toContain(sshPassword);
  });

  it('replaces and clears write-only secrets', async () => {
    const node = (await t.api<Node[]>('GET', '/api/v1/nodes?q=gpu-tls', { token: admin })).body[0]!;
    const cleared = await t.api<Node>('PATCH', `/api/v1/nodes/${node.id}`, { token: admin, body: { sshPassword: '' } });
    expect(cleared.body.hasSshPassword).toBe(false);
    const set = await t.api<Node>('PATCH', `/api/v1/nodes/${node.id}`, { token: admin, body: { sshPassword: 'another-secret' } });
    expect(set.body.hasSshPassword).toBe(true);
    expect(set.body.dockerStatus).toBe('connected');
  });

  it('deletes a node', async () => {
    const node = (await t.api<Node[]>('GET', '/api/v1/nodes?q=closed', { token: admin })).body[0]!;
    expect((await t.api('DELETE', `/api/v1/nodes/${node.id}`, { token: admin })).status).toBe(204);
    expect((await t.api('GET', `/api/v1/nodes/${node.id}`, { token: admin })).status).toBe(404);
  });
});
