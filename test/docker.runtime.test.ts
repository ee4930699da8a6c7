import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DockerPool } from '../src/adapters/docker/docker-pool.ts';
import { DockerodeRuntime, formatBytes, PullProgress } from '../src/adapters/docker/dockerode.runtime.ts';
import { isStorageOptUnsupported } from '../src/adapters/docker/runtime-errors.ts';
import type { ContainerPlan, NodeTarget } from '../src/ports/container-runtime.port.ts';
import { EngineRejectedError, EngineUnavailableError } from '../src/ports/container-runtime.port.ts';
import { describeWithService } from './support/services.ts';
import { ensureTestImage } from './support/test-image.ts';

/**
 * DockerodeRuntime against the engine CI provides (see .ci/run). Everything a test creates carries
 * this run's label and a name of its own, and goes away in afterAll.
 */

const socket = process.env.TIANQI_TEST_DOCKER_SOCKET;
const MIB = 1024 * 1024;

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection, it resolved');
}

async function rejectedWith(promise: Promise<unknown>): Promise<EngineRejectedError> {
  const error = await rejection(promise);
  expect(error).toBeInstanceOf(EngineRejectedError);
  return error as EngineRejectedError;
}

describe('PullProgress', () => {
  it('sums up layers and bytes of the pull stream', () => {
    const progress = new PullProgress('nvidia/cuda:12.4');
    expect(progress.text()).toBe('pulling nvidia/cuda:12.4');
    expect(progress.update({ status: 'Pulling from nvidia/cuda', id: '12.4' })).toBe(false);
    for (const id of ['a', 'b', 'c']) progress.update({ status: 'Pulling fs layer', id });
    progress.update({ status: 'Already exists', id: 'd' });
    expect(progress.text()).toBe('pulling nvidia/cuda:12.4 — 1/4 layers');
    progress.update({ status: 'Downloading', id: 'a', progressDetail: { current: 300e6, total: 800e6 }, });
    progress.update({ status: 'Downloading', id: 'b', progressDetail: { current: 112e6, total: 400e6 } });
    expect(progress.text()).toBe('pulling nvidia/cuda:12.4 — 1/4 layers, 412 MB of 1.2 GB');
    progress.update({ status: 'Download complete', id: 'a' });
    progress.update({ status: 'Extracting', id: 'a', progressDetail: { current: 10e6, total: 800e6 } });
    progress.update({ status: 'Pull complete', id: 'a' });
    expect(progress.text()).toBe('pulling nvidia/cuda:12.4 — 2/4 layers, 912 MB of 1.2 GB');
    expect(progress.update({ status: 'Digest: sha256:0123' })).toBe(false);
    expect(progress.update({ status: 'Status: Downloaded newer image for nvidia/cuda:12.4' })).toBe(false);
  });

  it('formats sizes in decimal units', () => {
    expect(formatBytes(0)).toBe('0 kB');
    expect(formatBytes(51_200)).toBe('51 kB');
    expect(formatBytes(412_345_678)).toBe('412 MB');
    expect(formatBytes(1_234_567_890)).toBe('1.2 GB');
  });
});

describe('DockerodeRuntime without an engine', () => {
  const pool = new DockerPool();
  const runtime = new DockerodeRuntime(pool);
  let target: NodeTarget;

  beforeAll(async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as net.AddressInfo;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    target = { nodeId: 'closed', settings: { endpoint: `tcp://127.0.0.1:${port}`, tls: false } };
  });
  afterAll(() => pool.close());

  it('throws EngineUnavailableError with a readable reason for a closed port, from every call', async () => {
    const plan: ContainerPlan = {
      name: 'never',
      image: 'tianqi-test/busybox:1',
      labels: {},
      env: [],
      nanoCpus: 0,
      memoryBytes: 0,
      shmSizeBytes: 0,
      systemDiskGb: 0,
      dataVolume: null,
      gpuDeviceIds: [],
      binds: [],
    };
    const port = target.settings.endpoint.split(':').at(-1);
    const calls: (() => Promise<unknown>)[] = [
      () => runtime.ensureImage(target, 'tianqi-test/busybox:1'),
      () => runtime.createAndStart(target, plan),
      () => runtime.start(target, 'x'),
      () => runtime.stop(target, 'x'),
      () => runtime.restart(target, 'x'),
      () => runtime.remove(target, { containerId: 'x', name: 'never', volumes: ['v'] }),
      () => runtime.inspect(target, 'x'),
      () => runtime.listManaged(target),
      () => runtime.gpuMemory(target, 'x'),
    ];
    for (const call of calls) {
      const error = await rejection(call());
      expect(error).toBeInstanceOf(EngineUnavailableError);
      expect((error as EngineUnavailableError).nodeId).toBe('closed');
      expect((error as Error).message).toBe(`connection refused at 127.0.0.1:${port}`);
    }
  });

  it('throws EngineUnavailableError for an endpoint it cannot use at all', async () => {
    const error = await rejection(runtime.inspect({ nodeId: 'bad', settings: { endpoint: 'http://x', tls: false } }, 'x'));
    expect(error).toBeInstanceOf(EngineUnavailableError);
    expect((error as Error).message).toMatch(/^unsupported Docker endpoint/);
  });
});

