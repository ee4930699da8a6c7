import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { App } from '../src/app.ts';
import { loadConfig } from '../src/config.ts';
import { place, type NodeLedger, type ResourceRequest } from '../src/domain/instance/placement.ts';
import { createLogger } from '../src/logger.ts';
import type { InstanceView } from '../src/projections/instances.projection.ts';
import { ensureServiceImage } from '../test/support/test-image.ts';
import { percentile } from './stats.ts';
import { strictApi } from '../test/support/http-client.ts';

const socket = process.env.TIANQI_TEST_DOCKER_SOCKET ?? '/var/run/docker.sock';
const round = (n: number) => Math.round(n * 100) / 100;

/** Placement over 10,000 synthetic nodes with random load: p99 of one decision. */
export function placementBench(nodes = 10_000, decisions = 2_000) {
  let seed = 42;
  const random = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
  const ledgers: NodeLedger[] = Array.from({ length: nodes }, (_, i) => ({
    nodeId: `n${i}`, name: `node-${String(i).padStart(5, '0')}`, listed: random() > 0.05, connected: random() > 0.05,
    gpuModel: random() > 0.3 ? 'NVIDIA A100' : 'RTX 4090',
    cards: Array.from({ length: 8 }, (_, index) => {
      const r = random();
      return { index, totalMemoryGb: 80, whole: r < 0.4, slicedMemoryGb: r < 0.4 ? 0 : r < 0.7 ? Math.floor(random() * 8) * 10 : 0 };
    }),
    cpuCores: 128, memoryGb: 1024, dataDiskGb: 10_000,
    usedCpuCores: Math.floor(random() * 120), usedMemoryGb: Math.floor(random() * 1000), usedDataDiskGb: Math.floor(random() * 9000),
    hostPorts: { min: 30_000, max: 30_099, taken: new Set(Array.from({ length: Math.floor(random() * 100) }, (_, p) => 30_000 + p)) },
  }));
  const requests: ResourceRequest[] = [
    { gpuCount: 1, gpuMemoryGb: 80, vgpu: false, gpuModel: 'NVIDIA A100', cpuCores: 8, memoryGb: 64, dataDiskGb: 100 },
    { gpuCount: 4, gpuMemoryGb: 80, vgpu: false, gpuModel: 'NVIDIA A100', cpuCores: 32, memoryGb: 256, dataDiskGb: 500 },
    { gpuCount: 1, gpuMemoryGb: 20, vgpu: true, gpuModel: 'NVIDIA A100', cpuCores: 4, memoryGb: 32, dataDiskGb: 50 },
    { gpuCount: 0, gpuMemoryGb: 0, vgpu: false, gpuModel: '', cpuCores: 4, memoryGb: 8, dataDiskGb: 20 },
    { gpuCount: 1, gpuMemoryGb: 80, vgpu: false, gpuModel: 'NVIDIA A100', cpuCores: 8, memoryGb: 64, dataDiskGb: 100, publicPorts: 2 },
  ];
  // Warm-up: let the JIT compile `place` before timing, as a long-running server would have.
  for (let i = 0; i < 100; i++) place(requests[i % requests.length]!, ledgers);
  const times: number[] = [];
  let placed = 0;
  for (let i = 0; i < decisions; i++) {
    const started = performance.now();
    if (place(requests[i % requests.length]!, ledgers, i % 2 ? 'spread' : 'binpack')) placed++;
    times.push(performance.now() - started);
  }
  return { placementNodes: nodes, placementP50Ms: round(percentile(times, 50)), placementP99Ms: round(percentile(times, 99)), placementsFound: placed };
}

export async function instancesBench(): Promise<Record<string, number>> {
  const placement = placementBench();
  const image = ensureServiceImage(socket);
  const docker = new Dockerode({ socketPath: socket });
  const dataDir = mkdtempSync(join(tmpdir(), 'tianqi-bench-inst-'));
  const config = loadConfig({
    TIANQI_DATA_DIR: dataDir, TIANQI_HTTP_PORT: '0', TIANQI_SSH_PORT: '0', TIANQI_HOST: '127.0.0.1', TIANQI_LOG_LEVEL: 'warn',
    TIANQI_ADMIN_PASSWORD: 'bench-admin-password', TIANQI_MASTER_KEY: randomBytes(32).toString('base64'), TIANQI_POLL_INTERVAL_MS: '600000',
  });
  const app = new App(config, createLogger('warn'));
  await app.start();
  const url = `http://127.0.0.1:${app.httpPort}/api/v1`;
  const call = strictApi(url);
  const instances = app.readStore.collection<InstanceView>('instances');
  const until = async (id: string, ok: (i: InstanceView | null) => boolean) => {
    for (;;) {
      if (ok(await instances.get(id))) return;
      await new Promise((r) => setTimeout(r, 1));
    }
  };
  try {
    const { token } = await call<{ token: string }>('POST', '/auth/login', { username: 'admin', password: 'bench-admin-password' });
    const img = await call<{ id: string }>('POST', '/images', { name: 'busybox', address: image }, token);
    const spec = await call<{ id: string }>('POST', '/specs', { name: 'cpu', cpuCores: 1, memoryGb: 1 }, token);
    await call('POST', '/nodes', { name: 'local', publicIp: '127.0.0.1', privateIp: '127.0.0.1', dockerEndpoint: `unix://${socket}`, cpuCores: 256, memoryGb: 256 }, token);

    const rounds = 12;
    const viaApi: number[] = [];
    const raw: number[] = [];
    const ids: string[] = [];
    for (let i = 0; i < rounds; i++) {
      let started = performance.now();
      const created = await call<{ id: string }>('POST', '/instances', { name: `bench-${i}`, imageId: img.id, specId: spec.id }, token);
      await until(created.id, (v) => v?.status === 'running');
      viaApi.push(performance.now() - started);
      ids.push(created.id);

      // The same work straight through dockerode: a named volume, a container with the same limits, start.
      started = performance.now();
      const name = `bench-raw-${i}-${Date.now()}`;
      await docker.createVolume({ Name: `${name}-data` });
      const container = await docker.createContainer({
        name, Image: image, Labels: { 'managed-by': 'tianqi-bench' }, Env: ['NVIDIA_VISIBLE_DEVICES=void'],
        HostConfig: {
          NanoCpus: 1e9, Memory: 1024 ** 3, MemorySwap: 1024 ** 3, ShmSize: 512 * 1024 ** 2, RestartPolicy: { Name: 'unless-stopped' },
          Mounts: [{ Type: 'volume', Source: `${name}-data`, Target: '/data' }],
        },
      });
      await container.start();
      raw.push(performance.now() - started);
      await container.remove({ force: true });
      await docker.getVolume(`${name}-data`).remove();
    }

    // External kill → read model shows `exited`.
    const killLag: number[] = [];
    for (const id of ids) {
      const view = (await instances.get(id))!;
      const started = performance.now();
      await docker.getContainer(view.containerId!).kill();
      await until(id, (v) => v?.status === 'exited');
      killLag.push(performance.now() - started);
    }
    for (const id of ids) await call('DELETE', `/instances/${id}`, undefined, token);

    const apiP50 = percentile(viaApi, 50);
    const rawP50 = percentile(raw, 50);
    return {
      createToRunningP50Ms: round(apiP50),
      rawDockerodeCreateStartP50Ms: round(rawP50),
      createToRunningRatio: round(apiP50 / rawP50),
      killToReadModelP50Ms: round(percentile(killLag, 50)),
      killToReadModelP95Ms: round(percentile(killLag, 95)),
      ...placement,
    };
  } finally {
    await app.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}
