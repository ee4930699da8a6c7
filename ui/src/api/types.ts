import type { Words } from '@/composables/words.ts';
/** Shapes of the API's answers (see GET /api/openapi.json and ../shared/API.md). */

export type Role = 'user' | 'admin';

export interface SshKey {
  id: string;
  name: string;
  publicKey: string;
  keyType: string;
  fingerprint: string;
  addedAt: string;
}

export interface User {
  id: string;
  username: string;
  role: Role;
  disabled: boolean;
  displayName: string;
  createdAt: string;
  updatedAt: string;
  sshKeys: SshKey[];
}

export interface LoginAnswer {
  token: string;
  expiresIn: number;
  user: User;
}

export interface Image {
  id: string;
  name: string;
  address: string;
  description: string;
  source: string;
  vgpuSupported: boolean;
  /** Ports its services listen on (JupyterLab 8888…): every instance of the image offers them. */
  ports: ServicePortInput[];
  listed: boolean;
  remark: string;
  createdAt: string;
  updatedAt: string;
}

export interface ServicePortInput {
  port: number;
  name: string;
  protocol: 'http' | 'tcp';
}

export interface Spec {
  id: string;
  name: string;
  gpuModel: string;
  gpuCount: number;
  gpuMemoryGb: number;
  vgpuSupported: boolean;
  cpuCores: number;
  memoryGb: number;
  systemDiskGb: number;
  dataDiskGb: number;
  pricePerHour: number;
  listed: boolean;
  remark: string;
  /** false: 无外网, instances reach nothing beyond their own bridge. */
  internet: boolean;
  /** 空闲自动关机 for this spec's running instances, or null. */
  idleStop: IdlePolicy | null;
  /** 无卡模式: price per hour without GPUs; null: not offered. */
  noGpuPricePerHour: number | null;
  /** 公网端口: how many service ports an instance may publish on its node's public IP (0: none). */
  publicPorts: number;
  /** 停止宽限期: seconds after SIGTERM before a stop kills the processes. */
  stopGraceSeconds: number;
  /** The spec's exceptions to the platform's container limits; an absent field keeps the platform's. */
  containerOverrides?: {
    /** Processes and threads at most (0 = no limit; platform default 8192). */
    pidsLimit?: number;
    /** false: setuid programs such as sudo work in the spec's containers. */
    noNewPrivileges?: boolean;
  };
  createdAt: string;
  updatedAt: string;
}

export type DockerStatus = 'connected' | 'failed' | 'unknown';

export interface EngineFacts {
  serverVersion: string;
  cpus: number;
  memoryBytes: number;
  operatingSystem: string;
  kernelVersion: string;
  architecture: string;
  storageDriver: string;
  nvidiaRuntime: boolean;
  runtimes: string[];
  /** Card discovery: the cards nvidia-smi reads through the engine (unavailable: not seen on the last read). */
  gpuInventory?: {
    cards: { index: number; uuid: string; model: string; memoryGb: number; migMode: 'enabled' | 'disabled' | 'n/a'; available: boolean }[];
    driverVersion: string | null;
    cudaVersion: string | null;
    error: string | null;
  };
  hamiCore?: { dir: string; present: boolean };
  /** The disk under the engine's data directory, bytes. */
  diskBytes?: number;
  /** Nodes with the node agent: its tianqi-helper build as it answers now. */
  agentVersion?: string;
}

export interface NodeGpu {
  index: number;
  totalMemoryGb: number;
  freeMemoryGb: number;
  /** Discovered cards: the card's own model and UUID. */
  model?: string;
  uuid?: string;
}