describe('DockerodeRuntime.ensureImage against a fake engine', () => {
  const pool = new DockerPool();
  const runtime = new DockerodeRuntime(pool);
  let server: http.Server;
  let target: NodeTarget;

  /** Writes one progress line of `POST /images/create` every `everyMs`. */
  async function stream(res: http.ServerResponse, lines: object[], everyMs: number): Promise<void> {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    for (const line of lines) {
      res.write(`${JSON.stringify(line)}\r\n`);
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
    res.end();
  }

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      const url = req.url ?? '';
      if (req.method === 'GET' && /\/images\/.+\/json$/.test(url)) {
        res.writeHead(404, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ message: 'No such image' }));
      } else if (req.method === 'POST' && url.includes('/images/create') && url.includes('fromImage=fake%2Fok')) {
        const downloading = Array.from({ length: 25 }, (_, tick) => ({
          status: 'Downloading',
          id: 'a',
          progressDetail: { current: (tick + 1) * 20e6, total: 500e6 },
        }));
        void stream(
          res,
          [
            { status: 'Pulling from fake/ok', id: '1' },
            { status: 'Pulling fs layer', id: 'a' },
            { status: 'Already exists', id: 'b' },
            ...downloading,
            { status: 'Download complete', id: 'a' },
            { status: 'Pull complete', id: 'a' },
            { status: 'Digest: sha256:00' },
            { status: 'Status: Downloaded newer image for fake/ok:1' },
          ],
          100,
        );
      } else if (req.method === 'POST' && url.includes('/images/create')) {
        const message = 'unauthorized: authentication required';
        void stream(res, [{ status: 'Pulling from fake/private', id: '1' }, { errorDetail: { message }, error: message }], 0);
      } else {
        res.writeHead(500).end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    target = { nodeId: 'fake', settings: { endpoint: `tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`, tls: false } };
  });
  afterAll(async () => {
    await pool.close();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('reports pull progress in words, at most once a second', async () => {
    const reports: { at: number; status: string }[] = [];
    await runtime.ensureImage(target, 'fake/ok:1', (status) => reports.push({ at: Date.now(), status }));
    expect(reports[0]?.status).toBe('pulling fake/ok:1');
    expect(reports.length).toBeGreaterThanOrEqual(2);
    expect(reports.length).toBeLessThanOrEqual(4);
    for (let i = 1; i < reports.length; i += 1) {
      expect((reports[i]?.at ?? 0) - (reports[i - 1]?.at ?? 0)).toBeGreaterThanOrEqual(1_000);
      expect(reports[i]?.status).toMatch(/^pulling fake\/ok:1 — 1\/2 layers, \d+ MB of 500 MB$/);
    }
  });

  it('fails with the error the engine puts in the stream after its 200', async () => {
    const error = await rejectedWith(runtime.ensureImage(target, 'fake/private:1'));
    expect(error.statusCode).toBe(500);
    expect(error.message).toBe('unauthorized: authentication required');
  });
});

