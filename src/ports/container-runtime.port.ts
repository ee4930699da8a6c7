import type { Duplex, Readable } from 'node:stream';
import type { Observable } from 'rxjs';
import type { DockerConnectionSettings } from './docker.port.ts';

/** A node's engine: which node (for the cached client) and how to reach it. */
export interface NodeTarget {
  readonly nodeId: string;
  readonly settings: DockerConnectionSettings;
}

/** Everything the runtime needs to create an instance's container. */
export interface ContainerPlan {
  /** Deterministic: `<instance name>-<instance id>-<unix seconds of the request>`. A retry finds it by this name. */
  readonly name: string;
  readonly image: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly env: readonly string[];
  /** CPU limit in units of 1e-9 CPUs (HostConfig.NanoCpus). */
  readonly nanoCpus: number;
  readonly memoryBytes: number;
  readonly shmSizeBytes: number;
  /** System disk size via StorageOpt `size` where the storage driver allows it; 0 = none. */
  readonly systemDiskGb: number;
  /** Named volume mounted at /data, or null for none. */
  readonly dataVolume: string | null;
  /** GPU indices for a DeviceRequest with driver `nvidia`; empty = no GPU parameters at all. */
  readonly gpuDeviceIds: readonly string[];
  /** Bind mounts, Docker syntax `host:container[:ro]`. */
  readonly binds: readonly string[];
  /** The bridge network it joins (NetworkMode); absent: the engine's default bridge. */
  readonly network?: string;
  /** Tmpfs mounts: path in the container → size in bytes. */
  readonly tmpfs?: Readonly<Record<string, number>>;
  /** What the container may not do beyond its CPU and memory: processes, log size, privileges. */
  readonly limits?: ContainerLimits;
  /** TCP ports published on every address of the node: container port → host port. */
  readonly publishedPorts?: readonly { port: number; hostPort: number }[];
}

/** A user's bridge network on a node: their instances talk to each other, nobody else's. */
export interface NetworkPlan {
  readonly name: string;
  /** The host's name of the bridge (15 characters at most): the node guard matches its prefix. */
  readonly bridgeName: string;
  readonly labels: Readonly<Record<string, string>>;
  /** No way out of the bridge at all (Docker's internal network): for specs without internet. */
  readonly internal?: boolean;
}

/** A container the platform itself keeps running on a node (the node guard), from an image it imports. */
export interface SystemContainer {
  readonly name: string;
  /** `repo:tag` of the image; imported from `rootfs()` (a tar) when the node lacks it. */
  readonly image: string;
  readonly rootfs: () => Buffer;
  readonly cmd: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  /** Runs in the host's network namespace with these capabilities only. */
  readonly capAdd: readonly string[];
  /** Bind mounts, Docker syntax `host:container[:ro]`. */
  readonly binds?: readonly string[];
  /**
   * Containers with these labels and another name are earlier versions of this one (another
   * build, other settings): removed before this one is created, so that one runs at a time.
   */
  readonly supersedes?: Readonly<Record<string, string>>;
}

/** Limits every instance's container gets (TIANQI_CONTAINER_* settings). */
export interface ContainerLimits {
  /** Processes and threads at most: a fork bomb stays inside (0: the engine's default, none). */
  readonly pidsLimit: number;
  /** json-file log rotation: the size of one file in MB, and how many are kept. */
  readonly logMaxSizeMb: number;
  readonly logMaxFiles: number;
  /** `no-new-privileges`: setuid programs (sudo, su) gain nothing. */
  readonly noNewPrivileges: boolean;
  /** Capabilities taken away from Docker's default set. */
  readonly capDrop: readonly string[];
}

export type ContainerStatus = 'created' | 'running' | 'paused' | 'restarting' | 'removing' | 'exited' | 'dead';

export interface ContainerState {
  readonly id: string;
  readonly name: string;
  readonly status: ContainerStatus;
  readonly exitCode: number | null;
  readonly oomKilled: boolean;
  /** Docker's own error text (State.Error), '' when none. */
  readonly error: string;
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
  readonly labels: Readonly<Record<string, string>>;
  /** Named volumes the container mounts. */
  readonly volumes: readonly string[];
  /** Its IP addresses on its networks (reachable from the node's host only); empty when stopped. */
  readonly addresses?: readonly string[];
}

