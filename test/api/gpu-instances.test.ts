import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { waitFor } from '../support/fixtures.ts';
import { SecondEngine, dockerd } from '../support/second-engine.ts';
import { describeWithService } from '../support/services.ts';
import { ensureServiceImage } from '../support/test-image.ts';

interface Instance {
  id: string;
  name: string;
  status: string;
  statusReason: string;
  containerId: string | null;
  containerName: string;
  gpuCards: { index: number; memoryGb: number }[];
}
interface Node {
  id: string;
  gpus: { index: number; totalMemoryGb: number; freeMemoryGb: number }[];
}
type ErrorBody = { error: { code: string; message: string; fields?: Record<string, string> } };

/**
 * GPU instances on an engine whose NVIDIA device driver a stand-in hook registers (no GPU here):
 * the engine takes and records real device requests, and the form's two 24 GB cards are the
 * node's cards (nvidia-smi cannot be read in the probe container, so discovery leaves them).
 */
describeWithService('root and dockerd', Boolean(dockerd) && process.getuid?.() === 0, 'run as root with docker.io installed', 'GPU instances on an engine with an NVIDIA device driver', () => {
  const engine = new SecondEngine();
  let t: TestApp;
  let admin: string;
  let alice: string;
  let bob: string;
  let docker: Dockerode;
  let image: { id: string };
  let vgpuImage: { id: string };
  let gpuSpec: { id: string };
  let sliceSpec: { id: string };
  let gpuNode: Node;
  // HAMi-core's directory on the node: vGPU slices are placed only where its library is (a stand-in file here).
  const hamiDir = mkdtempSync(join(tmpdir(), 'tianqi-hami-'));
  writeFileSync(join(hamiDir, 'libvgpu.so'), '');

  const get = (id: string, token = alice) => t.api<Instance>('GET', `/api/v1/instances/${id}`, { token }).then((r) => r.body);
  const create = (token: string, body: Record<string, unknown>) => t.api<Instance & ErrorBody>('POST', '/api/v1/instances', { token, body });

  beforeAll(async () => {
    await engine.start({ fakeNvidia: true });
    const address = ensureServiceImage(engine.socket);
    docker = new Dockerode({ socketPath: engine.socket });
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000' });
    admin = await t.login('admin', ADMIN_PASSWORD);
    for (const name of ['alice', 'bob']) await t.api('POST', '/api/v1/users', { token: admin, body: { username: name, password: `${name}-password` } });
    alice = await t.login('alice', 'alice-password');
    bob = await t.login('bob', 'bob-password');
    image = (await t.api<{ id: string }>('POST', '/api/v1/images', { token: admin, body: { name: 'busybox', address } })).body;
    vgpuImage = (await t.api<{ id: string }>('POST', '/api/v1/images', { token: admin, body: { name: 'busybox vgpu', address, vgpuSupported: true } })).body;
    gpuSpec = (await t.api<{ id: string }>('POST', '/api/v1/specs', { token: admin, body: { name: 'gpu-1', gpuModel: 'RTX 4090', gpuCount: 1, gpuMemoryGb: 24, cpuCores: 1, memoryGb: 1, pricePerHour: 2 } })).body;
    sliceSpec = (await t.api<{ id: string }>('POST', '/api/v1/specs', { token: admin, body: { name: 'slice-10', gpuModel: 'RTX 4090', gpuCount: 1, gpuMemoryGb: 10, vgpuSupported: true, cpuCores: 1, memoryGb: 1, pricePerHour: 1 } })).body;
    gpuNode = (await t.api<Node>('POST', '/api/v1/nodes', {
      token: admin,
      body: { name: 'gpu-node', publicIp: '127.0.0.1', privateIp: '127.0.0.1', dockerEndpoint: `unix://${engine.socket}`, gpuModel: 'RTX 4090', gpuCount: 2, gpuMemoryGb: 24, cpuCores: 64, memoryGb: 64, hamiCoreDir: hamiDir },
    })).body;
    expect(gpuNode.gpus.map((g) => g.totalMemoryGb)).toEqual([24, 24]);
  }, 120_000);

  afterAll(async () => {
    await t?.stop();
    await engine.destroy();
  });

  it('creates a GPU container with the reserved device IDs, which the engine gives it; the cards are back after delete', async () => {
    const created = await create(alice, { name: 'gpu-job', imageId: image.id, specId: gpuSpec.id });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    expect(created.body.gpuCards).toEqual([{ index: 0, memoryGb: 24 }]);
    const running = await waitFor(() => get(created.body.id), (i) => i.status !== 'creating', 60_000);
    expect(running.status, running.statusReason).toBe('running');
    const info = await docker.getContainer(created.body.containerName).inspect();
    expect(info.HostConfig.DeviceRequests).toEqual([expect.objectContaining({ Driver: 'nvidia', DeviceIDs: ['0'] })]);
    expect(info.Config.Env).not.toContain('NVIDIA_VISIBLE_DEVICES=void');
    expect((await t.api<Node>('GET', `/api/v1/nodes/${gpuNode.id}`, { token: admin })).body.gpus.map((g) => g.freeMemoryGb)).toEqual([0, 24]);
    expect((await t.api('DELETE', `/api/v1/instances/${created.body.id}`, { token: alice })).status).toBe(204);
    await waitFor(() => t.api<Node>('GET', `/api/v1/nodes/${gpuNode.id}`, { token: admin }).then((r) => r.body.gpus.map((g) => g.freeMemoryGb)), (free) => free.join() === '24,24');
  });

  it('gives a vGPU container HAMi-core, a memory limit per granted card and an SM share', async () => {
    const created = await create(alice, { name: 'slice-job', imageId: vgpuImage.id, specId: sliceSpec.id });
    expect(created.status).toBe(201);
    await waitFor(() => get(created.body.id), (i) => i.status !== 'creating');
    const info = await docker.getContainer(created.body.containerName).inspect();
    expect(info.Config.Env).toEqual(expect.arrayContaining([
      'LD_PRELOAD=/libvgpu/build/libvgpu.so',
      'CUDA_DEVICE_MEMORY_LIMIT_0=10240m',
      'CUDA_DEVICE_SM_LIMIT=42',
    ]));
    expect(info.HostConfig.Binds).toEqual(expect.arrayContaining([
      `${hamiDir}:/libvgpu/build:ro`,
      '/var/lib/tianqi-vgpu/ld.so.preload:/etc/ld.so.preload:ro',
      '/tmp/vgpulock:/tmp/vgpulock',
    ]));
    expect(info.HostConfig.Mounts).toEqual(expect.arrayContaining([expect.objectContaining({ Type: 'tmpfs', Target: '/tmp/vgpu', TmpfsOptions: { SizeBytes: 64 * 1024 ** 2 } })]));
    expect(info.HostConfig.DeviceRequests).toEqual([expect.objectContaining({ DeviceIDs: [String(created.body.gpuCards[0]!.index)] })]);
    expect((await t.api('DELETE', `/api/v1/instances/${created.body.id}`, { token: alice })).status).toBe(204);
  });

  it('shows each candidate node with its free cards and per-card free memory', async () => {
    const r = await t.api<{ name: string; cards: { index: number; freeMemoryGb: number }[] }[]>('GET', `/api/v1/placements?imageId=${vgpuImage.id}&specId=${sliceSpec.id}`, { token: alice });
    expect(r.status).toBe(200);
    expect(r.body.map((c) => c.name)).toEqual(['gpu-node']);
    expect(r.body[0]!.cards.map((c) => c.freeMemoryGb)).toEqual([24, 24]);
    const bad = await t.api<ErrorBody>('GET', `/api/v1/placements?imageId=${image.id}&specId=${sliceSpec.id}`, { token: alice });
    expect(bad.status).toBe(400);
  });

  it('accepts exactly 2 of 10 simultaneous creates of a 1-card spec on a 2-card node, never granting a card twice', async () => {
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => create(i % 2 ? alice : bob, { name: `race-${i}`, imageId: image.id, specId: gpuSpec.id })));
    const accepted = results.filter((r) => r.status === 201);
    expect(accepted).toHaveLength(2);
    expect(results.filter((r) => r.status === 409).every((r) => r.body.error.code === 'NO_CAPACITY')).toBe(true);
    expect(results.filter((r) => r.status === 409)).toHaveLength(8);
    expect(accepted.flatMap((r) => r.body.gpuCards.map((g) => g.index)).sort()).toEqual([0, 1]);
    for (const r of accepted) {
      await waitFor(() => get(r.body.id, admin), (i) => i.status !== 'creating');
      await t.api('DELETE', `/api/v1/instances/${r.body.id}`, { token: admin });
    }
  });

  it('slices by memory: 10 simultaneous 10 GB slices fit 2 per 24 GB card, 4 in all', async () => {
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => create(alice, { name: `slice-${i}`, imageId: vgpuImage.id, specId: sliceSpec.id })));
    const accepted = results.filter((r) => r.status === 201);
    expect(accepted).toHaveLength(4);
    expect(results.filter((r) => r.status === 409)).toHaveLength(6);
    const perCard = new Map<number, number>();
    for (const r of accepted) for (const g of r.body.gpuCards) perCard.set(g.index, (perCard.get(g.index) ?? 0) + g.memoryGb);
    // two 10 GB slices on each 24 GB card, never three
    expect([...perCard.entries()].sort()).toEqual([[0, 20], [1, 20]]);
  });

});
