import { goArchitecture } from '../../ports/helper-builds.port.ts';
import { PassThrough } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import type Docker from 'dockerode';
import type { Observable } from 'rxjs';
import { catchError, defer, throwError } from 'rxjs';
import type {
  ContainerEvent,
  ContainerPlan,
  ContainerRuntime,
  ContainerState,
  ContainerStatus,
  ExecOptions,
  ExecSession,
  GpuMemoryReading,
  LogLine,
  LogOptions,
  NetworkPlan,
  NodeTarget,
  PathStat,
  StatsSample,
  SystemContainer,
} from '../../ports/container-runtime.port.ts';
import { EngineRejectedError, EngineUnavailableError } from '../../ports/container-runtime.port.ts';
import { putArchive, statPath } from './docker-archive.ts';
import { ensureNetwork, ensureSystemContainer, hostFileExists, removeNetworkIfUnused, removeSystemContainers, runGpuQuery, runSystemTask } from './docker-networks.ts';
import { containerEvents, openEngineStreams } from './docker-events.ts';
import { isExecutable, openExec } from './docker-exec.ts';
import { containerLogs } from './docker-logs.ts';
import type { DockerPool } from './docker-pool.ts';
import { containerStats } from './docker-stats.ts';
import { NVIDIA_SMI_QUERY, parseGpuMemory } from './gpu-memory.ts';
import { isStorageOptUnsupported, statusOf, toRuntimeError } from './runtime-errors.ts';

/** Pull progress goes to people (and maybe into events): one line a second is plenty. */
const PROGRESS_INTERVAL_MS = 1_000;

/**
 * nvidia-smi hangs when the driver is wedged; a reading that late is of no use anyway. The engine
 * has no call to end an exec, so a hung one stays in the container; only our wait ends.
 */
const GPU_QUERY_TIMEOUT_MS = 5_000;

/** What an in-container query (nvidia-smi) may print: a reading of 16 cards is under 2 KiB. */
export const EXEC_OUTPUT_LIMIT = 64 * 1024;

/** The only status a successful in-container query may end with. */
const SUCCESS = 0;

/** HTTP statuses the engine answers with that the runtime treats as outcomes, not failures. */
const NOT_MODIFIED = 304;
const NOT_FOUND = 404;
const CONFLICT = 409;

const CONTAINER_STATUSES: ReadonlySet<string> = new Set<ContainerStatus>([
  'created',
  'running',
  'paused',
  'restarting',
  'removing',
  'exited',
  'dead',
]);

/** How long the loser of a race for a container name waits to see the winner: 20 × 100 ms. */
const NAME_RACE_POLLS = 20;
const NAME_RACE_POLL_MS = 100;

/** Where the plan's data volume appears inside the container. */
const DATA_MOUNT_POINT = '/data';

export class DockerodeRuntime implements ContainerRuntime {
  /** A node's architecture does not change under a running engine: asked once per node. */
  private readonly architectures = new Map<string, string>();

  constructor(private readonly pool: DockerPool) {}

  async ensureImage(target: NodeTarget, image: string, onProgress?: (status: string) => void): Promise<void> {
    const docker = this.client(target);
    await guard(target, async () => {
      if (await imageExists(docker, image)) return;
      const report = throttled(onProgress);
      report(`pulling ${image}`);
      await pull(docker, image, report);
    });
  }

  async createAndStart(target: NodeTarget, plan: ContainerPlan): Promise<{ containerId: string; storageOptApplied: boolean }> {
    const docker = this.client(target);
    return guard(target, async () => {
      const existing = await findByName(docker, plan.name);
      if (existing) return startExisting(docker, existing);
      if (plan.dataVolume !== null) {
        // Creating a volume that exists returns it: a retry after a half-done attempt is fine.
        await docker.createVolume({ Name: plan.dataVolume, Labels: { ...plan.labels } });
      }
      let created: { containerId: string; storageOptApplied: boolean };
      try {
        created = await create(docker, plan);
      } catch (error) {
        // Another attempt with the same plan created it in the meantime: that one is ours too.
        const winner = statusOf(error) === CONFLICT ? await awaitCreated(docker, plan.name) : null;
        if (!winner) throw error;
        return startExisting(docker, winner);
      }
      // A failed start leaves the container for the caller to record and remove.
      await start(docker, created.containerId);
      return created;
    });
  }

