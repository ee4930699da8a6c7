import { existsSync, mkdtempSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { RECORDED } from '../../src/domain/catalog/nvidia-smi.recorded.ts';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { waitFor } from '../support/fixtures.ts';
import { SecondEngine, dockerd } from '../support/second-engine.ts';
import { describeWithService } from '../support/services.ts';
import { buildGpuProbeImage, ensureServiceImage } from '../support/test-image.ts';

const helperBuilt = existsSync(join(loadConfig({}).helperDir, 'linux-amd64', 'tianqi-helper'));
const canRun = Boolean(dockerd) && process.getuid?.() === 0 && helperBuilt;
const PROBE = 'tianqi-test/gpu-probe:1';

interface Node {
  id: string; dockerStatus: string; gpus: { index: number; freeMemoryGb: number }[];
  engine: { diskBytes?: number; gpuInventory?: { cards: { index: number; uuid: string; model: string; memoryGb: number; migMode: string; available: boolean }[]; driverVersion: string; cudaVersion: string; error: string | null } };
  warnings: { code: string; message: string }[];
  readiness: { code: string; ok: boolean | null; detail: string; words: { code: string; params: Record<string, string | number> }[] }[];
}
interface View { id: string; status: string; statusReason: string; containerId: string; gpuCards: { index: number }[]; error?: { code: string; message: string } }

/**
 * Card discovery through the real read path: the platform runs nvidia-smi in a short-lived
 * container given every card, on a second dockerd whose NVIDIA device driver a stand-in hook
 * registers (no GPU here); the probe image's nvidia-smi prints the recorded output of a mixed node
 * (2 × A100 80GB + 2 × RTX 4090), then, on the second read, the same node with one 4090 gone.
 */
describeWithService('root, dockerd and a tianqi-helper build', canRun, 'run as root with docker.io installed and build helper/ (npm run build:helper)', 'card discovery (nvidia-smi through the engine)', () => {
  const engine = new SecondEngine();
  const docker = () => new Dockerode({ socketPath: engine.socket });
  let t: TestApp;
  let admin: string;
  let alice: string;
  let nodeId: string;
  let image: string;
  const node = () => t.api<Node>('GET', `/api/v1/nodes/${nodeId}`, { token: admin }).then((r) => r.body);
  const spec = async (name: string, gpuModel: string, gpuCount: number, gpuMemoryGb: number) =>
    (await t.api<{ id: string }>('POST', '/api/v1/specs', { token: admin, body: { name, gpuModel, gpuCount, gpuMemoryGb, cpuCores: 1, memoryGb: 1 } })).body.id;
  const create = async (name: string, specId: string) => {
    const r = await t.api<View>('POST', '/api/v1/instances', { token: alice, body: { name, imageId: image, specId } });
    if (r.status !== 201) return r;
    return { status: 201, body: await waitFor(() => t.api<View>('GET', `/api/v1/instances/${r.body.id}`, { token: alice }).then((x) => x.body), (i) => i.status !== 'creating', 30_000) };
  };

  beforeAll(async () => {
    await engine.start({ fakeNvidia: true });
    buildGpuProbeImage(engine.socket, PROBE, RECORDED.mixed);
    const address = ensureServiceImage(engine.socket);
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000', TIANQI_GPU_PROBE_IMAGE: PROBE });
    admin = await t.login('admin', ADMIN_PASSWORD);
    await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'alice', password: 'alice-password' } });
    alice = await t.login('alice', 'alice-password');
    image = (await t.api<{ id: string }>('POST', '/api/v1/images', { token: admin, body: { name: 'busybox', address } })).body.id;
    // Declared as one 4090: the form is wrong, and discovery says so.
    const created = await t.api<Node>('POST', '/api/v1/nodes', {
      token: admin,
      body: { name: 'mixed', publicIp: '127.0.0.1', privateIp: '127.0.0.1', dockerEndpoint: `unix://${engine.socket}`, gpuModel: 'RTX 4090', gpuCount: 1, gpuMemoryGb: 24, cpuCores: 16, memoryGb: 32 },
    });
    expect(created.body.dockerStatus).toBe('connected');
    nodeId = created.body.id;
  }, 120_000);

  afterAll(async () => {
    await t?.stop();
    await engine.destroy();
  });

  it('reads every card on connect: UUID, model, memory, driver and CUDA versions; warns where the form disagrees', async () => {
    const n = await node();
    const inventory = n.engine.gpuInventory!;
    expect(inventory.cards.map((c) => [c.index, c.model, c.memoryGb, c.available])).toEqual([
      [0, 'NVIDIA A100 80GB PCIe', 80, true], [1, 'NVIDIA A100 80GB PCIe', 80, true],
      [2, 'NVIDIA GeForce RTX 4090', 24, true], [3, 'NVIDIA GeForce RTX 4090', 24, true],
    ]);
    expect([inventory.driverVersion, inventory.cudaVersion, inventory.error]).toEqual(['550.127.05', '12.4', null]);
    expect(n.gpus.map((g) => [g.index, g.freeMemoryGb])).toEqual([[0, 80], [1, 80], [2, 24], [3, 24]]);
    const mismatch = n.warnings.find((w) => w.code === 'GPU_DECLARED_MISMATCH');
    expect(mismatch?.message).toContain('1 card declared, 4 found');
    // The probe containers are gone.
    expect((await docker().listContainers({ all: true, filters: { label: ['tianqi.role=gpu-probe'] } })).length).toBe(0);
  });

  it('places by each card\'s own model on the mixed node, and asks the engine for the cards by UUID', async () => {
    const a100 = await create('big', await spec('a100', 'A100', 1, 80));
    expect(a100.body.status, a100.body.statusReason).toBe('running');
    expect(a100.body.gpuCards.map((g) => g.index)).toEqual([0]);
    const pair = await create('pair', await spec('4090x2', 'RTX 4090', 2, 24));
    expect(pair.body.gpuCards.map((g) => g.index)).toEqual([2, 3]);
    const uuids = RECORDED.mixed.split('\n').map((l) => l.split(', ')[1]);
    const devices = (await docker().getContainer(pair.body.containerId).inspect()).HostConfig.DeviceRequests?.flatMap((d) => d.DeviceIDs ?? []);
    expect(devices).toEqual([uuids[2], uuids[3]]);
    expect((await create('h100', await spec('h100', 'H100', 1, 80))).status).toBe(409);
  });

  it('shows the node\'s readiness, and places vGPU slices only where HAMi-core is', async () => {
    const checks = Object.fromEntries((await node()).readiness.map((r) => [r.code, r]));
    expect(checks.NVIDIA_RUNTIME!.ok).toBe(true);
    expect(checks.DRIVER).toMatchObject({ ok: true, detail: 'driver 550.127.05, CUDA 12.4', words: [{ code: 'R_DRIVER_CUDA', params: { driver: '550.127.05', cuda: '12.4' } }] });
    expect(checks.HAMI_CORE).toMatchObject({ ok: false, detail: '/root/HAMi-core/build/libvgpu.so missing: vGPU specs are not placed here' });
    expect(checks.HELPER!.ok).toBe(true);
    // The disk under the engine's data directory, read on the node, against the form's data disk.
    const disk = statfsSync(join(engine.dir, 'data'));
    expect((await node()).engine.diskBytes).toBe(disk.blocks * disk.bsize);
    const diskGb = Math.floor((disk.blocks * disk.bsize) / 1024 ** 3);
    expect((await t.api('PATCH', `/api/v1/nodes/${nodeId}`, { token: admin, body: { dataDiskGb: diskGb + 100 } })).status).toBe(200);
    expect((await t.api('POST', `/api/v1/nodes/${nodeId}/test`, { token: admin })).status).toBe(200);
    const capacity = (await node()).readiness.find((r) => r.code === 'CAPACITY')!;
    expect(capacity.ok).toBe(false);
    expect(capacity.detail).toContain(`; ${diskGb + 100} GB data disk declared, the engine's disk (${join(engine.dir, 'data')}) has ${diskGb}: placement would promise what is not there`);
    expect((await t.api('PATCH', `/api/v1/nodes/${nodeId}`, { token: admin, body: { dataDiskGb: null } })).status).toBe(200);
    const vgpuImage = (await t.api<{ id: string }>('POST', '/api/v1/images', { token: admin, body: { name: 'busybox-vgpu', address: ensureServiceImage(engine.socket), vgpuSupported: true } })).body.id;
    const slice = (await t.api<{ id: string }>('POST', '/api/v1/specs', { token: admin, body: { name: 'a100-20g', gpuModel: 'A100', gpuCount: 1, gpuMemoryGb: 20, vgpuSupported: true, cpuCores: 1, memoryGb: 1 } })).body.id;
    const createSlice = (name: string) => t.api<View>('POST', '/api/v1/instances', { token: alice, body: { name, imageId: vgpuImage, specId: slice } });
    const refused = await createSlice('slice-1');
    expect(refused.status).toBe(409);
    expect(refused.body.error!.message).toMatch(/HAMi-core \(libvgpu\.so\).*mixed has none there/);

    const hami = mkdtempSync(join(tmpdir(), 'tianqi-hami-'));
    writeFileSync(join(hami, 'libvgpu.so'), '');
    expect((await t.api('PATCH', `/api/v1/nodes/${nodeId}`, { token: admin, body: { hamiCoreDir: hami } })).status).toBe(200);
    expect((await t.api('POST', `/api/v1/nodes/${nodeId}/test`, { token: admin })).status).toBe(200);
    expect((await node()).readiness.find((r) => r.code === 'HAMI_CORE')!.ok).toBe(true);
    const placed = await createSlice('slice-2');
    expect(placed.status, JSON.stringify(placed.body)).toBe(201);
    expect(placed.body.gpuCards.map((g) => g.index)).toEqual([1]);
  });

  it('marks cards missing on the next read unavailable, places nothing new on them, and tells whoever holds one', async () => {
    buildGpuProbeImage(engine.socket, PROBE, RECORDED.mixed.split('\n').filter((l) => !l.startsWith('1,') && !l.startsWith('3,')).join('\n'));
    expect((await t.api('POST', `/api/v1/nodes/${nodeId}/test`, { token: admin })).status).toBe(200);
    const n = await node();
    expect(n.engine.gpuInventory!.cards.map((c) => [c.index, c.available])).toEqual([[0, true], [1, false], [2, true], [3, false]]);
    expect(n.gpus.map((g) => g.index)).toEqual([0, 2]);
    expect(n.warnings.find((w) => w.code === 'GPU_UNAVAILABLE')?.message).toMatch(/^GPU 1 \(GPU-a1a1a1a1-1111-4111-8111-111111111111\), GPU 3 \(GPU-b3b3b3b3-3333-4333-8333-333333333333\) were not seen on the last read/);
    // Card 0 is held, card 1 is gone: no A100 left.
    const refused = await create('another-a100', await spec('a100-b', 'NVIDIA A100', 1, 80));
    expect(refused.status).toBe(409);
    expect(refused.body.error!.code).toBe('NO_CAPACITY');
    // The owner of the instance on card 3 sees why.
    const pair = (await t.api<(View & { name: string })[]>('GET', '/api/v1/instances', { token: alice })).body.find((i) => i.name === 'pair')!;
    expect(pair.statusReason).toBe('GPU 3 no longer seen on the node');
    const history = (await t.api<{ summary: string }[]>('GET', `/api/v1/instances/${pair.id}/history`, { token: alice })).body.map((h) => h.summary);
    expect(history.some((l) => l.startsWith('GPU 3 (GPU-b3b3b3b3-3333-4333-8333-333333333333) no longer seen on the node'))).toBe(true);
  });

  it('keeps cards unavailable when nvidia-smi prints garbage or hangs, and says so on the node\'s page', async () => {
    buildGpuProbeImage(engine.socket, PROBE, 'NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver.');
    expect((await t.api('POST', `/api/v1/nodes/${nodeId}/test`, { token: admin })).status).toBe(200);
    let n = await node();
    expect(n.warnings.find((w) => w.code === 'GPU_READ_FAILED')?.message).toContain('nvidia-smi listed no cards: NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver.');
    expect(n.engine.gpuInventory!.cards.every((c) => !c.available)).toBe(true);
    expect(n.gpus).toEqual([]);
    expect(n.readiness.find((r) => r.code === 'DRIVER')!.ok).toBe(false);
    expect((await create('on-garbage', await spec('any-4090', 'RTX 4090', 1, 24))).status).toBe(409);

    buildGpuProbeImage(engine.socket, PROBE, RECORDED.mixed, { hang: true });
    const started = Date.now();
    expect((await t.api('POST', `/api/v1/nodes/${nodeId}/test`, { token: admin })).status).toBe(200);
    expect(Date.now() - started).toBeLessThan(40_000);
    n = await node();
    expect(n.warnings.find((w) => w.code === 'GPU_READ_FAILED')?.message).toContain('nvidia-smi did not answer within 20 s (a wedged driver?)');
    expect(n.gpus).toEqual([]);
    // The hung probe is not left behind.
    expect((await docker().listContainers({ all: true, filters: { label: ['tianqi.role=gpu-probe'] } })).length).toBe(0);
  }, 90_000);
});
