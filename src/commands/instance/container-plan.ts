import type { ContainerOverrides } from '../../domain/catalog/spec.decider.ts';
import type { LiveInstance } from '../../domain/instance/instance.decider.ts';
import { createHash } from 'node:crypto';
import type { ContainerLimits, ContainerPlan, NetworkPlan } from '../../ports/container-runtime.port.ts';

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

/** Where a vGPU container sees the node's HAMi-core build. */
export const HAMI_MOUNT = '/libvgpu/build';
/** Where HAMi-core keeps its shared memory-accounting cache in a vGPU container: a tmpfs of its own, this size. */
export const VGPU_CACHE_DIR = '/tmp/vgpu';
export const VGPU_CACHE_BYTES = 64 * 1024 ** 2;
/** The node's directory (kept by the node guard) holding the ld.so.preload every vGPU container mounts read-only. */
export const VGPU_HOST_DIR = '/var/lib/tianqi-vgpu';
/** HAMi's lock directory, shared by every vGPU container on the node, as HAMi mounts it. */
export const VGPU_LOCK_DIR = '/tmp/vgpulock';
export const HAMI_LIBRARY = `${HAMI_MOUNT}/libvgpu.so`;

/**
 * Deep-learning data loaders move batches through /dev/shm; Docker's 64 MiB default breaks
 * PyTorch's DataLoader with workers. Half the memory limit, between 64 MiB and 32 GiB.
 */
export function shmSizeBytes(memoryGb: number): number {
  return Math.min(32 * GIB, Math.max(64 * MIB, Math.floor((memoryGb * GIB) / 2)));
}

/** The platform's limits with a spec's exceptions applied. Pure. */
export function withOverrides(limits: ContainerLimits, overrides: ContainerOverrides | undefined): ContainerLimits {
  if (!overrides) return limits;
  return {
    ...limits,
    ...(overrides.pidsLimit !== undefined ? { pidsLimit: overrides.pidsLimit } : {}),
    ...(overrides.noNewPrivileges !== undefined ? { noNewPrivileges: overrides.noNewPrivileges } : {}),
  };
}

/** The prefix of every tenant bridge's name on the host: the node guard drops what comes from them to the node. */
export const TENANT_BRIDGE_PREFIX = 'tqn';

/**
 * A user's network on a node: a bridge of their own, so their instances reach each other and no
 * other user's (Docker keeps bridges apart) and, with the node guard, not the node itself.
 */
export function tenantNetwork(ownerId: string, internet = true): NetworkPlan {
  // Without internet: a second network of the user's, internal (Docker routes nothing out of it).
  const key = internet ? ownerId : `${ownerId}:offline`;
  return {
    name: `tianqi-user-${ownerId}${internet ? '' : '-offline'}`,
    bridgeName: `${TENANT_BRIDGE_PREFIX}${createHash('sha256').update(key).digest('hex').slice(0, 12)}`,
    labels: { 'managed-by': 'tianqi', 'tianqi.owner': ownerId },
    ...(internet ? {} : { internal: true }),
  };
}

export const instanceLabels = (instance: Pick<LiveInstance, 'instanceId' | 'ownerId'>) => ({
  'managed-by': 'tianqi',
  'tianqi.instance': instance.instanceId,
  'tianqi.owner': instance.ownerId,
});

/**
 * What every instance's container gets unless the settings say otherwise: 8192 processes and
 * threads (a DataLoader with many workers stays far below; a fork bomb stops there), logs kept
 * to 3 files of 50 MB, no gaining of privileges through setuid programs, and, of Docker's default
 * capabilities, no raw sockets (ARP and packet spoofing on the bridge), no device nodes and no
 * audit writes. What apt, pip, conda, compilers and servers on high ports need stays.
 */
export const DEFAULT_CONTAINER_LIMITS: ContainerLimits = {
  pidsLimit: 8_192,
  logMaxSizeMb: 50,
  logMaxFiles: 3,
  noNewPrivileges: true,
  capDrop: ['NET_RAW', 'MKNOD', 'AUDIT_WRITE'],
};

/**
 * The container an instance runs as. GPUs are the reserved card indices (never "the first N");
 * a CPU-only spec gets no GPU parameters and NVIDIA_VISIBLE_DEVICES=void; a vGPU spec gets
 * HAMi-core preloaded with a memory limit per granted card and an SM share per card.
 */
export function buildContainerPlan(
  instance: LiveInstance,
  node: { hamiCoreDir: string; gpuMemoryGb: number; cards?: readonly { index: number; uuid?: string }[] },
  limits: ContainerLimits = DEFAULT_CONTAINER_LIMITS,
): ContainerPlan {
  const { spec } = instance;
  const env: string[] = [`TIANQI_INSTANCE=${instance.name}`];
  const binds: string[] = [];
  const tmpfs: Record<string, number> = {};
  // Discovered cards are asked for by UUID: an index can change after a reboot, a UUID cannot.
  const gpuDeviceIds = instance.gpus.map((g) => node.cards?.find((c) => c.index === g.index)?.uuid ?? String(g.index));
  if (gpuDeviceIds.length === 0) {
    env.push('NVIDIA_VISIBLE_DEVICES=void');
  } else if (spec.vgpu) {
    env.push(`LD_PRELOAD=${HAMI_LIBRARY}`);
    // HAMi-core numbers the cards the container sees 0..n-1, in the order Docker grants them.
    instance.gpus.forEach((g, position) => env.push(`CUDA_DEVICE_MEMORY_LIMIT_${position}=${Math.floor(g.memoryGb * 1024)}m`));
    const share = node.gpuMemoryGb > 0 ? Math.max(1, Math.min(100, Math.round((spec.gpuMemoryGb / node.gpuMemoryGb) * 100))) : 100;
    env.push(`CUDA_DEVICE_SM_LIMIT=${share}`);
    env.push(`CUDA_DEVICE_MEMORY_SHARED_CACHE=${VGPU_CACHE_DIR}/${instance.containerName}.cache`);
    binds.push(`${node.hamiCoreDir}:${HAMI_MOUNT}:ro`);
    // As HAMi does: the library named in /etc/ld.so.preload (read-only), so `env -u LD_PRELOAD`
    // or a static launcher's clean environment loads it all the same; its lock directory shared.
    binds.push(`${VGPU_HOST_DIR}/ld.so.preload:/etc/ld.so.preload:ro`);
    binds.push(`${VGPU_LOCK_DIR}:${VGPU_LOCK_DIR}`);
    tmpfs[VGPU_CACHE_DIR] = VGPU_CACHE_BYTES;
  }
  return {
    name: instance.containerName,
    image: instance.imageAddress,
    labels: instanceLabels(instance),
    env,
    nanoCpus: spec.cpuCores * 1e9,
    memoryBytes: spec.memoryGb * GIB,
    shmSizeBytes: shmSizeBytes(spec.memoryGb),
    systemDiskGb: spec.systemDiskGb,
    dataVolume: instance.dataVolume,
    gpuDeviceIds,
    binds,
    limits: withOverrides(limits, spec.containerOverrides),
    network: tenantNetwork(instance.ownerId, instance.spec.internet !== false).name,
    ...(Object.keys(tmpfs).length > 0 ? { tmpfs } : {}),
    ...(instance.publicPorts?.length ? { publishedPorts: instance.publicPorts.map((p) => ({ ...p })) } : {}),
  };
}
