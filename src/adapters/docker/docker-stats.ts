import type { IncomingMessage } from 'node:http';
import type Dockerode from 'dockerode';
import { Observable } from 'rxjs';
import type { StatsSample } from '../../ports/container-runtime.port.ts';
import { LineSplitter, openStream } from './docker-events.ts';

interface CpuStats {
  readonly cpu_usage?: { readonly total_usage?: number; readonly percpu_usage?: readonly number[] | null };
  readonly system_cpu_usage?: number;
  readonly online_cpus?: number;
}

/**
 * One object of `GET /containers/{id}/stats`, as far as `docker stats` reads it. Every part may
 * be missing: a stopped container has empty memory and CPU stats, `--network none` has no
 * `networks`, cgroup v2 engines may send `io_service_bytes_recursive: null`.
 */
export interface DockerStatsJson {
  readonly read?: string;
  readonly cpu_stats?: CpuStats;
  readonly precpu_stats?: CpuStats;
  readonly memory_stats?: {
    readonly usage?: number;
    readonly limit?: number;
    readonly stats?: Readonly<Record<string, number>>;
  };
  readonly networks?: Readonly<Record<string, { readonly rx_bytes?: number; readonly tx_bytes?: number }>> | null;
  readonly blkio_stats?: {
    readonly io_service_bytes_recursive?: readonly { readonly op?: string; readonly value?: number }[] | null;
  };
  readonly pids_stats?: { readonly current?: number };
}

/** Go's zero time: what the engine sends as `read` while it has no reading (a stopped container). */
const NO_READING = '0001-01-01T00:00:00Z';

/**
 * A sample computed the way the docker CLI computes `docker stats` (cli/command/container/
 * stats_helpers.go). CPU compares with `precpu_stats`, which the engine fills from the previous
 * sample of the same stream; where it is empty (the first sample) the previous sample's
 * `cpu_stats` stand in, and with neither the CPU reads 0 rather than an average since boot.
 * `at` is the engine's read time, or `receivedAt` when it has none.
 */
export function computeStats(
  current: DockerStatsJson,
  previous: DockerStatsJson | undefined,
  receivedAt: Date = new Date(),
): StatsSample {
  const baseline = hasSystemUsage(current.precpu_stats) ? current.precpu_stats : previous?.cpu_stats;
  const memoryUsageBytes = memoryUsageNoCache(current.memory_stats);
  const memoryLimitBytes = current.memory_stats?.limit ?? 0;
  const { rx, tx } = networkBytes(current.networks);
  const { read, write } = blockBytes(current.blkio_stats?.io_service_bytes_recursive);
  return {
    cpuPercent: hasSystemUsage(baseline) ? cpuPercent(current.cpu_stats, baseline) : 0,
    memoryUsageBytes,
    memoryLimitBytes,
    // The limit is 0 only while the engine has no cgroup data (a container not running).
    memoryPercent: memoryLimitBytes > 0 ? (memoryUsageBytes / memoryLimitBytes) * 100 : 0,
    networkRxBytes: rx,
    networkTxBytes: tx,
    blockReadBytes: read,
    blockWriteBytes: write,
    pids: current.pids_stats?.current ?? 0,
    at: current.read && current.read !== NO_READING ? current.read : receivedAt.toISOString(),
  };
}

function hasSystemUsage(stats: CpuStats | undefined): stats is CpuStats {
  return (stats?.system_cpu_usage ?? 0) > 0;
}

/**
 * The container's share of the host's CPU time between the two readings, times the CPUs it could
 * use: 100 % per fully busy CPU. The counters are nanoseconds past 2^53 on big hosts, so they are
 * off by a few nanoseconds in a double, which is nothing next to a second's delta (the CLI uses
 * float64 as well).
 */
