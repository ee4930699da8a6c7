import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { DockerPool } from '../src/adapters/docker/docker-pool.ts';
import { DockerodeRuntime } from '../src/adapters/docker/dockerode.runtime.ts';
import { FileHelperBuilds } from '../src/adapters/helper/file.helper-builds.ts';
import { buildContainerPlan } from '../src/commands/instance/container-plan.ts';
import { NodeGuard } from '../src/commands/instance/node-guard.ts';
import { loadConfig } from '../src/config.ts';
import type { LiveInstance } from '../src/domain/instance/instance.decider.ts';
import type { NodeTarget } from '../src/ports/container-runtime.port.ts';
import { SecondEngine, dockerd } from './support/second-engine.ts';
import { describeWithService } from './support/services.ts';
import { ensureToolsImage } from './support/test-image.ts';

const helperDir = loadConfig({}).helperDir;
const ready = Boolean(dockerd) && process.getuid?.() === 0 && existsSync(join(helperDir, 'linux-amd64', 'tianqi-helper'));

/**
 * vGPU that the tenant cannot switch off: HAMi-core is named in /etc/ld.so.preload (read-only,
 * kept on the node by the node guard), so it is loaded into a process started with
 * `env -u LD_PRELOAD`. No GPU exists here: a stand-in libvgpu.so, built with the C compiler, says
 * on stderr that it was loaded; the container is the vGPU plan without its device request.
 * On a second dockerd of its own: the guard it runs (without firewall) would replace the shared
 * engine's guard, which the other test files' tenants need.
 */
describeWithService('root, dockerd and a tianqi-helper build', ready, 'run as root with docker.io installed and build helper/ (npm run build:helper)', 'vGPU: HAMi-core through /etc/ld.so.preload', () => {
  const engine = new SecondEngine();
  const socket = engine.socket;
  const target: NodeTarget = { nodeId: 'vgpu-test', settings: { endpoint: `unix://${socket}`, tls: false } };
  const pool = new DockerPool();
  const runtime = new DockerodeRuntime(pool);
  const docker = new Docker({ socketPath: socket });
  const hamiDir = mkdtempSync(join(tmpdir(), 'tianqi-hami-'));
  const name = `vgpu-preload-${process.pid}-${Date.now().toString(36)}`;
  let containerId: string;

  const exec = (cmd: string[]) =>
    execFileSync('docker', ['exec', containerId, ...cmd], { env: { ...process.env, DOCKER_HOST: `unix://${socket}` }, stdio: ['ignore', 'pipe', 'pipe'] });
  /** Exit status, and stdout then stderr. */
  const execAll = (cmd: string[]): { code: number; out: string } => {
    const r = spawnSync('docker', ['exec', containerId, ...cmd], { env: { ...process.env, DOCKER_HOST: `unix://${socket}` }, encoding: 'utf8' });
    return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
  };

  beforeAll(async () => {
    await engine.start();
    writeFileSync(join(hamiDir, 'fake.c'), '#include <unistd.h>\n__attribute__((constructor)) static void loaded(void) { write(2, "hami-core loaded\\n", 17); }\n');
    execFileSync('cc', ['-shared', '-fPIC', '-o', join(hamiDir, 'libvgpu.so'), join(hamiDir, 'fake.c')]);
    const image = ensureToolsImage(socket);
    await new NodeGuard(runtime, new FileHelperBuilds(helperDir), false).ensure(target, { vgpu: true });
    const instance = {
      instanceId: name, ownerId: 'owner-vgpu', name: 'slice', containerName: name, imageAddress: image, dataVolume: null,
      gpus: [{ index: 0, memoryGb: 8 }],
      spec: { name: 'slice', gpuModel: 'A100', gpuCount: 1, gpuMemoryGb: 8, vgpu: true, cpuCores: 1, memoryGb: 1, systemDiskGb: 0, dataDiskGb: 0, pricePerHour: 1 },
    } as unknown as LiveInstance;
    const plan = buildContainerPlan(instance, { hamiCoreDir: hamiDir, gpuMemoryGb: 40 });
    // No GPU here: the same container without its device request, on the default bridge.
    const { network: _network, ...rest } = plan;
    containerId = (await runtime.createAndStart(target, { ...rest, gpuDeviceIds: [], labels: { 'tianqi-test': 'vgpu-preload' } })).containerId;
  }, 120_000);

  afterAll(async () => {
    if (containerId) await docker.getContainer(containerId).remove({ force: true }).catch(() => undefined);
    rmSync(hamiDir, { recursive: true, force: true });
    await pool.close();
    await engine.destroy();
  });

  it('loads HAMi-core into a process started without LD_PRELOAD', () => {
    const withEnv = execAll(['/usr/bin/env']);
    expect(withEnv.out).toContain('hami-core loaded');
    expect(withEnv.out).toContain('LD_PRELOAD=/libvgpu/build/libvgpu.so');
    const without = execAll(['/usr/bin/env', '-u', 'LD_PRELOAD', '/usr/bin/env']);
    expect(without.code).toBe(0);
    expect(without.out).not.toContain('LD_PRELOAD=');
    // the library was loaded into the second env too: the preload file, not the variable
    expect(without.out.match(/hami-core loaded/g)!.length).toBe(2);
    expect(exec(['cat', '/etc/ld.so.preload']).toString()).toBe('/libvgpu/build/libvgpu.so\n');
  });

  it('keeps /etc/ld.so.preload out of the tenant\'s reach (root in the container cannot change or remove it)', () => {
    expect(execAll(['sh', '-c', 'echo > /etc/ld.so.preload']).code).not.toBe(0);
    expect(execAll(['rm', '-f', '/etc/ld.so.preload']).code).not.toBe(0);
    expect(exec(['cat', '/etc/ld.so.preload']).toString()).toBe('/libvgpu/build/libvgpu.so\n');
  });

  it('gives HAMi-core a cache of its own, sized, and the node\'s shared lock directory', async () => {
    const info = await docker.getContainer(containerId).inspect();
    expect(info.Mounts).toEqual(expect.arrayContaining([
      expect.objectContaining({ Type: 'tmpfs', Destination: '/tmp/vgpu' }),
      expect.objectContaining({ Type: 'bind', Source: '/tmp/vgpulock', Destination: '/tmp/vgpulock' }),
    ]));
    expect(exec(['sh', '-c', 'df -k /tmp/vgpu | tail -1']).toString()).toMatch(/\s65536\s/);
  });
});