  async recreate(target: NodeTarget, containerId: string, plan: ContainerPlan): Promise<{ containerId: string; storageOptApplied: boolean }> {
    const docker = this.client(target);
    return guard(target, async () => {
      const kept = keptImage(plan.name, containerId);
      const old = await inspectOrNull(docker, containerId);
      if (!old) throw new EngineRejectedError(404, 'the container is gone from the node');
      if (old.State.Running) throw new EngineRejectedError(409, 'the container is running; stop it first');
      // An attempt that failed part way left its new container: made again from scratch.
      const next = `${plan.name}-next`;
      const leftover = await findByName(docker, next);
      if (leftover) await docker.getContainer(leftover.Id).remove({ force: true, v: false });
      // Its files (everything outside the data volume) become an image the new container starts from.
      await docker.getContainer(containerId).commit({ repo: kept.repo, tag: kept.tag, comment: 'kept by TianQi GPU Manager: the container made again with other GPUs', pause: false });
      return create(docker, { ...plan, name: next, image: kept.ref });
    });
  }

  async replace(target: NodeTarget, oldContainerId: string, newContainerId: string, name: string): Promise<void> {
    const docker = this.client(target);
    await guard(target, async () => {
      const old = await inspectOrNull(docker, oldContainerId);
      if (old) await docker.getContainer(oldContainerId).remove({ force: true, v: false });
      const current = await inspectOrNull(docker, newContainerId);
      if (current && current.Name !== `/${name}`) await docker.getContainer(newContainerId).rename({ name });
      // The copy an earlier change kept is part of this one now (its layers stay under the new tag).
      const repo = keptImage(name, '').repo;
      if (old?.Config.Image.startsWith(`${repo}:`)) await docker.getImage(old.Config.Image).remove().catch(() => undefined);
    });
  }

  async start(target: NodeTarget, containerId: string): Promise<void> {
    const docker = this.client(target);
    await guard(target, () => start(docker, containerId));
  }

  async stop(target: NodeTarget, containerId: string, timeoutSeconds?: number): Promise<void> {
    const docker = this.client(target);
    await guard(target, () => acceptNotModified(docker.getContainer(containerId).stop(graceOf(timeoutSeconds))));
  }

  async restart(target: NodeTarget, containerId: string, timeoutSeconds?: number): Promise<void> {
    const docker = this.client(target);
    await guard(target, () => docker.getContainer(containerId).restart(graceOf(timeoutSeconds)));
  }

  async remove(
    target: NodeTarget,
    ref: { containerId: string | null; name: string; volumes: readonly string[]; keepVolumes?: boolean },
  ): Promise<{ removed: string[]; failed: { what: string; reason: string }[] }> {
    const docker = this.client(target);
    const outcome = { removed: [] as string[], failed: [] as { what: string; reason: string }[] };
    const volumes = new Set(ref.volumes);
    const what = `container ${ref.name}`;

    let container: Docker.ContainerInspectInfo | null = null;
    try {
      container = ref.containerId !== null ? await inspectOrNull(docker, ref.containerId) : await findByName(docker, ref.name);
    } catch (error) {
      outcome.failed.push({ what, reason: rejectionOf(error, target).message });
    }
    if (container) {
      if (!ref.keepVolumes) for (const volume of namedVolumes(container.Mounts)) volumes.add(volume);
      const id = container.Id;
      // v: false: the volumes go one by one below, so that each has its own outcome.
      await settle(target, what, () => docker.getContainer(id).remove({ force: true, v: false }), outcome);
    } else if (outcome.failed.length === 0) {
      outcome.removed.push(what);
    }
    for (const volume of volumes) {
      await settle(target, `volume ${volume}`, () => docker.getVolume(volume).remove(), outcome);
    }
    if (ref.keepVolumes) return outcome;
    // Files kept by a change of GPU mode (无卡模式) go with the container.
    const keptRepo = keptImage(ref.name, '').repo;
    const keptImages = await docker.listImages({ filters: { reference: [`${keptRepo}:*`] } }).catch(() => []);
    for (const image of keptImages) {
      await settle(target, `image ${image.RepoTags?.[0] ?? image.Id}`, () => docker.getImage(image.Id).remove({ force: true }), outcome);
    }
    return outcome;
  }