function cpuPercent(cpu: CpuStats | undefined, baseline: CpuStats): number {
  const cpuDelta = (cpu?.cpu_usage?.total_usage ?? 0) - (baseline.cpu_usage?.total_usage ?? 0);
  const systemDelta = (cpu?.system_cpu_usage ?? 0) - (baseline.system_cpu_usage ?? 0);
  const onlineCpus = cpu?.online_cpus || (cpu?.cpu_usage?.percpu_usage?.length ?? 0);
  if (cpuDelta <= 0 || systemDelta <= 0) return 0;
  return (cpuDelta / systemDelta) * onlineCpus * 100;
}

/**
 * Usage without the inactive page cache, as the CLI's calculateMemUsageUnixNoCache: that cache is
 * reclaimed before the OOM killer acts, so it is not really used. cgroup v1 reports it as
 * `total_inactive_file`, cgroup v2 as `inactive_file`. (CLIs before 19.03 subtracted all of
 * `cache`, active file pages too, and so under-reported.)
 */
function memoryUsageNoCache(memory: DockerStatsJson['memory_stats']): number {
  const usage = memory?.usage ?? 0;
  const stats = memory?.stats ?? {};
  const v1 = stats.total_inactive_file;
  if (v1 !== undefined && v1 < usage) return usage - v1;
  const v2 = stats.inactive_file ?? 0;
  return v2 < usage ? usage - v2 : usage;
}

function networkBytes(networks: DockerStatsJson['networks']): { rx: number; tx: number } {
  let rx = 0;
  let tx = 0;
  for (const network of Object.values(networks ?? {})) {
    rx += network.rx_bytes ?? 0;
    tx += network.tx_bytes ?? 0;
  }
  return { rx, tx };
}

/**
 * Bytes read and written, all devices together. cgroup v1 spells the ops `Read`/`Write` and adds
 * `Sync`, `Async`, `Discard` and `Total` entries of the same bytes, which must not count again;
 * cgroup v2 spells them `read`/`write`. The CLI looks at the first letter alone, and so does this.
 */
function blockBytes(entries: readonly { readonly op?: string; readonly value?: number }[] | null | undefined): {
  read: number;
  write: number;
} {
  let read = 0;
  let write = 0;
  for (const { op, value } of entries ?? []) {
    const first = op?.[0]?.toLowerCase();
    if (first === 'r') read += value ?? 0;
    else if (first === 'w') write += value ?? 0;
  }
  return { read, write };
}

/**
 * `docker stats` samples of one container, about one a second, until unsubscribed (which ends
 * the HTTP request) or until the engine ends the stream (the container was removed). A stopped
 * container's stream stays open and its samples read zero. Fails with
 * EngineRejectedError when the engine refuses (no such container) and with the connection error
 * as it came otherwise; sharing one stream among viewers is the caller's business.
 */
export function containerStats(docker: Dockerode, containerId: string): Observable<StatsSample> {
  return new Observable<StatsSample>((subscriber) => {
    const controller = new AbortController();
    let stream: IncomingMessage | undefined;
    openStream(docker, `/containers/${encodeURIComponent(containerId)}/stats`, { stream: true }, controller.signal).then(
      (response) => {
        if (controller.signal.aborted) {
          response.destroy();
          return;
        }
        stream = response;
        const lines = new LineSplitter();
        let previous: DockerStatsJson | undefined;
        response.on('data', (chunk: Buffer) => {
          for (const line of lines.push(chunk)) {
            let current: DockerStatsJson;
            try {
              current = JSON.parse(line) as DockerStatsJson;
            } catch (error) {
              subscriber.error(new Error(`unreadable stats from the engine: ${(error as Error).message}`));
              response.destroy();
              return;
            }
            subscriber.next(computeStats(current, previous));
            previous = current;
          }
        });
        response.on('end', () => subscriber.complete());
        response.on('error', (error: Error) => subscriber.error(error));
      },
      (error: unknown) => subscriber.error(error),
    );
    return () => {
      controller.abort();
      stream?.destroy();
    };
  });
}
