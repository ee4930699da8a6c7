import { PassThrough } from 'node:stream';
import type Dockerode from 'dockerode';
import { describe, expect, it } from 'vitest';
import type { StatsSample } from '../../ports/container-runtime.port.ts';
import { EngineRejectedError } from '../../ports/container-runtime.port.ts';
import type { DockerStatsJson } from './docker-stats.ts';
import { computeStats, containerStats } from './docker-stats.ts';

/** Shaped like the API's example answer (cgroup v1, engine API 1.41), numbers chosen to check by hand. */
const cgroupV1: DockerStatsJson = {
  read: '2024-05-01T10:00:01.123456789Z',
  pids_stats: { current: 7 },
  networks: {
    eth0: { rx_bytes: 1000, tx_bytes: 2000 },
    eth1: { rx_bytes: 24, tx_bytes: 48 },
  },
  memory_stats: {
    usage: 104_857_600,
    limit: 1_073_741_824,
    stats: {
      cache: 52_428_800,
      total_cache: 52_428_800,
      inactive_file: 20_971_520,
      total_inactive_file: 20_971_520,
      active_file: 31_457_280,
      total_active_file: 31_457_280,
      rss: 52_428_800,
      total_rss: 52_428_800,
    },
  },
  blkio_stats: {
    io_service_bytes_recursive: [
      { op: 'Read', value: 4096 },
      { op: 'Write', value: 8192 },
      { op: 'Sync', value: 12_288 },
      { op: 'Async', value: 0 },
      { op: 'Discard', value: 0 },
      { op: 'Total', value: 12_288 },
      { op: 'Read', value: 1000 },
      { op: 'Write', value: 0 },
    ],
  },
  cpu_stats: {
    cpu_usage: { total_usage: 2_500_000_000, percpu_usage: [900_000_000, 600_000_000, 500_000_000, 500_000_000] },
    system_cpu_usage: 100_004_000_000_000,
    online_cpus: 4,
  },
  precpu_stats: {
    cpu_usage: { total_usage: 2_000_000_000, percpu_usage: [800_000_000, 500_000_000, 400_000_000, 300_000_000] },
    system_cpu_usage: 100_000_000_000_000,
    online_cpus: 4,
  },
};

/** cgroup v2: `inactive_file` without `total_`, lower-case ops, no per-CPU usage. */
const cgroupV2: DockerStatsJson = {
  read: '2024-05-01T10:00:02.000000001Z',
  pids_stats: { current: 3 },
  networks: { eth0: { rx_bytes: 5338, tx_bytes: 648 } },
  memory_stats: {
    usage: 52_428_800,
    limit: 536_870_912,
    stats: { anon: 31_457_280, file: 20_971_520, active_file: 10_485_760, inactive_file: 10_485_760, pgfault: 1234 },
  },
  blkio_stats: {
    io_service_bytes_recursive: [
      { op: 'read', value: 1_048_576 },
      { op: 'write', value: 2_097_152 },
    ],
  },
  cpu_stats: { cpu_usage: { total_usage: 14_000_000_000 }, system_cpu_usage: 500_008_000_000_000, online_cpus: 8 },
  precpu_stats: { cpu_usage: { total_usage: 10_000_000_000 }, system_cpu_usage: 500_000_000_000_000, online_cpus: 8 },
};