  async inspect(target: NodeTarget, containerIdOrName: string): Promise<ContainerState | null> {
    const docker = this.client(target);
    const info = await guard(target, () => inspectOrNull(docker, containerIdOrName));
    return info && stateOfInspect(info);
  }

  /**
   * One list call for all of them. The list API carries no OOM flag, error text or start and
   * finish times (they come back false, '' and null); `inspect` one container for those.
   */
  async listManaged(target: NodeTarget): Promise<ContainerState[]> {
    const docker = this.client(target);
    const containers = await guard(target, () =>
      docker.listContainers({ all: true, filters: { label: ['managed-by=tianqi'] } }),
    );
    return containers.map(stateOfListed);
  }

  // Deferred so that each subscription (a resubscription included) takes the node's current client.
  events(target: NodeTarget, sinceNano?: bigint): Observable<ContainerEvent> {
    return defer(() => containerEvents(this.client(target), target.nodeId, sinceNano));
  }

  stats(target: NodeTarget, containerId: string): Observable<StatsSample> {
    return defer(() => containerStats(this.client(target), containerId)).pipe(
      catchError((err: unknown) => throwError(() => toRuntimeError(err, target))),
    );
  }

  /** Event, log and stats streams open to the engines now (what a leak would grow). */
  get openStreams(): number {
    return openEngineStreams.count;
  }

  logs(target: NodeTarget, containerId: string, options: LogOptions): Observable<LogLine> {
    return defer(() => containerLogs(this.client(target), containerId, options)).pipe(
      catchError((err: unknown) => throwError(() => toRuntimeError(err, target))),
    );
  }

