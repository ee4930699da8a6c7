import { existsSync } from 'node:fs';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { waitFor } from '../support/fixtures.ts';
import { SecondEngine, dockerd } from '../support/second-engine.ts';
import { describeWithService } from '../support/services.ts';
import { ensureServiceImage } from '../support/test-image.ts';

const helperBuilt = existsSync(join(loadConfig({}).helperDir, 'linux-amd64', 'tianqi-helper'));
const canRun = Boolean(dockerd) && process.getuid?.() === 0 && helperBuilt;

interface View {
  id: string; status: string; pending: string | null; containerId: string; containerName: string;
  gpuMode: 'gpu' | 'none'; gpuCards: { index: number }[]; error?: { code: string; message: string };
}

/**
 * 无卡模式 on a GPU node of our own: a second dockerd with a stand-in NVIDIA hook, so the engine
 * takes GPU device requests as it does on a real node (and records them), without a GPU. A
 * stopped GPU instance starts without its cards, keeping its files and data at the no-GPU price,
 * and its cards go back to the node; a plain start takes free cards of the same node again, or is
 * refused while others hold them.
 */
describeWithService('root, dockerd and a tianqi-helper build', canRun, 'run as root with docker.io installed and build helper/ (npm run build:helper)', '无卡模式 (no-GPU mode)', () => {
  const engine = new SecondEngine();
  const docker = () => new Dockerode({ socketPath: engine.socket });
  let t: TestApp;
  let admin: string;
  let alice: string;
  let bob: string;
  let ids: { image: string; spec: string; cpuSpec: string; node: string };

  const view = (id: string, token = alice) => t.api<View>('GET', `/api/v1/instances/${id}`, { token }).then((r) => r.body);
  const create = async (token: string, name: string) => {
    const r = await t.api<View>('POST', '/api/v1/instances', { token, body: { name, imageId: ids.image, specId: ids.spec } });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return waitFor(() => view(r.body.id, token), (i) => i.status !== 'creating', 30_000);
  };
  const devices = async (containerId: string) => {
    const info = await docker().getContainer(containerId).inspect();
    return { ids: (info.HostConfig.DeviceRequests ?? []).flatMap((d) => d.DeviceIDs ?? []), env: info.Config.Env ?? [] };
  };
  const sh = async (containerId: string, command: string): Promise<string> => {
    const exec = await docker().getContainer(containerId).exec({ Cmd: ['sh', '-c', command], AttachStdout: true, AttachStderr: true });
    const stream = await exec.start({ hijack: true, stdin: false });
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    await new Promise((resolve) => stream.on('end', resolve));
    // Multiplexed frames: 8-byte headers before each chunk of output.
    const all = Buffer.concat(chunks);
    let out = '';
    for (let o = 0; o + 8 <= all.length; o += 8 + all.readUInt32BE(o + 4)) out += all.toString('utf8', o + 8, o + 8 + all.readUInt32BE(o + 4));
    return out.trim();
  };
  const freeCards = async () => (await t.api<{ gpus: { index: number; freeMemoryGb: number }[] }>('GET', `/api/v1/nodes/${ids.node}`, { token: admin })).body.gpus.filter((g) => g.freeMemoryGb > 0).map((g) => g.index);
  const start = (id: string, query = '') => t.api<View>('POST', `/api/v1/instances/${id}/start${query}`, { token: alice });
  const stop = async (id: string) => {
    expect((await t.api('POST', `/api/v1/instances/${id}/stop?wait=true`, { token: alice })).status).toBe(200);
    return waitFor(() => view(id), (i) => i.status === 'exited' && !i.pending, 30_000);
  };

  beforeAll(async () => {
    await engine.start({ fakeNvidia: true });
    const address = ensureServiceImage(engine.socket);
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000' });
    admin = await t.login('admin', ADMIN_PASSWORD);
    for (const name of ['alice', 'bob']) await t.api('POST', '/api/v1/users', { token: admin, body: { username: name, password: `${name}-password` } });
    alice = await t.login('alice', 'alice-password');
    bob = await t.login('bob', 'bob-password');
    const image = await t.api<{ id: string }>('POST', '/api/v1/images', { token: admin, body: { name: 'busybox', address } });
    const spec = await t.api<{ id: string; noGpuPricePerHour: number | null }>('POST', '/api/v1/specs', {
      token: admin, body: { name: '4090', gpuModel: 'RTX 4090', gpuCount: 1, gpuMemoryGb: 24, cpuCores: 1, memoryGb: 1, pricePerHour: 2, noGpuPricePerHour: 0.1 },
    });
    expect(spec.body.noGpuPricePerHour).toBe(0.1);
    const cpuSpec = await t.api<{ id: string }>('POST', '/api/v1/specs', { token: admin, body: { name: 'cpu', cpuCores: 1, memoryGb: 1 } });
    const node = await t.api<{ id: string; dockerStatus: string }>('POST', '/api/v1/nodes', {
      token: admin,
      body: { name: 'gpu-box', publicIp: '127.0.0.1', privateIp: '127.0.0.1', dockerEndpoint: `unix://${engine.socket}`, gpuModel: 'RTX 4090', gpuCount: 2, gpuMemoryGb: 24, cpuCores: 16, memoryGb: 32 },
    });
    expect(node.body.dockerStatus).toBe('connected');
    ids = { image: image.body.id, spec: spec.body.id, cpuSpec: cpuSpec.body.id, node: node.body.id };
  }, 120_000);

  afterAll(async () => {
    await t?.stop();
    await engine.destroy();
  });

  it('offers the mode only on GPU specs, with a valid price', async () => {
    const bad = await t.api<{ error: { fields: Record<string, string> } }>('PATCH', `/api/v1/specs/${ids.cpuSpec}`, { token: admin, body: { noGpuPricePerHour: 0.1 } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.fields.noGpuPricePerHour).toMatch(/GPU specs only/);
    for (const price of [-1, 0.00001]) {
      expect((await t.api('PATCH', `/api/v1/specs/${ids.spec}`, { token: admin, body: { noGpuPricePerHour: price } })).status).toBe(400);
    }
  });

  it('starts a stopped GPU instance without its cards, files and data kept, cards back to the node, at the no-GPU price; back to cards when one is free', async () => {
    const train = await create(alice, 'train');
    expect(train.status).toBe('running');
    expect(train.gpuMode).toBe('gpu');
    expect((await devices(train.containerId)).ids).toEqual([String(train.gpuCards[0]!.index)]);
    await sh(train.containerId, 'echo system-disk > /root/marker && echo data-disk > /data/keep');

    const running = await start(train.id, '?gpuMode=none');
    expect(running.status).toBe(409);
    expect(running.body.error!.code).toBe('NOT_STOPPED');
    await stop(train.id);

    const noGpu = await start(train.id, '?gpuMode=none');
    expect(noGpu.status, JSON.stringify(noGpu.body)).toBe(200);
    expect(noGpu.body).toMatchObject({ status: 'running', gpuMode: 'none', gpuCards: [] });
    expect(noGpu.body.containerId).not.toBe(train.containerId);
    const without = await devices(noGpu.body.containerId);
    expect(without.ids).toEqual([]);
    expect(without.env).toContain('NVIDIA_VISIBLE_DEVICES=void');
    expect(await sh(noGpu.body.containerId, 'cat /root/marker /data/keep')).toBe('system-disk\ndata-disk');
    expect(await freeCards()).toEqual([0, 1]);
    const usage = await t.api<{ users: { instances: { instanceId: string; pricePerHour: number }[] }[] }>('GET', '/api/v1/usage', { token: alice });
    expect(usage.body.users[0]!.instances.find((i) => i.instanceId === train.id)!.pricePerHour).toBe(0.1);

    // Both cards go to somebody else meanwhile: a plain start is refused, naming why; nothing changes.
    const others = [await create(bob, 'b1'), await create(bob, 'b2')];
    expect(others.map((o) => o.status)).toEqual(['running', 'running']);
    await stop(train.id);
    const refused = await start(train.id);
    expect(refused.status).toBe(409);
    expect(refused.body.error!.code).toBe('NO_CAPACITY');
    expect(refused.body.error!.message).toMatch(/gpu-box has no free RTX 4090 card/);
    expect(await view(train.id)).toMatchObject({ status: 'exited', gpuMode: 'none', gpuCards: [] });
    // Without GPUs it still starts.
    expect((await start(train.id, '?gpuMode=none')).body).toMatchObject({ status: 'running', gpuMode: 'none' });
    await stop(train.id);

    // A card is free again: a plain start takes it, files and data still there.
    const freed = others[1]!;
    expect((await t.api('DELETE', `/api/v1/instances/${freed.id}`, { token: bob })).status).toBe(204);
    await waitFor(freeCards, (cards) => cards.length === 1, 20_000);
    const back = await start(train.id);
    expect(back.status, JSON.stringify(back.body)).toBe(200);
    expect(back.body).toMatchObject({ status: 'running', gpuMode: 'gpu', gpuCards: [{ index: freed.gpuCards[0]!.index }] });
    expect((await devices(back.body.containerId)).ids).toEqual([String(freed.gpuCards[0]!.index)]);
    expect(await sh(back.body.containerId, 'cat /root/marker /data/keep')).toBe('system-disk\ndata-disk');
    expect(await freeCards()).toEqual([]);
    const history = (await t.api<{ summary: string }[]>('GET', `/api/v1/instances/${train.id}/history`, { token: alice })).body.map((h) => h.summary);
    expect(history.some((l) => l.startsWith('no-GPU mode: the container was made again without its cards'))).toBe(true);
    expect(history.some((l) => l.startsWith(`GPU mode again: card ${freed.gpuCards[0]!.index} taken`))).toBe(true);

    // Deleting it takes the kept copies of its files along.
    const name = back.body.containerName;
    expect((await t.api('DELETE', `/api/v1/instances/${train.id}`, { token: alice })).status).toBe(204);
    expect(await docker().listImages({ filters: { reference: [`tianqi/kept-${name}:*`] } })).toEqual([]);
  }, 180_000);
});