describe('computeStats', () => {
  it('computes a cgroup v1 sample like docker stats', () => {
    expect(computeStats(cgroupV1, undefined)).toEqual({
      // 0.5 s of 4 s of host CPU time, on 4 CPUs.
      cpuPercent: 50,
      // usage minus total_inactive_file, not minus cache.
      memoryUsageBytes: 83_886_080,
      memoryLimitBytes: 1_073_741_824,
      memoryPercent: 7.8125,
      networkRxBytes: 1024,
      networkTxBytes: 2048,
      blockReadBytes: 5096,
      blockWriteBytes: 8192,
      pids: 7,
      at: '2024-05-01T10:00:01.123456789Z',
    });
  });

  it('computes a cgroup v2 sample like docker stats', () => {
    expect(computeStats(cgroupV2, undefined)).toEqual({
      // 4 s of 8 s of host CPU time, on 8 CPUs: four CPUs busy.
      cpuPercent: 400,
      memoryUsageBytes: 41_943_040,
      memoryLimitBytes: 536_870_912,
      memoryPercent: 7.8125,
      networkRxBytes: 5338,
      networkTxBytes: 648,
      blockReadBytes: 1_048_576,
      blockWriteBytes: 2_097_152,
      pids: 3,
      at: '2024-05-01T10:00:02.000000001Z',
    });
  });

  it('counts the per-CPU entries when online_cpus is missing (older engines)', () => {
    const { online_cpus: _drop, ...cpu } = cgroupV1.cpu_stats!;
    expect(computeStats({ ...cgroupV1, cpu_stats: cpu }, undefined).cpuPercent).toBe(50);
  });

  it('takes the previous sample when precpu_stats is empty (the first of a stream), and 0 without one', () => {
    const first: DockerStatsJson = { ...cgroupV2, precpu_stats: { cpu_usage: { total_usage: 0 } } };
    expect(computeStats(first, undefined).cpuPercent).toBe(0);
    const previous: DockerStatsJson = { ...cgroupV2, cpu_stats: cgroupV2.precpu_stats };
    expect(computeStats(first, previous).cpuPercent).toBe(400);
  });

  it('reads 0 % CPU when a counter did not move forward', () => {
    const idle: DockerStatsJson = { ...cgroupV1, cpu_stats: { ...cgroupV1.cpu_stats, cpu_usage: cgroupV1.precpu_stats!.cpu_usage } };
    expect(computeStats(idle, undefined).cpuPercent).toBe(0);
    const noSystemDelta: DockerStatsJson = { ...cgroupV1, cpu_stats: { ...cgroupV1.cpu_stats, system_cpu_usage: 100_000_000_000_000 } };
    expect(computeStats(noSystemDelta, undefined).cpuPercent).toBe(0);
  });

  it('keeps the usage when the inactive file pages are not below it', () => {
    const memory = { usage: 1000, limit: 4000, stats: { inactive_file: 1000 } };
    expect(computeStats({ ...cgroupV2, memory_stats: memory }, undefined)).toMatchObject({ memoryUsageBytes: 1000, memoryPercent: 25 });
  });

  it('reads a stopped container as zeros, at the time the sample came', () => {
    const stopped: DockerStatsJson = {
      read: '0001-01-01T00:00:00Z',
      pids_stats: {},
      blkio_stats: { io_service_bytes_recursive: null },
      cpu_stats: { cpu_usage: { total_usage: 0 } },
      precpu_stats: { cpu_usage: { total_usage: 0 } },
      memory_stats: {},
    };
    expect(computeStats(stopped, undefined, new Date('2024-05-01T10:00:03.000Z'))).toEqual({
      cpuPercent: 0,
      memoryUsageBytes: 0,
      memoryLimitBytes: 0,
      memoryPercent: 0,
      networkRxBytes: 0,
      networkTxBytes: 0,
      blockReadBytes: 0,
      blockWriteBytes: 0,
      pids: 0,
      at: '2024-05-01T10:00:03.000Z',
    });
  });
});

type DialCallback = (error: Error | null, result: unknown) => void;

/** Stands in for docker-modem: the test answers the one request when it likes. */
function fakeEngine() {
  const requests: { path: string; query: unknown; signal: AbortSignal; answer: DialCallback }[] = [];
  const docker = {
    modem: {
      dial: (options: { path: string; options: unknown; abortSignal: AbortSignal }, answer: DialCallback) =>
        requests.push({ path: options.path, query: options.options, signal: options.abortSignal, answer }),
    },
  } as unknown as Dockerode;
  return { docker, requests };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('containerStats', () => {
  it('streams computed samples from NDJSON split anywhere, and ends the request when unsubscribed', async () => {
    const { docker, requests } = fakeEngine();
    const samples: StatsSample[] = [];
    const subscription = containerStats(docker, 'job-1').subscribe((sample) => samples.push(sample));
    expect(requests[0]).toMatchObject({ path: '/containers/job-1/stats?', query: { stream: true } });
    const body = new PassThrough();
    requests[0]!.answer(null, body);
    await tick();
    const text = Buffer.from(`${JSON.stringify(cgroupV2)}\n${JSON.stringify(cgroupV1)}\n`);
    body.write(text.subarray(0, 100));
    body.write(text.subarray(100));
    await tick();
    expect(samples.map((sample) => sample.pids)).toEqual([3, 7]);
    subscription.unsubscribe();
    expect(body.destroyed).toBe(true);
    expect(requests[0]!.signal.aborted).toBe(true);
  });

  it('ends an answer that comes after the unsubscription', async () => {
    const { docker, requests } = fakeEngine();
    containerStats(docker, 'job-1').subscribe().unsubscribe();
    const late = new PassThrough();
    requests[0]!.answer(null, late);
    await tick();
    expect(late.destroyed).toBe(true);
  });

  it("fails with the engine's own words when it refuses", async () => {
    const { docker, requests } = fakeEngine();
    const failure = new Promise((resolve) => containerStats(docker, 'gone').subscribe({ error: resolve }));
    const error = Object.assign(new Error('(HTTP code 404) unexpected - No such container: gone '), { statusCode: 404 });
    requests[0]!.answer(error, null);
    const received = await failure;
    expect(received).toBeInstanceOf(EngineRejectedError);
    expect(received).toMatchObject({ statusCode: 404, message: 'No such container: gone' });
  });
});
