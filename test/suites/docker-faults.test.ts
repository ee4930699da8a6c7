import Dockerode from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { waitFor } from '../support/fixtures.ts';
import { SecondEngine, dockerd } from '../support/second-engine.ts';
import { describeWithService } from '../support/services.ts';
import { ensureServiceImage } from '../support/test-image.ts';

const canRun = process.env.TIANQI_LONG_TESTS === '1' && Boolean(dockerd) && process.getuid?.() === 0;

describeWithService('a second dockerd (root, TIANQI_LONG_TESTS=1)', canRun, 'run as root with dockerd installed and TIANQI_LONG_TESTS=1', 'Docker fault suite', () => {
  const engine = new SecondEngine();
  let t: TestApp;
  let admin: string;
  let user: string;
  let ids: { image: string; spec: string; node: string };
  const node = () => t.api<{ dockerStatus: string; dockerError: string | null; reservations: { instanceId: string }[] }>('GET', `/api/v1/nodes/${ids.node}`, { token: admin }).then((r) => r.body);
  const instance = (id: string) => t.api<{ status: string; pending: string | null; containerId: string | null; statusReason: string }>('GET', `/api/v1/instances/${id}`, { token: user });

  beforeAll(async () => {
    await engine.start();
    const image = ensureServiceImage(engine.socket);
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '1000' });
    admin = await t.login('admin', ADMIN_PASSWORD);
    await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'tenant', password: 'tenant-password' } });
    user = await t.login('tenant', 'tenant-password');
    const img = await t.api<{ id: string }>('POST', '/api/v1/images', { token: admin, body: { name: 'busybox', address: image } });
    const spec = await t.api<{ id: string }>('POST', '/api/v1/specs', { token: admin, body: { name: 'cpu', cpuCores: 1, memoryGb: 1 } });
    const n = await t.api<{ id: string; dockerStatus: string }>('POST', '/api/v1/nodes', {
      token: admin, body: { name: 'flaky', publicIp: '127.0.0.1', privateIp: '127.0.0.1', dockerEndpoint: `unix://${engine.socket}`, cpuCores: 8, memoryGb: 8 },
    });
    expect(n.body.dockerStatus).toBe('connected');
    ids = { image: img.body.id, spec: spec.body.id, node: n.body.id };
  }, 120_000);

  afterAll(async () => {
    await t?.stop();
    await engine.destroy();
  });

  it('survives the engine going away during create, stop and delete, and converges when it is back', async () => {
    const create = (name: string) => t.api<{ id: string; error?: { code: string } }>('POST', '/api/v1/instances', { token: user, body: { name, imageId: ids.image, specId: ids.spec, nodeId: ids.node } });
    const a = await create('keeps-running');
    await waitFor(() => instance(a.body.id).then((r) => r.body), (i) => i.status === 'running');

    // The engine stops while a create is in flight.
    const b = create('mid-create');
    await engine.stop();
    const bAnswer = await b;
    expect([201, 409]).toContain(bAnswer.status);

    const stop = await t.api<{ error: { code: string; message: string } }>('POST', `/api/v1/instances/${a.body.id}/stop?wait=true`, { token: user });
    expect([502, 503]).toContain(stop.status);
    expect(stop.body.error.message.length).toBeGreaterThan(20);
    const del = await t.api<{ error: { code: string } }>('DELETE', `/api/v1/instances/${a.body.id}`, { token: user });
    expect(del.status).toBe(503);
    expect((await instance(a.body.id)).body.pending).toBe('delete');

    // within one poll (1 s) plus the check's own time
    const failed = await waitFor(node, (n) => n.dockerStatus === 'failed', 8_000);
    expect(failed.dockerError).toMatch(/socket|refused|reach/i);
    if (bAnswer.status === 201) {
      // Whichever side of the stop its provisioning fell on, it does not hang in `creating`.
      const bState = await waitFor(() => instance(bAnswer.body.id).then((r) => r.body), (i) => i.status !== 'creating', 15_000);
      if (bState.status === 'failed') expect(bState.statusReason.length).toBeGreaterThan(10);
    }

    await engine.start();
    await waitFor(node, (n) => n.dockerStatus === 'connected', 10_000);
    // The kept delete ran when the engine came back: container and volume gone, capacity released.
    await waitFor(() => instance(a.body.id), (r) => r.status === 404, 15_000);
    const docker = new Dockerode({ socketPath: engine.socket });
    const left = await docker.listContainers({ all: true, filters: { label: [`tianqi.instance=${a.body.id}`] } });
    expect(left, JSON.stringify((await t.api('GET', `/api/v1/events?stream=instance-${a.body.id}`, { token: admin })).body)).toEqual([]);
    // Nothing half-recorded: every instance the platform still has on this node matches the engine,
    // and only live instances hold capacity.
    const live = (await t.api<{ id: string; nodeId: string; status: string; containerId: string | null }[]>('GET', '/api/v1/instances', { token: admin })).body.filter((i) => i.nodeId === ids.node);
    for (const i of live) {
      expect(i.status).not.toBe('creating');
      if (!i.containerId) continue;
      const state = await docker.getContainer(i.containerId).inspect().then((c) => (c.State.Running ? 'running' : 'exited'), () => 'missing');
      expect(i.status === 'failed' ? state !== 'running' : state === i.status, `${i.id}: platform ${i.status}, engine ${state}`).toBe(true);
    }
    const held = (await node()).reservations.map((r) => r.instanceId).sort();
    expect(held).toEqual(live.filter((i) => i.status !== 'failed').map((i) => i.id).sort());
  }, 180_000);
});