  async gpuMemory(target: NodeTarget, containerId: string): Promise<GpuMemoryReading[] | null> {
    const docker = this.client(target);
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), GPU_QUERY_TIMEOUT_MS);
    try {
      const output = await execOutput(docker, containerId, NVIDIA_SMI_QUERY, controller.signal);
      return output === null ? null : parseGpuMemory(output);
    } catch (error) {
      if (controller.signal.aborted) return null;
      const mapped = toRuntimeError(error, target);
      // Not running, gone, no nvidia-smi: no reading. An unreachable engine is still an outage.
      if (mapped instanceof EngineRejectedError) return null;
      throw mapped;
    } finally {
      clearTimeout(timer);
    }
  }

  async exec(target: NodeTarget, containerId: string, options: ExecOptions): Promise<ExecSession> {
    const docker = this.client(target);
    return guard(target, () => openExec(docker, containerId, options, (error) => toRuntimeError(error, target)));
  }

  async hasExecutable(target: NodeTarget, containerId: string, path: string): Promise<boolean> {
    const docker = this.client(target);
    return guard(target, () => isExecutable(docker, containerId, path));
  }

  async architecture(target: NodeTarget): Promise<string> {
    const known = this.architectures.get(target.nodeId);
    if (known) return known;
    const docker = this.client(target);
    const info = await guard(target, () => docker.info() as Promise<{ Architecture?: string }>);
    const arch = goArchitecture(info.Architecture ?? '');
    this.architectures.set(target.nodeId, arch);
    return arch;
  }

  /** Network makes under way, per node and name: concurrent creates of one tenant wait for one make. */
  private readonly networksInFlight = new Map<string, Promise<void>>();

  async ensureNetwork(target: NodeTarget, network: NetworkPlan): Promise<void> {
    // Docker does not enforce unique network names: two makes at once can leave two networks of
    // one name (and a bridge-name clash). One make per name at a time on this replica, which is
    // the only one provisioning (a singleton).
    const key = `${target.nodeId}|${network.name}`;
    let running = this.networksInFlight.get(key);
    if (!running) {
      const docker = this.client(target);
      running = guard(target, () => ensureNetwork(docker, network)).finally(() => this.networksInFlight.delete(key));
      this.networksInFlight.set(key, running);
    }
    await running;
  }

  async removeNetworkIfUnused(target: NodeTarget, name: string): Promise<boolean> {
    const docker = this.client(target);
    return guard(target, () => removeNetworkIfUnused(docker, name));
  }

  async ensureSystemContainer(target: NodeTarget, spec: SystemContainer): Promise<void> {
    const docker = this.client(target);
    await guard(target, () => ensureSystemContainer(docker, spec));
  }

  async removeSystemContainers(target: NodeTarget, labels: Readonly<Record<string, string>>): Promise<number> {
    const docker = this.client(target);
    return guard(target, () => removeSystemContainers(docker, labels));
  }

  async runGpuQuery(target: NodeTarget, image: SystemContainer, args: readonly string[]): Promise<{ stdout: string } | { error: string } | null> {
    const docker = this.client(target);
    return guard(target, () => runGpuQuery(docker, image, args));
  }

  async hostFileExists(target: NodeTarget, image: SystemContainer, hostDir: string, file: string): Promise<boolean> {
    const docker = this.client(target);
    return guard(target, () => hostFileExists(docker, image, hostDir, file));
  }

  async runSystemTask(target: NodeTarget, spec: SystemContainer): Promise<{ exitCode: number; output: string }> {
    const docker = this.client(target);
    return guard(target, () => runSystemTask(docker, spec));
  }

  async statPath(target: NodeTarget, containerId: string, path: string): Promise<PathStat | null> {
    const docker = this.client(target);
    return guard(target, () => statPath(docker, containerId, path));
  }

  async putArchive(target: NodeTarget, containerId: string, dir: string, tar: Buffer): Promise<void> {
    const docker = this.client(target);
    await guard(target, () => putArchive(docker, containerId, dir, tar));
  }

  private client(target: NodeTarget): Docker {
    try {
      return this.pool.client(target.nodeId, target.settings);
    } catch (error) {
      // Only a malformed endpoint gets here: no request can be made to it.
      throw new EngineUnavailableError(target.nodeId, error instanceof Error ? error.message : String(error));
    }
  }
}

/** Runs one operation and throws what it failed with as the port's errors. */
async function guard<T>(target: NodeTarget, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    throw toRuntimeError(error, target);
  }
}

/** A refusal as EngineRejectedError; anything else, an unreachable engine first of all, is thrown. */
function rejectionOf(error: unknown, target: NodeTarget): EngineRejectedError {
  const mapped = toRuntimeError(error, target);
  if (mapped instanceof EngineRejectedError) return mapped;
  throw mapped;
}

/** One removal: gone already counts as removed, a refusal is noted and the next one goes on. */
async function settle(
  target: NodeTarget,
  what: string,
  work: () => Promise<unknown>,
  outcome: { removed: string[]; failed: { what: string; reason: string }[] },
): Promise<void> {
  try {
    await work();
    outcome.removed.push(what);
  } catch (error) {
    const rejection = rejectionOf(error, target);
    if (rejection.statusCode === NOT_FOUND) outcome.removed.push(what);
    else outcome.failed.push({ what, reason: rejection.message });
  }
}

