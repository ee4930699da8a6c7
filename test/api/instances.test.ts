import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { describeWithService } from '../support/services.ts';
import { removeContainersOf, waitFor } from '../support/fixtures.ts';
import { ensureServiceImage, ensureStubbornImage } from '../support/test-image.ts';

const socket = process.env.TIANQI_TEST_DOCKER_SOCKET;

interface Instance {
  id: string;
  name: string;
  status: string;
  statusReason: string;
  containerId: string | null;
  containerName: string;
  nodeId: string;
  ownerId: string;
  gpuCards: { index: number; memoryGb: number }[];
}
interface Node {
  id: string;
  gpus: { index: number; totalMemoryGb: number; freeMemoryGb: number }[];
}
type ErrorBody = { error: { code: string; message: string; fields?: Record<string, string> } };

describeWithService('Docker engine', Boolean(socket), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'instances on a real dockerd', () => {
  let t: TestApp;
  let admin: string;
  let alice: string;
  let bob: string;
  let docker: Dockerode;
  let image: { id: string };
  let vgpuImage: { id: string };
  let cpuSpec: { id: string };
  let gpuSpec: { id: string };
  let sliceSpec: { id: string };
  let gpuNode: Node;
  // HAMi-core's directory on the node: vGPU slices are placed only where its library is (a stand-in file here).
  const hamiDir = mkdtempSync(join(tmpdir(), 'tianqi-hami-'));
  writeFileSync(join(hamiDir, 'libvgpu.so'), '');

  const get = (id: string, token = alice) => t.api<Instance>('GET', `/api/v1/instances/${id}`, { token }).then((r) => r.body);
  const create = (token: string, body: Record<string, unknown>) => t.api<Instance & ErrorBody>('POST', '/api/v1/instances', { token, body });

  beforeAll(async () => {
    const address = ensureServiceImage(socket);
    docker = new Dockerode({ socketPath: socket });
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000' });
    admin = await t.login('admin', ADMIN_PASSWORD);
    for (const name of ['alice', 'bob']) await t.api('POST', '/api/v1/users', { token: admin, body: { username: name, password: `${name}-password` } });
    alice = await t.login('alice', 'alice-password');
    bob = await t.login('bob', 'bob-password');
    image = (await t.api<{ id: string }>('POST', '/api/v1/images', { token: admin, body: { name: 'busybox', address } })).body;
    vgpuImage = (await t.api<{ id: string }>('POST', '/api/v1/images', { token: admin, body: { name: 'busybox vgpu', address, vgpuSupported: true } })).body;
    cpuSpec = (await t.api<{ id: string }>('POST', '/api/v1/specs', { token: admin, body: { name: 'cpu-1c', cpuCores: 1, memoryGb: 1, dataDiskGb: 1, systemDiskGb: 10, pricePerHour: 0.1 } })).body;
    gpuSpec = (await t.api<{ id: string }>('POST', '/api/v1/specs', { token: admin, body: { name: 'gpu-1', gpuModel: 'RTX 4090', gpuCount: 1, gpuMemoryGb: 24, cpuCores: 1, memoryGb: 1, pricePerHour: 2 } })).body;
    sliceSpec = (await t.api<{ id: string }>('POST', '/api/v1/specs', { token: admin, body: { name: 'slice-10', gpuModel: 'RTX 4090', gpuCount: 1, gpuMemoryGb: 10, vgpuSupported: true, cpuCores: 1, memoryGb: 1, pricePerHour: 1 } })).body;
    const endpoint = `unix://${socket}`;
    const cpuNode = await t.api<Node>('POST', '/api/v1/nodes', { token: admin, body: { name: 'cpu-node', publicIp: '127.0.0.1', privateIp: '127.0.0.1', dockerEndpoint: endpoint, cpuCores: 64, memoryGb: 64, dataDiskGb: 1000 } });
    expect(cpuNode.body).toMatchObject({ dockerStatus: 'connected' });
    gpuNode = (await t.api<Node>('POST', '/api/v1/nodes', {
      token: admin,
      body: { name: 'gpu-node', publicIp: '127.0.0.1', privateIp: '127.0.0.1', dockerEndpoint: endpoint, gpuModel: 'RTX 4090', gpuCount: 2, gpuMemoryGb: 24, cpuCores: 64, memoryGb: 64, hamiCoreDir: hamiDir },
    })).body;
  }, 120_000);

  afterAll(async () => {
    await removeContainersOf(t, socket);
    await t?.stop();
  });


  it('creates a CPU-only instance that reaches running, with labels, limits and a /data volume', async () => {
    const created = await create(alice, { name: 'train-1', imageId: image.id, specId: cpuSpec.id });
    expect(created.status).toBe(201);
    expect(created.body.status).toBe('creating');
    expect(created.body.containerName).toMatch(new RegExp(`^train-1-${created.body.id}-\\d{10}$`));
    const running = await waitFor(() => get(created.body.id), (i) => i.status !== 'creating');
    expect(running.status, running.statusReason).toBe('running');
    const info = await docker.getContainer(running.containerId!).inspect();
    expect(info.Name).toBe(`/${created.body.containerName}`);
    expect(info.Config.Labels).toMatchObject({ 'managed-by': 'tianqi', 'tianqi.instance': created.body.id, 'tianqi.owner': created.body.ownerId });
    expect(info.HostConfig.NanoCpus).toBe(1e9);
    expect(info.HostConfig.Memory).toBe(1024 ** 3);
    expect(info.HostConfig.ShmSize).toBe(512 * 1024 ** 2);
    expect(info.HostConfig.RestartPolicy?.Name).toBe('unless-stopped');
    expect(info.HostConfig.DeviceRequests ?? []).toEqual([]);
    expect(info.Config.Env).toContain('NVIDIA_VISIBLE_DEVICES=void');
    const data = info.Mounts.find((m) => m.Destination === '/data');
    expect(data).toMatchObject({ Type: 'volume', Name: `${created.body.containerName}-data` });
    // the platform's container limits
    expect(info.HostConfig).toMatchObject({ PidsLimit: 8192, SecurityOpt: ['no-new-privileges:true'], CapDrop: ['NET_RAW', 'MKNOD', 'AUDIT_WRITE'] });
    expect(info.HostConfig.LogConfig).toEqual({ Type: 'json-file', Config: { 'max-size': '50m', 'max-file': '3' } });
  });

  it('applies a spec\'s exceptions to the container limits (a lab that needs sudo and many threads)', async () => {
    const lab = await t.api<{ id: string; containerOverrides: unknown }>('POST', '/api/v1/specs', {
      token: admin,
      body: { name: 'cpu-sudo', cpuCores: 1, memoryGb: 1, containerOverrides: { pidsLimit: 65_536, noNewPrivileges: false } },
    });
    expect(lab.status).toBe(201);
    expect(lab.body.containerOverrides).toEqual({ pidsLimit: 65_536, noNewPrivileges: false });
    const bad = await t.api<{ error: { fields: Record<string, string> } }>('POST', '/api/v1/specs', {
      token: admin, body: { name: 'cpu-bad', cpuCores: 1, memoryGb: 1, containerOverrides: { pidsLimit: -1, privileged: true } },
    });
    expect(bad.status).toBe(400);
    const created = await create(alice, { name: 'sudo-box', imageId: image.id, specId: lab.body.id });
    const running = await waitFor(() => get(created.body.id), (i) => i.status !== 'creating');
    expect(running.status, running.statusReason).toBe('running');
    const info = await docker.getContainer(running.containerId!).inspect();
    expect(info.HostConfig.PidsLimit).toBe(65_536);
    expect(info.HostConfig.SecurityOpt ?? []).toEqual([]);
    expect(info.HostConfig.CapDrop).toEqual(['NET_RAW', 'MKNOD', 'AUDIT_WRITE']);
    expect((await t.api('DELETE', `/api/v1/instances/${created.body.id}`, { token: alice })).status).toBe(204);
  });

  it('answers a stop or restart at once (202, pending) and gives the processes the spec\'s grace period before SIGKILL', async () => {
    const stubborn = (await t.api<{ id: string }>('POST', '/api/v1/images', { token: admin, body: { name: 'ignores-term', address: ensureStubbornImage(socket) } })).body;
    const graceful = await t.api<{ id: string; stopGraceSeconds: number }>('POST', '/api/v1/specs', { token: admin, body: { name: 'cpu-grace-3', cpuCores: 1, memoryGb: 1, stopGraceSeconds: 3 } });
    expect(graceful.body.stopGraceSeconds).toBe(3);
    expect((await t.api<{ stopGraceSeconds: number }>('GET', `/api/v1/specs/${cpuSpec.id}`, { token: admin })).body.stopGraceSeconds).toBe(10);
    const bad = await t.api<ErrorBody>('POST', '/api/v1/specs', { token: admin, body: { name: 'cpu-grace-bad', cpuCores: 1, memoryGb: 1, stopGraceSeconds: 601 } });
    expect(Object.keys(bad.body.error.fields ?? {})).toEqual(['stopGraceSeconds']);
    const created = await create(alice, { name: 'stubborn', imageId: stubborn.id, specId: graceful.body.id });
    await waitFor(() => get(created.body.id), (i) => i.status === 'running' && i.containerId !== null, 30_000);

    let asked = Date.now();
    const stop = await t.api<Instance & { pending: string | null }>('POST', `/api/v1/instances/${created.body.id}/stop`, { token: alice });
    expect(Date.now() - asked).toBeLessThan(1_500);
    expect([stop.status, stop.body.status, stop.body.pending]).toEqual([202, 'running', 'stop']);
    const stopped = await waitFor(() => get(created.body.id) as Promise<Instance & { pending: string | null }>, (i) => i.status === 'exited' && i.pending === null, 20_000);
    const took = Date.now() - asked;
    expect(took).toBeGreaterThanOrEqual(2_900);
    expect(took).toBeLessThan(8_000);
    // A stop somebody asked for reads as that, not as the SIGKILL that ended the processes.
    expect(stopped.statusReason).toBe('stopped by alice');
    expect((stopped as unknown as { statusWords: unknown }).statusWords).toEqual({ code: 'STOPPED_BY', params: { user: 'alice' } });
    // A second stop while stopped: refused at once, nothing queued.
    expect((await t.api<ErrorBody>('POST', `/api/v1/instances/${created.body.id}/stop`, { token: alice })).status).toBe(409);

    expect((await t.api('POST', `/api/v1/instances/${created.body.id}/start`, { token: alice })).status).toBe(200);
    asked = Date.now();
    const restart = await t.api<Instance & { pending: string | null }>('POST', `/api/v1/instances/${created.body.id}/restart`, { token: alice });
    expect(Date.now() - asked).toBeLessThan(1_500);
    expect([restart.status, restart.body.pending]).toEqual([202, 'restart']);
    const history = () => t.api<{ summary: string }[]>('GET', `/api/v1/instances/${created.body.id}/history`, { token: alice }).then((r) => r.body.map((h) => h.summary).join('\n'));
    await waitFor(history, (h) => /restart done/.test(h), 20_000);
    expect(Date.now() - asked).toBeGreaterThanOrEqual(2_900);
    expect((await get(created.body.id)).status).toBe('running');
    expect((await t.api('DELETE', `/api/v1/instances/${created.body.id}`, { token: alice })).status).toBe(204);
  }, 60_000);

  it('stops, starts and restarts; a kill from outside shows as exited within a second', async () => {
    const [instance] = (await t.api<Instance[]>('GET', '/api/v1/instances?q=train-1', { token: alice })).body;
    const stopped = await t.api<Instance>('POST', `/api/v1/instances/${instance!.id}/stop?wait=true`, { token: alice });
    expect(stopped.status).toBe(200);
    expect(stopped.body.status).toBe('exited');
    expect((await docker.getContainer(instance!.containerId!).inspect()).State.Running).toBe(false);
    expect((await t.api('POST', `/api/v1/instances/${instance!.id}/stop?wait=true`, { token: alice })).status).toBe(409);
    const started = await t.api<Instance>('POST', `/api/v1/instances/${instance!.id}/start`, { token: alice });
    expect(started.body.status).toBe('running');
    const restarted = await t.api<Instance>('POST', `/api/v1/instances/${instance!.id}/restart?wait=true`, { token: alice });
    expect(restarted.body.status).toBe('running');

    await waitFor(() => get(instance!.id), (i) => i.status === 'running');
    const killedAt = Date.now();
    await docker.getContainer(instance!.containerId!).kill();
    const exited = await waitFor(() => get(instance!.id), (i) => i.status === 'exited', 5_000);
    expect(Date.now() - killedAt).toBeLessThan(1_000);
    expect(exited.statusReason).toMatch(/137|killed/);
  });

  it('travels in time: the instance before and after a stop, even after it was deleted', async () => {
    const created = await create(alice, { name: 'time-travel', imageId: image.id, specId: cpuSpec.id });
    await waitFor(() => get(created.body.id), (i) => i.status === 'running');
    await new Promise((r) => setTimeout(r, 20));
    const whileRunning = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 20));
    await t.api('POST', `/api/v1/instances/${created.body.id}/stop?wait=true`, { token: alice });
    const at = (time: string, token = alice) => t.api<Instance & { deleted: boolean }>('GET', `/api/v1/instances/${created.body.id}?at=${encodeURIComponent(time)}`, { token });
    expect((await at(whileRunning)).body).toMatchObject({ status: 'running', deleted: false });
    expect((await at(new Date().toISOString())).body.status).toBe('exited');
    expect((await at('2000-01-01T00:00:00Z')).status).toBe(404);
    expect((await at(whileRunning, bob)).status).toBe(404);
    await t.api('DELETE', `/api/v1/instances/${created.body.id}`, { token: alice });
    expect((await at(whileRunning)).body.status).toBe('running');
    expect((await at(new Date().toISOString())).body.deleted).toBe(true);
  });

  it('lets user B see nothing of user A’s instance: 404 on every operation', async () => {
    const [instance] = (await t.api<Instance[]>('GET', '/api/v1/instances?q=train-1', { token: alice })).body;
    const id = instance!.id;
    expect((await t.api<Instance[]>('GET', '/api/v1/instances', { token: bob })).body).toEqual([]);
    for (const [method, path] of [
      ['GET', `/instances/${id}`], ['POST', `/instances/${id}/start`], ['POST', `/instances/${id}/stop`], ['POST', `/instances/${id}/restart`],
      ['DELETE', `/instances/${id}`], ['GET', `/instances/${id}/logs`], ['GET', `/instances/${id}/stats`], ['GET', `/instances/${id}/history`], ['GET', `/instances/${id}/ssh`],
    ] as const) {
      expect((await t.api(method, `/api/v1${path}`, { token: bob })).status, `${method} ${path}`).toBe(404);
    }
    expect((await t.api('GET', `/api/v1/instances/${id}`, { token: admin })).status).toBe(200);
  });

  it('shows logs, stats and a history of who did what', async () => {
    const [instance] = (await t.api<Instance[]>('GET', '/api/v1/instances?q=train-1', { token: alice })).body;
    await t.api('POST', `/api/v1/instances/${instance!.id}/start`, { token: alice });
    const logs = await t.api<{ stream: string; text: string; time: string }[]>('GET', `/api/v1/instances/${instance!.id}/logs?tail=50`, { token: alice });
    expect(logs.status).toBe(200);
    expect(logs.body).toContainEqual(expect.objectContaining({ stream: 'stdout', text: 'ready' }));
    expect(logs.body).toContainEqual(expect.objectContaining({ stream: 'stderr', text: '显存切分' }));
    // 日志下载: the whole log as a file, one "<time> <stream> <text>" line each.
    const file = await fetch(`${t.url}/api/v1/instances/${instance!.id}/logs/download`, { headers: { authorization: `Bearer ${alice}` } });
    expect(file.status).toBe(200);
    expect(file.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(file.headers.get('content-disposition')).toMatch(/^attachment; filename="train-1-\d{14}\.log"$/);
    const text = await file.text();
    expect(text).toMatch(/^\d{4}-\d{2}-\d{2}T\S+ stdout ready$/m);
    expect(text).toMatch(/^\d{4}-\d{2}-\d{2}T\S+ stderr 显存切分$/m);
    const one = await fetch(`${t.url}/api/v1/instances/${instance!.id}/logs/download?tail=1`, { headers: { authorization: `Bearer ${alice}` } });
    expect((await one.text()).trim().split('\n')).toHaveLength(1);
    expect((await fetch(`${t.url}/api/v1/instances/${instance!.id}/logs/download`, { headers: { authorization: `Bearer ${bob}` } })).status).toBe(404);
    const stats = await t.api<{ cpuPercent: number; memoryUsageBytes: number; pids: number; gpus: unknown[] }>('GET', `/api/v1/instances/${instance!.id}/stats`, { token: alice });
    expect(stats.status).toBe(200);
    expect(stats.body.memoryUsageBytes).toBeGreaterThan(0);
    expect(stats.body.pids).toBeGreaterThanOrEqual(1);
    expect(stats.body.gpus).toEqual([]);
    const history = await t.api<{ type: string; by: string | null; summary: string }[]>('GET', `/api/v1/instances/${instance!.id}/history`, { token: alice });
    expect(history.body.map((h) => h.type)).toEqual(expect.arrayContaining(['InstanceRequested', 'InstancePlaced', 'ContainerCreated', 'InstanceOperationRequested', 'InstanceStateObserved']));
    expect(history.body[0]).toMatchObject({ by: 'alice' });
    expect(history.body.some((h) => h.summary.includes('placed on node cpu-node'))).toBe(true);

    // Words for the console: codes with parameters; internals (which loop saw it, the engine's
    // container id) for admins only.
    type Entry = { type: string; summary: string; code: string; params: Record<string, string | number> };
    const mine = (await t.api<Entry[]>('GET', `/api/v1/instances/${instance!.id}/history`, { token: alice })).body;
    const admins = (await t.api<Entry[]>('GET', `/api/v1/instances/${instance!.id}/history`, { token: admin })).body;
    expect(mine.find((h) => h.type === 'InstancePlaced')).toMatchObject({ code: 'H_PLACED', params: { node: 'cpu-node' } });
    expect(mine.find((h) => h.type === 'InstanceRequested')).toMatchObject({ code: 'H_REQUESTED', params: { name: 'train-1' } });
    expect(mine.filter((h) => h.type === 'InstanceOperationRequested').map((h) => h.code)).toContain('H_STOP_REQUESTED_BY');
    expect(mine.find((h) => h.code === 'H_STOPPED_BY')?.params).toEqual({ user: 'alice' });
    for (const entry of mine) {
      expect(entry.summary, entry.type).not.toMatch(/seen by|storage driver|^container [0-9a-f]{12}/);
      expect(entry.params, entry.type).not.toHaveProperty('source');
    }
    expect(admins.some((h) => /\(seen by (events|operation|provisioning|reconcile)\)$/.test(h.summary))).toBe(true);
    expect(admins.some((h) => h.code === 'H_RUNNING_SEEN' && typeof h.params.source === 'string')).toBe(true);
  });

  it('deletes an instance: container and data volume gone, capacity back', async () => {
    const [instance] = (await t.api<Instance[]>('GET', '/api/v1/instances?q=train-1', { token: alice })).body;
    expect((await t.api('DELETE', `/api/v1/instances/${instance!.id}`, { token: alice })).status).toBe(204);
    await expect(docker.getContainer(instance!.containerId!).inspect()).rejects.toMatchObject({ statusCode: 404 });
    await expect(docker.getVolume(`${instance!.containerName}-data`).inspect()).rejects.toMatchObject({ statusCode: 404 });
    expect((await t.api('GET', `/api/v1/instances/${instance!.id}`, { token: alice })).status).toBe(404);
    // the name is free again
    expect((await create(alice, { name: 'train-1', imageId: image.id, specId: cpuSpec.id })).status).toBe(201);
  });

  it('places no GPU instance on a node whose engine has no NVIDIA device driver, and says so on the node and in the 409', async () => {
    const node = (await t.api<Node & { readiness: { code: string; ok: boolean | null; detail: string }[]; engine: { gpuInventory?: { noDeviceDriver?: boolean; error: string | null } } }>('GET', `/api/v1/nodes/${gpuNode.id}`, { token: admin })).body;
    expect(node.gpus).toEqual([]);
    expect(node.engine.gpuInventory).toMatchObject({ noDeviceDriver: true, error: 'the engine has no NVIDIA device driver (is the NVIDIA container toolkit installed?)' });
    expect(node.readiness.find((r) => r.code === 'NVIDIA_RUNTIME')!.ok).toBe(false);
    const before = await t.app.eventStore.headPosition();
    for (const specId of [gpuSpec.id, sliceSpec.id]) {
      const refused = await create(alice, { name: 'gpu-job', imageId: specId === sliceSpec.id ? vgpuImage.id : image.id, specId });
      expect([refused.status, refused.body.error.code]).toEqual([409, 'NO_CAPACITY']);
      expect(refused.body.error.message).toBe('No node can take this GPU spec now: the Docker engine of gpu-node has no NVIDIA device driver, so no container there can be given a card (an administrator installs the NVIDIA container toolkit on the node).');
    }
    expect(await t.app.eventStore.headPosition()).toBe(before);
    expect((await t.api<unknown[]>('GET', `/api/v1/placements?imageId=${image.id}&specId=${gpuSpec.id}`, { token: alice })).body).toEqual([]);
  });

  it('refuses to delete the image, spec or node of a live instance (409 IN_USE), and allows unlisting them', async () => {
    const live = await create(alice, { name: 'in-use', imageId: image.id, specId: cpuSpec.id });
    const view = await waitFor(() => get(live.body.id), (i) => i.status !== 'creating');
    for (const path of [`/images/${image.id}`, `/specs/${cpuSpec.id}`, `/nodes/${view.nodeId}`]) {
      const r = await t.api<ErrorBody>('DELETE', `/api/v1${path}`, { token: admin });
      expect(r.status, path).toBe(409);
      expect(r.body.error.code).toBe('IN_USE');
    }
    expect((await t.api('PATCH', `/api/v1/images/${image.id}`, { token: admin, body: { listed: false } })).status).toBe(200);
    const hidden = await create(bob, { name: 'after-unlist', imageId: image.id, specId: cpuSpec.id });
    expect(hidden.status).toBe(400);
    await t.api('PATCH', `/api/v1/images/${image.id}`, { token: admin, body: { listed: true } });
    expect((await t.api('DELETE', `/api/v1/instances/${live.body.id}`, { token: alice })).status).toBe(204);
  });

  it('answers 409 NO_CAPACITY with nothing appended when no node fits, and 400 for a bad name', async () => {
    const huge = await t.api<{ id: string }>('POST', '/api/v1/specs', { token: admin, body: { name: 'cpu-128c', cpuCores: 128, memoryGb: 1 } });
    const before = await t.app.eventStore.headPosition();
    const none = await create(alice, { name: 'too-big', imageId: image.id, specId: huge.body.id });
    expect(none.status).toBe(409);
    expect(none.body.error.code).toBe('NO_CAPACITY');
    expect(await t.app.eventStore.headPosition()).toBe(before);
    // Docker takes container and volume names that start with a letter or digit only: '-abc' would fail later, at the engine
    for (const name of ['has space', '中文', '', 'a'.repeat(64), 'semi;colon', '-abc', '_abc']) {
      const r = await create(alice, { name, imageId: image.id, specId: cpuSpec.id });
      expect(r.status, name).toBe(400);
      expect(r.body.error.fields).toHaveProperty('name');
    }
    const owner = await create(alice, { name: 'x', imageId: image.id, specId: cpuSpec.id, ownerId: 'someone-else' });
    expect(owner.body.error.fields).toHaveProperty('ownerId');
  });
});