describeWithService(
  'Docker engine',
  Boolean(socket),
  'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET',
  'DockerodeRuntime against a real engine',
  () => {
    const target: NodeTarget = { nodeId: 'test', settings: { endpoint: `unix://${socket}`, tls: false } };
    const pool = new DockerPool();
    const runtime = new DockerodeRuntime(pool);
    // Checks go straight to the engine, past the code under test.
    const docker = new Docker({ socketPath: socket });
    const run = `${process.pid}-${Date.now().toString(36)}`;
    const runLabel = { 'tianqi-test-run': run };
    const sleeper = `tianqi-test/sleeper:${run}`;
    let hostDir: string;
    let engineHasNvidia = false;

    const cli = (args: string[]) =>
      execFileSync('docker', args, { env: { ...process.env, DOCKER_HOST: `unix://${socket}` }, stdio: ['ignore', 'pipe', 'pipe'] })
        .toString()
        .trim();

    function plan(name: string, overrides: Partial<ContainerPlan> = {}): ContainerPlan {
      return {
        name: `${name}-${run}`,
        image: sleeper,
        labels: { 'managed-by': 'tianqi', 'tianqi.instance': name, ...runLabel },
        env: ['TIANQI_INSTANCE=' + name],
        nanoCpus: 500_000_000,
        memoryBytes: 64 * MIB,
        shmSizeBytes: 16 * MIB,
        systemDiskGb: 0,
        dataVolume: `${name}-data-${run}`,
        gpuDeviceIds: [],
        binds: [],
        ...overrides,
      };
    }

    async function exists(kind: 'container' | 'volume', name: string): Promise<boolean> {
      try {
        await (kind === 'container' ? docker.getContainer(name).inspect() : docker.getVolume(name).inspect());
        return true;
      } catch (error) {
        if ((error as { statusCode?: number }).statusCode === 404) return false;
        throw error;
      }
    }

    beforeAll(async () => {
      const base = ensureTestImage(socket);
      // The image's own CMD is /bin/sh, which exits at once; the plan has no command on purpose,
      // so the test gets an image whose CMD stays up and stops at once on SIGTERM.
      const scratch = cli(['create', base]);
      try {
        cli(['commit', '--change', 'CMD ["/bin/sh","-c","trap \\"exit 0\\" TERM; while :; do sleep 1; done"]', scratch, sleeper]);
      } finally {
        cli(['rm', scratch]);
      }
      hostDir = mkdtempSync(join(tmpdir(), 'tianqi-runtime-bind-'));
      const info = (await docker.info()) as { Runtimes?: Record<string, unknown> };
      engineHasNvidia = Object.keys(info.Runtimes ?? {}).includes('nvidia');
    });

    afterAll(async () => {
      const filters = { label: [`tianqi-test-run=${run}`] };
      for (const container of await docker.listContainers({ all: true, filters })) {
        await docker.getContainer(container.Id).remove({ force: true, v: true });
      }
      const { Volumes } = await docker.listVolumes({ filters });
      for (const volume of Volumes ?? []) await docker.getVolume(volume.Name).remove();
      await docker.getImage(sleeper).remove({ force: true }).catch(() => undefined);
      if (hostDir) rmSync(hostDir, { recursive: true, force: true });
      await pool.close();
    });

    it('ensureImage leaves an image the engine has alone', async () => {
      const progress: string[] = [];
      await runtime.ensureImage(target, sleeper, (status) => progress.push(status));
      expect(progress).toEqual([]);
    });

    it('ensureImage of an image no registry serves fails with Docker’s reason', async () => {
      const image = `registry.invalid/tianqi/missing:${run}`;
      const progress: string[] = [];
      const error = await rejectedWith(runtime.ensureImage(target, image, (status) => progress.push(status)));
      console.log(`pull failure: ${error.statusCode} ${error.message}`);
      expect(error.message).toContain('registry.invalid');
      expect(error.message).not.toMatch(/HTTP code/);
      expect(progress).toEqual([`pulling ${image}`]);
    }, 60_000);

    describe('container limits and tenant programs', () => {
      const limited = plan('limited', {
        limits: { pidsLimit: 64, logMaxSizeMb: 1, logMaxFiles: 2, noNewPrivileges: true, capDrop: ['NET_RAW', 'MKNOD', 'AUDIT_WRITE'] },
        tmpfs: { '/tmp/vgpu': 8 * MIB },
      });
      let containerId: string;
      const sh = async (script: string) => {
        const session = await runtime.exec(target, containerId, { cmd: ['/bin/sh', '-c', script], tty: false });
        let out = '';
        session.stream.on('data', (d: Buffer) => (out += d.toString()));
        session.stderr?.on('data', (d: Buffer) => (out += d.toString()));
        session.stream.end();
        return { code: await session.exited(), out };
      };

      beforeAll(async () => {
        containerId = (await runtime.createAndStart(target, limited)).containerId;
      });

      it('gets a pids limit, rotated json-file logs, no-new-privileges, fewer capabilities and a sized tmpfs', async () => {
        const info = await docker.getContainer(containerId).inspect();
        expect(info.HostConfig).toMatchObject({
          PidsLimit: 64,
          LogConfig: { Type: 'json-file', Config: { 'max-size': '1m', 'max-file': '2' } },
          SecurityOpt: ['no-new-privileges:true'],
          CapDrop: ['NET_RAW', 'MKNOD', 'AUDIT_WRITE'],
        });
        expect(info.Mounts).toEqual(expect.arrayContaining([expect.objectContaining({ Type: 'tmpfs', Destination: '/tmp/vgpu' })]));
        expect((await sh('df -k /tmp/vgpu | tail -1')).out).toMatch(/\s8192\s/);
      });

      it('keeps a fork bomb inside: processes beyond the limit cannot start, the container still answers', async () => {
        const bomb = await sh('for i in $(seq 100); do sleep 3 & done 2>&1; wait; echo done');
        expect(bomb.out).toMatch(/can't fork|Resource temporarily unavailable/);
        await new Promise((r) => setTimeout(r, 3_500));
        expect((await sh('echo alive')).out).toBe('alive\n');
      }, 30_000);

      it('still lets root work: chown, a low port, a file owned by another user, mknod refused', async () => {
        const work = await sh('touch /tmp/f && chown 65534:65534 /tmp/f && stat -c %u /tmp/f && (nc -l -p 80 -e true & sleep 0.2; kill $! ) && echo port-ok; mknod /tmp/dev c 1 3 2>&1 || echo mknod-refused');
        expect(work.out).toContain('65534');
        expect(work.out).toContain('port-ok');
        expect(work.out).toContain('mknod-refused');
      });

      it('bounds what the tenant\'s own programs do to the platform: a hanging `test` and an endless nvidia-smi', async () => {
        // The tenant may ship anything under these names.
        await sh('mkdir -p /usr/bin && printf "#!/bin/sh\\nsleep 600\\n" > /usr/local-test && chmod +x /usr/local-test'
          + ' && rm /bin/test && cp /usr/local-test /bin/test'
          + ' && printf "#!/bin/sh\\nexec yes 0,81920,8\\n" > /usr/bin/nvidia-smi && chmod +x /usr/bin/nvidia-smi');
        const probeStarted = Date.now();
        expect(await runtime.hasExecutable(target, containerId, '/bin/bash')).toBe(false);
        expect(Date.now() - probeStarted).toBeLessThan(7_000);
        const readStarted = Date.now();
        expect(await runtime.gpuMemory(target, containerId)).toBeNull();
        expect(Date.now() - readStarted).toBeLessThan(7_000);
      }, 30_000);
    });

    describe('a CPU-only instance', () => {
      const cpu = plan('cpu', { systemDiskGb: 1 });
      let containerId: string;

      it('is created with the planned limits, labels and data volume, and started', async () => {
        const result = await runtime.createAndStart(target, cpu);
        containerId = result.containerId;
        const info = await docker.getContainer(containerId).inspect();
        expect(info.Name).toBe(`/${cpu.name}`);
        expect(info.State.Running).toBe(true);
        expect(info.Config.Labels).toEqual(cpu.labels);
        expect(info.Config.Env).toEqual(expect.arrayContaining([...cpu.env]));
        expect(info.HostConfig).toMatchObject({
          NanoCpus: 500_000_000,
          Memory: 64 * MIB,
          MemorySwap: 64 * MIB,
          ShmSize: 16 * MIB,
          RestartPolicy: { Name: 'unless-stopped' },
        });
        expect(info.HostConfig.DeviceRequests ?? []).toEqual([]);
        expect(info.Mounts).toEqual([expect.objectContaining({ Type: 'volume', Name: cpu.dataVolume, Destination: '/data' })]);
        const volume = await docker.getVolume(cpu.dataVolume as string).inspect();
        expect(volume.Labels).toEqual(cpu.labels);

        // Whether the size could be applied depends on the engine's storage driver: ask it directly.
        let refusal: unknown = null;
        try {
          const probe = await docker.createContainer({ Image: sleeper, Labels: runLabel, HostConfig: { StorageOpt: { size: '1G' } } });
          await probe.remove();
        } catch (error) {
          refusal = error;
        }
        console.log(`StorageOpt size on this engine: ${refusal === null ? 'applied' : `refused: ${(refusal as Error).message}`}`);
        expect(result.storageOptApplied).toBe(refusal === null);
        if (refusal === null) expect(info.HostConfig.StorageOpt).toEqual({ size: '1G' });
        else {
          expect(isStorageOptUnsupported(refusal)).toBe(true);
          expect(info.HostConfig.StorageOpt ?? {}).toEqual({});
        }
      });

      it('is found again by its name: the same container, still running', async () => {
        const again = await runtime.createAndStart(target, cpu);
        expect(again.containerId).toBe(containerId);
        expect((await docker.getContainer(containerId).inspect()).State.Running).toBe(true);
      });

      it('reports its state with inspect', async () => {
        const state = await runtime.inspect(target, containerId);
        expect(state).toMatchObject({
          id: containerId,
          name: cpu.name,
          status: 'running',
          exitCode: null,
          oomKilled: false,
          error: '',
          finishedAt: null,
          labels: cpu.labels,
          volumes: [cpu.dataVolume],
        });
        expect(Date.parse(state?.startedAt ?? '')).toBeGreaterThan(Date.now() - 60_000);
        expect(await runtime.inspect(target, cpu.name)).toMatchObject({ id: containerId });
      });

      it('stops, and a second stop is no error', async () => {
        await runtime.stop(target, containerId, 5);
        await runtime.stop(target, containerId, 5);
        const state = await runtime.inspect(target, containerId);
        expect(state).toMatchObject({ status: 'exited', exitCode: 0 });
        expect(state?.finishedAt).not.toBeNull();
      });

      it('is started again by a second createAndStart while stopped', async () => {
        const again = await runtime.createAndStart(target, cpu);
        expect(again.containerId).toBe(containerId);
        expect((await runtime.inspect(target, containerId))?.status).toBe('running');
      });

      it('starts and restarts; starting a running container is no error', async () => {
        await runtime.start(target, containerId);
        const before = (await runtime.inspect(target, containerId))?.startedAt;
        await runtime.restart(target, containerId, 5);
        const after = await runtime.inspect(target, containerId);
        expect(after?.status).toBe('running');
        expect(after?.startedAt).not.toBe(before);
      });

      it('is listed with the managed containers', async () => {
        const mine = (await runtime.listManaged(target)).filter((state) => state.labels['tianqi-test-run'] === run);
        expect(mine).toContainEqual(
          expect.objectContaining({ id: containerId, name: cpu.name, status: 'running', exitCode: null, volumes: [cpu.dataVolume] }),
        );
      });

      it('has no GPU memory to read (no nvidia-smi in the image)', async () => {
        expect(await runtime.gpuMemory(target, containerId)).toBeNull();
      });

      it('has no GPU memory to read while stopped either', async () => {
        await runtime.stop(target, containerId, 5);
        expect(await runtime.gpuMemory(target, containerId)).toBeNull();
        expect(await runtime.gpuMemory(target, `missing-${run}`)).toBeNull();
      });

      it('is removed together with its volume', async () => {
        const outcome = await runtime.remove(target, { containerId, name: cpu.name, volumes: [] });
        expect(outcome).toEqual({ removed: [`container ${cpu.name}`, `volume ${cpu.dataVolume}`], failed: [] });
        expect(await exists('container', containerId)).toBe(false);
        expect(await exists('volume', cpu.dataVolume as string)).toBe(false);
        expect(await runtime.inspect(target, containerId)).toBeNull();
      });
    });

    it('answers 404 as EngineRejectedError for a container that is not there', async () => {
      const missing = `missing-${run}`;
      for (const call of [() => runtime.start(target, missing), () => runtime.stop(target, missing), () => runtime.restart(target, missing)]) {
        const error = await rejectedWith(call());
        expect(error.statusCode).toBe(404);
        expect(error.message).toBe(`No such container: missing-${run}`);
      }
    });

    it('creates one container when two attempts race', async () => {
      const racing = plan('race');
      const [first, second] = await Promise.all([runtime.createAndStart(target, racing), runtime.createAndStart(target, racing)]);
      expect(second.containerId).toBe(first.containerId);
      const named = await docker.listContainers({ all: true, filters: { label: [`tianqi-test-run=${run}`, 'tianqi.instance=race'] } });
      expect(named.map((container) => container.Id)).toEqual([first.containerId]);
      expect((await runtime.remove(target, { containerId: first.containerId, name: racing.name, volumes: [] })).failed).toEqual([]);
    });

    it('still removes the volumes of a container removed by hand, found by name', async () => {
      const gone = plan('gone');
      const { containerId } = await runtime.createAndStart(target, gone);
      await docker.getContainer(containerId).remove({ force: true, v: false });
      const outcome = await runtime.remove(target, { containerId: null, name: gone.name, volumes: [gone.dataVolume as string] });
      expect(outcome).toEqual({ removed: [`container ${gone.name}`, `volume ${gone.dataVolume}`], failed: [] });
      expect(await exists('volume', gone.dataVolume as string)).toBe(false);
    });

    it('reports a volume it could not remove and removes the rest', async () => {
      const shared = plan('shared');
      const { containerId } = await runtime.createAndStart(target, shared);
      // Another container holds the same volume, so the engine refuses to remove it.
      const holder = await docker.createContainer({
        name: `holder-${run}`,
        Image: sleeper,
        Labels: runLabel,
        HostConfig: { Mounts: [{ Type: 'volume', Source: shared.dataVolume as string, Target: '/data' }] },
      });
      const spare = `spare-${run}`;
      await docker.createVolume({ Name: spare, Labels: runLabel });
      const outcome = await runtime.remove(target, { containerId, name: shared.name, volumes: [spare, `never-${run}`] });
      expect(outcome.removed).toEqual([`container ${shared.name}`, `volume ${spare}`, `volume never-${run}`]);
      expect(outcome.failed).toEqual([{ what: `volume ${shared.dataVolume}`, reason: expect.stringMatching(/in use/) }]);
      console.log(`volume in use: ${outcome.failed[0]?.reason}`);
      await holder.remove({ force: true });
    });

    it('creates a GPU instance as planned and reports the engine’s refusal to start it', async (context) => {
      if (engineHasNvidia) context.skip('this engine has the NVIDIA runtime; the refusal is what an engine without it says');
      const gpu = plan('gpu', {
        gpuDeviceIds: ['1', '3'],
        env: ['NVIDIA_VISIBLE_DEVICES=1,3', 'CUDA_DEVICE_MEMORY_LIMIT_0=20480m', 'CUDA_DEVICE_MEMORY_LIMIT_1=20480m'],
        binds: [`${hostDir}:/opt/tianqi/shared:ro`],
      });
      const error = await rejectedWith(runtime.createAndStart(target, gpu));
      console.log(`GPU start refusal: ${error.statusCode} ${error.message}`);
      expect(error.message).toBe('could not select device driver "nvidia" with capabilities: [[gpu]]');

      // Left in place for the caller to record and remove.
      const [listed] = await docker.listContainers({ all: true, filters: { label: [`tianqi-test-run=${run}`, 'tianqi.instance=gpu'] } });
      expect(listed).toBeDefined();
      const info = await docker.getContainer(listed?.Id as string).inspect();
      expect(info.HostConfig.DeviceRequests).toEqual([
        { Driver: 'nvidia', Count: 0, DeviceIDs: ['1', '3'], Capabilities: [['gpu']], Options: null },
      ]);
      expect(info.Config.Env).toEqual(expect.arrayContaining([...gpu.env]));
      expect(info.HostConfig.Binds).toEqual([`${hostDir}:/opt/tianqi/shared:ro`]);
      const state = await runtime.inspect(target, info.Id);
      expect(state).toMatchObject({ status: 'created', exitCode: null, startedAt: null, finishedAt: null });

      const outcome = await runtime.remove(target, { containerId: info.Id, name: gpu.name, volumes: [] });
      expect(outcome).toEqual({ removed: [`container ${gpu.name}`, `volume ${gpu.dataVolume}`], failed: [] });
      expect(await exists('container', info.Id)).toBe(false);
    });
  },
);