export interface ComputeNode {
  id: string;
  name: string;
  region: string;
  cpu: string;
  memory: string;
  systemDisk: string;
  dataDisk: string;
  cpuCores: number | null;
  memoryGb: number | null;
  dataDiskGb: number | null;
  publicIp: string;
  privateIp: string;
  sshPort: number;
  sshUser: string;
  gpuModel: string;
  gpuCount: number;
  gpuMemoryGb: number;
  hamiCoreDir: string;
  /** 出站白名单: private addresses or CIDRs the node's tenants may reach. */
  egressAllow: string[];
  /** 公网端口范围: host ports public service ports are mapped to. */
  publicPortMin: number;
  publicPortMax: number;
  dockerEndpoint: string;
  dockerTls: boolean;
  tlsCa: string;
  tlsCert: string;
  listed: boolean;
  remark: string;
  hasSshPassword: boolean;
  hasTlsKey: boolean;
  dockerStatus: DockerStatus;
  dockerError: string | null;
  /** dockerError as a plain reason for this console's words. */
  dockerErrorWords?: Words | null;
  dockerCheckedAt: string | null;
  engine: EngineFacts | null;
  capacity: { cpuCores: number | null; memoryGb: number | null; dataDiskGb: number | null };
  used: { cpuCores: number; memoryGb: number; dataDiskGb: number };
  reservations: { instanceId: string; gpus: { index: number; memoryGb: number }[]; vgpu: boolean; cpuCores: number; memoryGb: number; dataDiskGb: number }[];
  gpus: NodeGpu[];
  /** What is unsafe in the node's settings, by code (e.g. `DOCKER_WITHOUT_TLS`); the message is the server's English words. */
  warnings: { code: string; message: string }[];
  /** Readiness checks by code (HELPER, CAPACITY, NVIDIA_RUNTIME, DRIVER, HAMI_CORE); ok null: not known. */
  readiness: { code: string; ok: boolean | null; detail: string; words?: Words[] }[];
  /** 添加节点 with the join command: the node agent's port; null: reached through dockerEndpoint. */
  agentPort: number | null;
  join: {
    agent: { joinedAt: string; hostname: string; arch: string; version: string; address: string; certExpiresAt: string; rotatedAt: string | null } | null;
    tokens: { tokenId: string; issuedAt: string; expiresAt: string; revokedAt: string | null; usedAt: string | null }[];
  } | null;
  createdAt: string;
  updatedAt: string;
}

/** A join command, as issued (the token is shown this once). */
export interface JoinCommand {
  tokenId: string;
  token: string;
  expiresAt: string;
  command: string;
  caSha256: string;
}

export interface Placement {
  nodeId: string;
  name: string;
  cards: { index: number; totalMemoryGb: number; freeMemoryGb: number; whole: boolean }[];
  freeCpuCores: number | null;
  freeMemoryGb: number | null;
  freeDataDiskGb: number | null;
}

export type InstanceStatus = 'creating' | 'running' | 'exited' | 'failed';
export type Operation = 'start' | 'stop' | 'restart' | 'delete';

export interface Instance {
  id: string;
  name: string;
  ownerId: string;
  ownerName: string;
  imageId: string;
  imageAddress: string;
  specId: string;
  spec: {
    name: string;
    gpuModel: string;
    gpuCount: number;
    gpuMemoryGb: number;
    vgpu: boolean;
    cpuCores: number;
    memoryGb: number;
    systemDiskGb: number;
    dataDiskGb: number;
    pricePerHour: number;
  };
  nodeId: string;
  nodeName: string;
  containerId: string | null;
  containerName: string;
  status: InstanceStatus;
  statusReason: string;
  /** statusReason as words for this console's languages. */
  statusWords?: Words;
  pending: Operation | null;
  gpuCards: { index: number; memoryGb: number }[];
  /** 无卡模式: `none` while a GPU instance runs (or stands) without its cards. */
  gpuMode: 'gpu' | 'none';
  /** 定时关机, or null. */
  scheduledStop: { at: string; byUsername: string } | null;
  /** 空闲自动关机: idle since then, and (once warned) when it stops unless used; null while in use. */
  idle: { since: string; stopAt: string | null } | null;
  idleOptOut: boolean;
  remark: string;
  createdAt: string;
  updatedAt: string;
}

export interface Stats {
  cpuPercent: number;
  memoryUsageBytes: number;
  memoryLimitBytes: number;
  memoryPercent: number;
  networkRxBytes: number;
  networkTxBytes: number;
  blockReadBytes: number;
  blockWriteBytes: number;
  pids: number;
  gpus: { index: number; memoryUsedBytes: number | null; memoryTotalBytes: number | null; utilizationPercent: number | null }[];
  at: string;
}