async function acceptNotModified(request: Promise<unknown>): Promise<void> {
  try {
    await request;
  } catch (error) {
    // Already started / already stopped: the state asked for is the state it is in.
    if (statusOf(error) !== NOT_MODIFIED) throw error;
  }
}

function start(docker: Docker, containerId: string): Promise<void> {
  return acceptNotModified(docker.getContainer(containerId).start());
}

function graceOf(timeoutSeconds: number | undefined): { t?: number } {
  return timeoutSeconds === undefined ? {} : { t: timeoutSeconds };
}

async function imageExists(docker: Docker, image: string): Promise<boolean> {
  try {
    await docker.getImage(image).inspect();
    return true;
  } catch (error) {
    if (statusOf(error) === NOT_FOUND) return false;
    throw error;
  }
}

async function inspectOrNull(docker: Docker, containerIdOrName: string): Promise<Docker.ContainerInspectInfo | null> {
  try {
    return await docker.getContainer(containerIdOrName).inspect();
  } catch (error) {
    if (statusOf(error) === NOT_FOUND) return null;
    throw error;
  }
}

/**
 * The container with exactly this name. Not `inspect(name)`: the engine also resolves a name that
 * happens to be a prefix of another container's id, and its `name` filter matches substrings.
 */
/** Where a container's files are kept while it is made again (无卡模式 on or off): one tag per container it was. */
function keptImage(containerName: string, containerId: string): { repo: string; tag: string; ref: string } {
  const repo = `tianqi/kept-${containerName.toLowerCase()}`;
  const tag = containerId.slice(0, 12) || 'none';
  return { repo, tag, ref: `${repo}:${tag}` };
}

async function findByName(docker: Docker, name: string): Promise<Docker.ContainerInspectInfo | null> {
  const listed = await docker.listContainers({ all: true, filters: { name: [name] } });
  const match = listed.find((container) => container.Names.includes(`/${name}`));
  return match ? inspectOrNull(docker, match.Id) : null;
}

/**
 * The engine reserves a name before the container it is for can be listed or inspected, so the
 * attempt that lost a race for the name may have to wait a moment to see the one that won.
 */
async function awaitCreated(docker: Docker, name: string): Promise<Docker.ContainerInspectInfo | null> {
  for (let attempt = 0; attempt < NAME_RACE_POLLS; attempt += 1) {
    const found = await findByName(docker, name);
    if (found) return found;
    await delay(NAME_RACE_POLL_MS);
  }
  return null;
}

async function startExisting(
  docker: Docker,
  container: Docker.ContainerInspectInfo,
): Promise<{ containerId: string; storageOptApplied: boolean }> {
  // Running covers paused and restarting too: the engine already looks after those.
  if (!container.State.Running) await start(docker, container.Id);
  return { containerId: container.Id, storageOptApplied: container.HostConfig.StorageOpt?.size !== undefined };
}

async function create(docker: Docker, plan: ContainerPlan): Promise<{ containerId: string; storageOptApplied: boolean }> {
  const options = createOptions(plan);
  if (!options.HostConfig?.StorageOpt) return { containerId: (await docker.createContainer(options)).id, storageOptApplied: false };
  try {
    return { containerId: (await docker.createContainer(options)).id, storageOptApplied: true };
  } catch (error) {
    // Most engines (overlay2 off xfs with pquota, vfs without quotas) cannot cap the root disk;
    // the instance still runs, and the caller learns the cap is missing.
    if (!isStorageOptUnsupported(error)) throw error;
    const { StorageOpt: _refused, ...hostConfig } = options.HostConfig;
    return { containerId: (await docker.createContainer({ ...options, HostConfig: hostConfig })).id, storageOptApplied: false };
  }
}