/** A container state change as the engine's `/events` stream reports it. */
export interface ContainerEvent {
  readonly containerId: string;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  /** `start`, `die`, `stop`, `kill`, `oom`, `destroy`, `pause`, `unpause`, `restart`, `create`… */
  readonly action: string;
  readonly exitCode: number | null;
  /** Nanoseconds since the epoch (timeNano): the resume point for `since`. */
  readonly timeNano: bigint;
}

/** One `docker stats`-style sample. */
export interface StatsSample {
  readonly cpuPercent: number;
  readonly memoryUsageBytes: number;
  readonly memoryLimitBytes: number;
  readonly memoryPercent: number;
  readonly networkRxBytes: number;
  readonly networkTxBytes: number;
  readonly blockReadBytes: number;
  readonly blockWriteBytes: number;
  readonly pids: number;
  readonly at: string;
}

export interface LogLine {
  readonly stream: 'stdout' | 'stderr';
  /** RFC 3339 timestamp Docker recorded for the line. */
  readonly time: string;
  readonly text: string;
}

export interface LogOptions {
  readonly tail: number;
  readonly follow: boolean;
  readonly paused$?: Observable<boolean>;
}

export interface GpuMemoryReading {
  /** Position of the card as the container sees it (0-based). */
  readonly index: number;
  readonly usedBytes: number;
  readonly totalBytes: number;
  /** The card's utilisation over nvidia-smi's sample period, 0–100; null where the card does not say. */
  readonly utilizationPercent: number | null;
}

/** An interactive process in a container (a shell for the web terminal or the SSH jump host). */
export interface ExecSession {
  /** Raw bytes both ways; with a TTY there is one stream (no stdout/stderr multiplexing). */
  readonly stream: Duplex;
  /**
   * Without a TTY, the process's stderr (`stream` then reads its stdout alone). Read both: while
   * either is full, nothing more comes from the process.
   */
  readonly stderr?: Readable;
  resize(cols: number, rows: number): Promise<void>;
  /** Resolves with the exit code once the process ended (null when the engine cannot say). */
  exited(): Promise<number | null>;
  /** Ends the process's connection (the shell gets a hang-up). */
  close(): void;
}

export interface ExecOptions {
  readonly cmd: readonly string[];
  readonly tty: boolean;
  readonly env?: readonly string[];
  /** Initial size, applied before the process prints its first prompt. */
  readonly cols?: number;
  readonly rows?: number;
  readonly workingDir?: string;
}

/** A path in a container as the engine's archive API sees it. */
export interface PathStat {
  readonly size: number;
  /** Go's os.FileMode bits, as the engine reports them (type bits high, permissions low). */
  readonly mode: number;
}

/** The engine cannot be reached (connection refused, timeout, TLS failure): 503, retry later. */
export class EngineUnavailableError extends Error {
  constructor(readonly nodeId: string, reason: string) {
    super(reason);
    this.name = 'EngineUnavailableError';
  }
}

/** The engine answered and refused (bad image, no such runtime, conflict): its message, verbatim. */
export class EngineRejectedError extends Error {
  constructor(readonly statusCode: number, message: string) {
    super(message);
    this.name = 'EngineRejectedError';
  }
}

/**
 * Container operations on a node's engine. Every method throws EngineUnavailableError when the
 * engine cannot be reached and EngineRejectedError when it refuses.
 */