export interface HistoryEntry {
  revision: number;
  type: string;
  at: string;
  by: string | null;
  /** The server's English sentence (the fallback). */
  summary: string;
  code: string;
  params: Record<string, string | number>;
  detail?: string;
}

export interface LogLine {
  stream: 'stdout' | 'stderr';
  time: string;
  text: string;
}

export interface SshAccess {
  /** `ssh -p <port> <user>@<host>`: a shell in the instance. */
  command: string;
  host: string;
  /** 0: the jump host is switched off. */
  port: number;
  user: string;
  /** `sftp -P …` (FileZilla/WinSCP take the same host, port and user). */
  sftp: string;
  /** `scp -P … ./model.pt <user>@<host>:/data/` */
  scp: string;
  /** `rsync -av -e 'ssh -p …' …`: needs rsync in the image. */
  rsync: string;
  /** `ssh -N -L 8888:127.0.0.1:8888 …` */
  forward: string;
  /** Host alias for VS Code Remote-SSH, `tianqi-<instance>`. */
  alias: string;
  /** The `~/.ssh/config` block for that alias (lines end in \n). */
  sshConfig: string;
}

export interface Webhook {
  format?: 'tianqi' | 'wecom' | 'dingtalk' | 'feishu' | 'email';
  scope?: 'platform' | 'mine';
  id: string;
  url: string;
  /** Event type names, prefixes ending in `*`, or `*` for every event. */
  events: string[];
  description: string;
  hasSecret: boolean;
  createdAt: string;
}

export interface WebhookDelivery {
  eventId: string;
  type: string;
  position: number;
  attempt: number;
  /** HTTP status of the answer; null when there was none (refused, timed out). */
  status: number | null;
  error: string | null;
  durationMs: number;
  at: string;
}

export interface UsageInstance {
  instanceId: string;
  name: string;
  deleted: boolean;
  pricePerHour: number;
  seconds: number;
  cost: number;
}

export interface UsageReport {
  from: string;
  to: string;
  users: { userId: string; username: string; seconds: number; cost: number; instances: UsageInstance[] }[];
  totalSeconds: number;
  totalCost: number;
}

/** 自定义服务: a port a service listens on in the instance. */
export interface ServicePort {
  port: number;
  name: string;
  protocol: 'http' | 'tcp';
  source: 'image' | 'instance';
}

export interface ServiceLink extends ServicePort {
  /**
   * Where the service is served, on an origin of its own: `http(s)://<port>-<instance>.<domain>/`
   * or `http(s)://<platform host>:<service port>/`; null before it is first opened (the port form) and for tcp.
   */
  url: string | null;
  /** null while the instance is not running. */
  listening: boolean | null;
  /** 公网端口: `publicIp:hostPort` where the port is published on the node, open to anyone; null when not. */
  publicAddress: string | null;
}

export interface IdlePolicy {
  minutes: number;
  cpuPercent: number;
  gpuPercent: number;
  optOutAllowed: boolean;
}

/** 用户组: users sharing one quota. */
export interface Group {
  id: string;
  name: string;
  members: { userId: string }[];
  quota: {
    limits: { maxInstances: number | null; maxGpus: number | null; maxGpuHoursPerMonth: number | null };
    used: { instances: number; gpus: number };
  };
  createdAt: string;
}

/** 配额: how many instances and GPUs a user may hold at once (null: no limit), and what they hold. */
export interface Quota {
  userId: string;
  groupId: string | null;
  limits: { maxInstances: number | null; maxGpus: number | null; maxGpuHoursPerMonth: number | null };
  used: { instances: number; gpus: number; gpuHoursThisMonth: number };
  holdings: { instanceId: string; instanceName: string; gpus: number }[];
}

/** 预付费余额: a user's statement (amounts in currency, 4 decimals). */
export interface Statement {
  userId: string;
  enabled: boolean;
  openedAt: string | null;
  balance: number;
  credited: number;
  usage: number;
  lowBalance: number;
  warned: boolean;
  exhausted: boolean;
  adjustments: { amount: number; reason: string; byUsername: string; at: string }[];
  instances: { instanceId: string; name: string; deleted: boolean; seconds: number; cost: number }[];
  asOf: string;
}