function createOptions(plan: ContainerPlan): Docker.ContainerCreateOptions {
  const hostConfig: Docker.HostConfig = {
    NanoCpus: plan.nanoCpus,
    Memory: plan.memoryBytes,
    // Swap equal to the limit means no swap beyond it: memory over the limit is an OOM kill, not a crawl.
    MemorySwap: plan.memoryBytes,
    ShmSize: plan.shmSizeBytes,
    RestartPolicy: { Name: 'unless-stopped' },
    // An init process (Docker's --init, tini) as PID 1: orphans are reaped, and SIGTERM ends the
    // container when its process ends, not after the grace period and a SIGKILL.
    Init: true,
    ...(plan.network ? { NetworkMode: plan.network } : {}),
    Binds: [...plan.binds],
    Mounts: plan.dataVolume === null ? [] : [{ Type: 'volume', Source: plan.dataVolume, Target: DATA_MOUNT_POINT }],
  };
  // No GPU: no device request at all, so that the container runs on engines without the NVIDIA runtime.
  if (plan.gpuDeviceIds.length > 0) {
    hostConfig.DeviceRequests = [{ Driver: 'nvidia', DeviceIDs: [...plan.gpuDeviceIds], Capabilities: [['gpu']] }];
  }
  if (plan.systemDiskGb > 0) hostConfig.StorageOpt = { size: `${plan.systemDiskGb}G` };
  if (plan.tmpfs) {
    for (const [path, sizeBytes] of Object.entries(plan.tmpfs)) {
      hostConfig.Mounts!.push({ Type: 'tmpfs', Target: path, TmpfsOptions: { SizeBytes: sizeBytes } } as Docker.MountSettings);
    }
  }
  // Every address of the node: its public IP may be a cloud's NAT address the host does not carry.
  const published = plan.publishedPorts ?? [];
  if (published.length > 0) hostConfig.PortBindings = Object.fromEntries(published.map((p) => [`${p.port}/tcp`, [{ HostIp: '', HostPort: String(p.hostPort) }]]));
  const limits = plan.limits;
  if (limits) {
    if (limits.pidsLimit > 0) hostConfig.PidsLimit = limits.pidsLimit;
    hostConfig.LogConfig = { Type: 'json-file', Config: { 'max-size': `${limits.logMaxSizeMb}m`, 'max-file': String(limits.logMaxFiles) } };
    if (limits.noNewPrivileges) hostConfig.SecurityOpt = ['no-new-privileges:true'];
    if (limits.capDrop.length > 0) hostConfig.CapDrop = [...limits.capDrop];
  }
  return {
    name: plan.name,
    Image: plan.image,
    Labels: { ...plan.labels },
    Env: [...plan.env],
    ...(published.length > 0 ? { ExposedPorts: Object.fromEntries(published.map((p) => [`${p.port}/tcp`, {}])) } : {}),
    HostConfig: hostConfig,
  };
}

/** One line of `POST /images/create` progress, as far as it is read here. */
interface PullEvent {
  readonly id?: string;
  readonly status?: string;
  readonly progressDetail?: { readonly current?: number; readonly total?: number };
  readonly error?: string;
  readonly errorDetail?: { readonly message?: string };
}

function pull(docker: Docker, image: string, report: (status: string) => void): Promise<void> {
  return docker.pull(image).then(
    (stream) =>
      new Promise<void>((resolve, reject) => {
        const progress = new PullProgress(image);
        let failure: string | undefined;
        docker.modem.followProgress(
          stream,
          (error) => {
            if (error) reject(error);
            // The engine reports a failure met after its 200 OK in the stream itself; 500 stands for it.
            else if (failure !== undefined) reject(new EngineRejectedError(500, failure));
            else resolve();
          },
          (event: PullEvent) => {
            const message = event.errorDetail?.message ?? event.error;
            if (message !== undefined) failure ??= message;
            else if (progress.update(event)) report(progress.text());
          },
        );
      }),
  );
}

