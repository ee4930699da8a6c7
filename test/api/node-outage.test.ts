import Dockerode from 'dockerode';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, runningInstance, setUpLab, type Lab, waitFor } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;

/** A TCP front for the engine's unix socket that the test can cut and restore: a node outage. */
class EngineLink {
  private server?: Server;
  private readonly open = new Set<Socket>();
  port = 0;

  async up(): Promise<void> {
    this.server = createServer((client) => {
      const upstream = netConnect({ path: socketPath! });
      this.open.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.open.delete(client);
        this.open.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
    });
    await new Promise<void>((resolve) => this.server!.listen(this.port, '127.0.0.1', resolve));
    this.port = (this.server.address() as { port: number }).port;
  }

  async down(): Promise<void> {
    for (const s of this.open) s.destroy();
    this.open.clear();
    await new Promise((resolve) => this.server?.close(resolve));
  }
}

describeWithService('Docker engine', Boolean(socketPath), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'node outages and drift', () => {
  let t: TestApp;
  let lab: Lab;
  const link = new EngineLink();
  let remoteNode: string;

  beforeAll(async () => {
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '1000' });
    lab = await setUpLab(t, socketPath!);
    await link.up();
    const node = await t.api<{ id: string; dockerStatus: string }>('POST', '/api/v1/nodes', {
      token: lab.admin,
      body: { name: 'remote', publicIp: '127.0.0.1', privateIp: '127.0.0.1', dockerEndpoint: `tcp://127.0.0.1:${link.port}`, dockerTls: false, cpuCores: 8, memoryGb: 8, listed: true },
    });
    expect(node.body.dockerStatus).toBe('connected');
    remoteNode = node.body.id;
  }, 120_000);
  afterAll(async () => {
    await link.down();
    await removeContainersOf(t, socketPath);
    await t?.stop();
  });

  it('answers 503 while the node is down, marks it failed within a poll, and runs the kept request when it is back', async () => {
    const created = await t.api<{ id: string }>('POST', '/api/v1/instances', {
      token: lab.tokens.alice, body: { name: 'outage', imageId: lab.imageId, specId: lab.specId, nodeId: remoteNode },
    });
    expect(created.status).toBe(201);
    const running = await waitFor(() => t.api<{ status: string; containerId: string }>('GET', `/api/v1/instances/${created.body.id}`, { token: lab.tokens.alice }).then((r) => r.body), (i) => i.status !== 'creating');
    expect(running.status).toBe('running');

    await link.down();
    const stop = await t.api<{ error: { code: string; message: string } }>('POST', `/api/v1/instances/${created.body.id}/stop?wait=true`, { token: lab.tokens.alice });
    expect(stop.status).toBe(503);
    expect(stop.body.error.code).toBe('NODE_UNREACHABLE');
    expect(stop.body.error.message).toMatch(/refused|reach/i);
    const pending = await t.api<{ pending: string; status: string }>('GET', `/api/v1/instances/${created.body.id}`, { token: lab.tokens.alice });
    expect(pending.body).toMatchObject({ pending: 'stop', status: 'running' });
    const failedAt = Date.now();
    await waitFor(() => t.api<{ dockerStatus: string }>('GET', `/api/v1/nodes/${remoteNode}`, { token: lab.admin }).then((r) => r.body), (n) => n.dockerStatus === 'failed', 5_000);
    expect(Date.now() - failedAt).toBeLessThan(3_000);

    await link.up();
    await waitFor(() => t.api<{ dockerStatus: string }>('GET', `/api/v1/nodes/${remoteNode}`, { token: lab.admin }).then((r) => r.body), (n) => n.dockerStatus === 'connected', 5_000);
    const stopped = await waitFor(
      () => t.api<{ pending: string | null; status: string }>('GET', `/api/v1/instances/${created.body.id}`, { token: lab.tokens.alice }).then((r) => r.body),
      (i) => i.pending === null && i.status === 'exited',
      10_000,
    );
    expect(stopped.status).toBe('exited');
    const docker = new Dockerode({ socketPath });
    expect((await docker.getContainer(running.containerId).inspect()).State.Running).toBe(false);
  }, 60_000);

  it('marks an instance whose container was removed outside the platform as failed', async () => {
    const instance = await runningInstance(t, lab.tokens.bob!, lab, 'drift');
    await new Dockerode({ socketPath }).getContainer(instance.containerId).remove({ force: true });
    const vanished = await waitFor(
      () => t.api<{ status: string; statusReason: string; containerId: string | null }>('GET', `/api/v1/instances/${instance.id}`, { token: lab.tokens.bob }).then((r) => r.body),
      (i) => i.status === 'failed',
      5_000,
    );
    expect(vanished.statusReason).toMatch(/removed|gone/);
    expect(vanished.containerId).toBeNull();
    // deleting it still removes its data volume
    expect((await t.api('DELETE', `/api/v1/instances/${instance.id}`, { token: lab.tokens.bob })).status).toBe(204);
  });
});