export interface ContainerRuntime {
  /** Pulls `image` unless the node has it; reports pull progress in words. */
  ensureImage(target: NodeTarget, image: string, onProgress?: (status: string) => void): Promise<void>;
  /**
   * Creates the container (or finds it by its deterministic name) and starts it. Idempotent.
   * `storageOptApplied` is false when the storage driver refused a size and it was created without.
   */
  createAndStart(target: NodeTarget, plan: ContainerPlan): Promise<{ containerId: string; storageOptApplied: boolean }>;
  /**
   * Makes a stopped container again from its plan (other GPUs: 无卡模式 on or off), keeping its
   * files: they are committed to an image the new container (named `<name>-next` until `replace`,
   * same data volume) starts from; not started, the old one untouched. Safe to retry.
   */
  recreate(target: NodeTarget, containerId: string, plan: ContainerPlan): Promise<{ containerId: string; storageOptApplied: boolean }>;
  /** After `recreate` was recorded: the old container removed (not its volumes), the new one given the name. Safe to retry. */
  replace(target: NodeTarget, oldContainerId: string, newContainerId: string, name: string): Promise<void>;
  start(target: NodeTarget, containerId: string): Promise<void>;
  stop(target: NodeTarget, containerId: string, timeoutSeconds?: number): Promise<void>;
  restart(target: NodeTarget, containerId: string, timeoutSeconds?: number): Promise<void>;
  /**
   * Removes the container (forced), then every named volume it mounted plus `volumes`, and still
   * removes the volumes when the container removal failed. A thing already gone counts as removed.
   */
  remove(target: NodeTarget, ref: { containerId: string | null; name: string; volumes: readonly string[]; keepVolumes?: boolean }): Promise<{
    removed: string[];
    failed: { what: string; reason: string }[];
  }>;
  /** null when there is no such container. */
  inspect(target: NodeTarget, containerIdOrName: string): Promise<ContainerState | null>;
  /** Containers labelled `managed-by=tianqi`. */
  listManaged(target: NodeTarget): Promise<ContainerState[]>;
  /**
   * Container events of the node, from `sinceNano` on (or now). Reconnects with backoff and
   * resumes with `since` (a small overlap, de-duplicated), until unsubscribed.
   */
  events(target: NodeTarget, sinceNano?: bigint): Observable<ContainerEvent>;
  /** `docker stats` samples of one container, one per second or so, until unsubscribed. */
  stats(target: NodeTarget, containerId: string): Observable<StatsSample>;
  /**
   * Demultiplexed log lines with timestamps: the last `tail` lines, then new ones while `follow`.
   * While `paused$` says true, reading from the engine stops (its connection's window fills and
   * the engine waits), so a consumer that cannot keep up holds no growing buffer.
   */
  logs(target: NodeTarget, containerId: string, options: LogOptions): Observable<LogLine>;
  /**
   * GPU memory of each card the container sees, read inside it (`nvidia-smi --query-gpu=…`);
   * null when it cannot be read (no nvidia-smi, no driver, container not running).
   */
  gpuMemory(target: NodeTarget, containerId: string): Promise<GpuMemoryReading[] | null>;
  /** Starts a process in a running container and attaches to it. */
  exec(target: NodeTarget, containerId: string, options: ExecOptions): Promise<ExecSession>;
  /** Whether `path` exists and is executable in the container (to choose bash over sh). */
  hasExecutable(target: NodeTarget, containerId: string, path: string): Promise<boolean>;
  /** The engine's CPU architecture in Go's words (`amd64`, `arm64`…), from `docker info`. */
  architecture(target: NodeTarget): Promise<string>;
  /** The path's size and mode in the container (the archive API, no process started), null when absent. */
  statPath(target: NodeTarget, containerId: string, path: string): Promise<PathStat | null>;
  /** Creates the network unless the node has it; safe when two creates race. */
  ensureNetwork(target: NodeTarget, network: NetworkPlan): Promise<void>;
  /** Removes the network unless a container still uses it (then false); a network already gone counts as removed. */
  removeNetworkIfUnused(target: NodeTarget, name: string): Promise<boolean>;
  /**
   * Keeps the system container running (restart policy always): started when stopped, created
   * (its image imported first if needed) when missing. The container stays across restarts of
   * the engine and the node.
   */
  ensureSystemContainer(target: NodeTarget, spec: SystemContainer): Promise<void>;
  /**
   * Card discovery: `nvidia-smi <args>` run once in a container of `image` given every card, no
   * network; its stdout, or why it failed; null when the engine has no NVIDIA device driver.
   */
  runGpuQuery(target: NodeTarget, image: SystemContainer, args: readonly string[]): Promise<{ stdout: string } | { error: string } | null>;
  /** Whether `file` is in the node's directory `hostDir` (a container of `image` is made, not started, with it bound read-only). */
  hostFileExists(target: NodeTarget, image: SystemContainer, hostDir: string, file: string): Promise<boolean>;
  /** Removes the system containers with these labels, running or not: how many there were. */
  removeSystemContainers(target: NodeTarget, labels: Readonly<Record<string, string>>): Promise<number>;
  /** Runs the system container's command once (no restart) and removes it: its exit code and last lines. */
  runSystemTask(target: NodeTarget, spec: SystemContainer): Promise<{ exitCode: number; output: string }>;
  /** Unpacks a tar archive into the directory `dir` of the container (the archive API, as `docker cp`). */
  putArchive(target: NodeTarget, containerId: string, dir: string, tar: Buffer): Promise<void>;
}