/** Statuses of the lines about one layer (the others are about the whole pull). */
const LAYER_STATUS = /^(?:Pulling fs layer|Waiting|Downloading|Verifying Checksum|Download complete|Extracting|Pull complete|Already exists|Retrying)/;

interface LayerProgress {
  downloadedBytes: number;
  sizeBytes: number | undefined;
  done: boolean;
}

/** Sums up the per-layer lines of a pull into `pulling <image> — 3/7 layers, 412 MB of 1.2 GB`. */
export class PullProgress {
  private readonly layers = new Map<string, LayerProgress>();

  constructor(private readonly image: string) {}

  /** Takes one progress line; true when it was about a layer. */
  update(event: PullEvent): boolean {
    const { id, status } = event;
    if (id === undefined || status === undefined || !LAYER_STATUS.test(status)) return false;
    const layer = this.layers.get(id) ?? { downloadedBytes: 0, sizeBytes: undefined, done: false };
    this.layers.set(id, layer);
    const { current, total } = event.progressDetail ?? {};
    if (status.startsWith('Downloading')) {
      if (typeof total === 'number' && total > 0) layer.sizeBytes = total;
      if (typeof current === 'number') layer.downloadedBytes = current;
    } else if (/^(?:Verifying Checksum|Download complete|Extracting|Pull complete)/.test(status)) {
      layer.downloadedBytes = layer.sizeBytes ?? layer.downloadedBytes;
    }
    if (status.startsWith('Pull complete') || status.startsWith('Already exists')) layer.done = true;
    return true;
  }

  text(): string {
    if (this.layers.size === 0) return `pulling ${this.image}`;
    let done = 0;
    let downloaded = 0;
    let size = 0;
    for (const layer of this.layers.values()) {
      if (layer.done) done += 1;
      // Layers the node already has have no size in the stream, and nothing to download.
      if (layer.sizeBytes !== undefined) {
        downloaded += layer.downloadedBytes;
        size += layer.sizeBytes;
      }
    }
    const counts = `${done}/${this.layers.size} layers`;
    return size > 0
      ? `pulling ${this.image} — ${counts}, ${formatBytes(downloaded)} of ${formatBytes(size)}`
      : `pulling ${this.image} — ${counts}`;
  }
}

/** Decimal units, as registries and `docker pull` show sizes. */
export function formatBytes(bytes: number): string {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(1)} GB`;
  if (bytes >= 1e6) return `${Math.round(bytes / 1e6)} MB`;
  return `${Math.round(bytes / 1e3)} kB`;
}

/** At most one report a PROGRESS_INTERVAL_MS; a failing reporter never fails the pull. */
function throttled(onProgress: ((status: string) => void) | undefined): (status: string) => void {
  let last = Number.NEGATIVE_INFINITY;
  return (status) => {
    const now = Date.now();
    if (!onProgress || now - last < PROGRESS_INTERVAL_MS) return;
    last = now;
    try {
      onProgress(status);
    } catch {
      // Progress is a courtesy; the pull itself is what the caller waits for.
    }
  };
}

/**
 * Runs `cmd` in the container and returns its stdout, or null when it exits non-zero (or not at
 * all as far as the engine knows). Rejects as the engine does: not running, no such container.
 */
/**
 * The stdout of a short query run in the container (nvidia-smi), or null when it failed. The
 * program is the tenant's: it gets `signal`'s deadline and at most EXEC_OUTPUT_LIMIT bytes of
 * output, past which the answer is null and the connection is cut.
 */
async function execOutput(docker: Docker, containerId: string, cmd: readonly string[], signal: AbortSignal): Promise<string | null> {
  const exec = await docker.getContainer(containerId).exec({ Cmd: [...cmd], AttachStdout: true, AttachStderr: true, abortSignal: signal });
  const stream = await exec.start({ Detach: false, Tty: false, abortSignal: signal });
  let overLimit = false;
  const stdout = await new Promise<string>((resolve, reject) => {
    const out = new PassThrough();
    const chunks: Buffer[] = [];
    let bytes = 0;
    out.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > EXEC_OUTPUT_LIMIT) {
        overLimit = true;
        (stream as NodeJS.ReadableStream & { destroy(): void }).destroy();
        return;
      }
      chunks.push(chunk);
    });
    // stderr is not read, but it must flow or a chatty command would stall the stream.
    const err = new PassThrough().resume();
    docker.modem.demuxStream(stream, out, err);
    const abort = () => (stream as NodeJS.ReadableStream & { destroy(): void }).destroy();
    signal.addEventListener('abort', abort, { once: true });
    stream.on('error', reject);
    stream.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    stream.on('close', () => (signal.aborted ? reject(signal.reason) : resolve(Buffer.concat(chunks).toString('utf8'))));
  });
  if (overLimit) return null;
  const { ExitCode } = await exec.inspect({ abortSignal: signal });
  return ExitCode === SUCCESS ? stdout : null;
}

function stateOfInspect(info: Docker.ContainerInspectInfo): ContainerState {
  const status = statusOfText(info.State.Status);
  return {
    id: info.Id,
    name: info.Name.replace(/^\//, ''),
    status,
    exitCode: hasExited(status) ? info.State.ExitCode : null,
    oomKilled: info.State.OOMKilled,
    error: info.State.Error ?? '',
    startedAt: timeOf(info.State.StartedAt),
    finishedAt: timeOf(info.State.FinishedAt),
    labels: info.Config.Labels ?? {},
    volumes: namedVolumes(info.Mounts),
    addresses: networkAddresses(info.NetworkSettings?.Networks),
  };
}

function stateOfListed(container: Docker.ContainerInfo): ContainerState {
  const status = statusOfText(container.State);
  // A container's own name has one slash; the others (`/web/db`) are link aliases.
  const name = container.Names.find((alias) => alias.lastIndexOf('/') === 0) ?? container.Names[0] ?? '';
  return {
    id: container.Id,
    name: name.replace(/^\//, ''),
    status,
    // The list API has the exit code only in its human text: `Exited (137) 5 minutes ago`.
    exitCode: hasExited(status) ? exitCodeOfText(container.Status) : null,
    oomKilled: false,
    error: '',
    startedAt: null,
    finishedAt: null,
    labels: container.Labels ?? {},
    volumes: namedVolumes(container.Mounts),
    addresses: networkAddresses(container.NetworkSettings?.Networks),
  };
}

function statusOfText(text: string): ContainerStatus {
  // The engine's states are a closed set; one this code does not know is not one to count on.
  return CONTAINER_STATUSES.has(text) ? (text as ContainerStatus) : 'dead';
}

/** Docker resets the exit code to 0 when a container starts: only a stopped one has a real one. */
function hasExited(status: ContainerStatus): boolean {
  return status === 'exited' || status === 'dead' || status === 'restarting';
}

function exitCodeOfText(text: string): number | null {
  const match = /^Exited \((-?\d+)\)/.exec(text);
  return match ? Number(match[1]) : null;
}

/** Docker writes "never" as Go's zero time. */
function timeOf(text: string | undefined): string | null {
  return !text || text.startsWith('0001-01-01') ? null : text;
}

function namedVolumes(mounts: readonly { Type: string; Name?: string | undefined }[] | null | undefined): string[] {
  return (mounts ?? []).flatMap((mount) => (mount.Type === 'volume' && mount.Name ? [mount.Name] : []));
}

/** The container's IPv4 addresses on its networks, as the node's host reaches them. */
function networkAddresses(networks: Record<string, { IPAddress?: string }> | undefined): string[] {
  return Object.values(networks ?? {}).flatMap((n) => (n.IPAddress ? [n.IPAddress] : []));
}
