import type { Command, Decider, DomainEvent } from '../shared/decider.ts';
import { assertNever } from '../shared/decider.ts';
import { ConflictError, NotFoundError, ValidationError } from '../shared/errors.ts';
import { assertNotInUse, changedFields } from './image.decider.ts';
import { idlePolicyProblems, type IdlePolicy } from '../instance/idle.ts';
import { MAX_PUBLIC_PORTS } from '../instance/service-ports.ts';

/** 产品规格: what an instance gets and what it costs. */
export interface SpecFields {
  readonly name: string;
  /** May be empty when `gpuCount` is 0 (a CPU-only spec). */
  readonly gpuModel: string;
  /** 0 = no GPU. */
  readonly gpuCount: number;
  /** Per card; with vGPU, the memory slice granted on each card. */
  readonly gpuMemoryGb: number;
  readonly vgpuSupported: boolean;
  readonly cpuCores: number;
  readonly memoryGb: number;
  readonly systemDiskGb: number;
  readonly dataDiskGb: number;
  readonly pricePerHour: number;
  readonly listed: boolean;
  readonly remark: string;
  /** Where a lab needs other container limits than the platform's (TIANQI_CONTAINER_*) for this spec. */
  readonly containerOverrides?: ContainerOverrides;
  /** false: instances of this spec reach no network beyond their own bridge (无外网); absent: true. */
  readonly internet?: boolean;
  /** 空闲自动关机: the admin's idle auto-stop for this spec's instances; absent or null: none. */
  readonly idleStop?: IdlePolicy | null;
  /**
   * 无卡模式: the price per hour of this GPU spec's instances started without their GPUs (same
   * disk and files, CPU and memory only); absent or null: the mode is not offered.
   */
  readonly noGpuPricePerHour?: number | null;
  /**
   * 公网端口: how many service ports an instance of this spec may publish on its node's public
   * IP, unauthenticated (0, the default and the value of older records: none).
   */
  readonly publicPorts?: number;
  /**
   * 停止宽限期: seconds a stop (or restart) gives the container's processes after SIGTERM before
   * the engine kills them; absent: DEFAULT_STOP_GRACE_SECONDS.
   */
  readonly stopGraceSeconds?: number;
}

/** Docker's own default for `docker stop`. */
export const DEFAULT_STOP_GRACE_SECONDS = 10;

/** A spec's exceptions to the platform's container limits; an absent field keeps the platform's. */
export interface ContainerOverrides {
  /** Processes and threads at most (0: none). */
  readonly pidsLimit?: number;
  /** false: setuid programs such as sudo work in this spec's containers. */
  readonly noNewPrivileges?: boolean;
}

export const SPEC_LIMITS = {
  gpuCount: 16,
  gpuMemoryGb: 1024,
  cpuCores: 512,
  memoryGb: 8192,
  systemDiskGb: 65_536,
  dataDiskGb: 1_048_576,
  pricePerHour: 1_000_000,
} as const;

/**
 * Rules over a whole spec (on create and on the merged result of an update): a GPU spec names a
 * GPU model and memory per card; vGPU needs GPUs; numbers are non-negative and bounded; the price
 * has at most 4 decimals. Returns the broken rules by field.
 */
export function specProblems(spec: SpecFields): Record<string, string> {
  const problems: Record<string, string> = {};
  for (const [field, max] of Object.entries(SPEC_LIMITS)) {
    const value = spec[field as keyof typeof SPEC_LIMITS];
    if (!Number.isFinite(value) || value < 0) problems[field] = 'must be a non-negative number';
    else if (value > max) problems[field] = `must be at most ${max}`;
  }
  for (const field of ['gpuCount', 'cpuCores', 'memoryGb', 'systemDiskGb', 'dataDiskGb'] as const) {
    if (!problems[field] && !Number.isInteger(spec[field])) problems[field] = 'must be a whole number';
  }
  if (!problems.pricePerHour && Math.round(spec.pricePerHour * 10_000) / 10_000 !== spec.pricePerHour) {
    problems.pricePerHour = 'must have at most 4 decimals';
  }
  if (spec.gpuCount > 0) {
    if (spec.gpuModel.trim() === '') problems.gpuModel = 'is required when gpuCount is above 0';
    if (!problems.gpuMemoryGb && spec.gpuMemoryGb <= 0) problems.gpuMemoryGb = 'must be above 0 when gpuCount is above 0';
  } else if (spec.vgpuSupported) {
    problems.vgpuSupported = 'needs gpuCount above 0: a vGPU spec slices GPU memory';
  }
  if (spec.idleStop) Object.assign(problems, idlePolicyProblems(spec.idleStop));
  const noGpu = spec.noGpuPricePerHour;
  if (noGpu !== undefined && noGpu !== null) {
    if (spec.gpuCount === 0) problems.noGpuPricePerHour = 'is for GPU specs only (a CPU-only spec has no cards to leave out)';
    else if (!Number.isFinite(noGpu) || noGpu < 0 || noGpu > SPEC_LIMITS.pricePerHour) problems.noGpuPricePerHour = `must be 0–${SPEC_LIMITS.pricePerHour}, or null to not offer 无卡模式`;
    else if (Math.round(noGpu * 10_000) / 10_000 !== noGpu) problems.noGpuPricePerHour = 'must have at most 4 decimals';
  }
  if (!problems.cpuCores && spec.cpuCores <= 0) problems.cpuCores = 'must be at least 1';
  if (!problems.memoryGb && spec.memoryGb <= 0) problems.memoryGb = 'must be at least 1';
  const publicPorts = spec.publicPorts ?? 0;
  if (!Number.isInteger(publicPorts) || publicPorts < 0 || publicPorts > MAX_PUBLIC_PORTS) {
    problems.publicPorts = `must be a whole number 0–${MAX_PUBLIC_PORTS}`;
  }
  return problems;
}

export type SpecEvent =
  | DomainEvent<'SpecCreated', SpecFields & { specId: string }>
  | DomainEvent<'SpecUpdated', Partial<SpecFields>>
  | DomainEvent<'SpecDeleted', { specId: string }>;

export type SpecCommand =
  | Command<'CreateSpec', SpecFields & { specId: string }>
  | Command<'UpdateSpec', Partial<SpecFields>>
  | Command<'DeleteSpec', { liveInstances: number }>;

export type SpecState =
  | { readonly status: 'none' }
  | { readonly status: 'active' | 'deleted'; readonly specId: string; readonly fields: SpecFields };

export const specStream = (specId: string) => `spec-${specId}`;

function assertValid(spec: SpecFields): void {
  const problems = specProblems(spec);
  if (Object.keys(problems).length > 0) throw new ValidationError(problems, 'The spec breaks a rule.');
}

export const specDecider: Decider<SpecCommand, SpecState, SpecEvent> = {
  initialState: () => ({ status: 'none' }),
  decide(command, state) {
    switch (command.type) {
      case 'CreateSpec': {
        if (state.status !== 'none') throw new ConflictError('SPEC_EXISTS', 'This spec already exists.');
        const { specId: _, ...fields } = command.data;
        assertValid(fields);
        return [{ type: 'SpecCreated', data: command.data }];
      }
      case 'UpdateSpec': {
        if (state.status !== 'active') throw new NotFoundError('Spec');
        const changes = changedFields(state.fields, command.data);
        if (Object.keys(changes).length === 0) return [];
        assertValid({ ...state.fields, ...changes });
        return [{ type: 'SpecUpdated', data: changes }];
      }
      case 'DeleteSpec':
        if (state.status !== 'active') throw new NotFoundError('Spec');
        assertNotInUse('spec', command.data.liveInstances);
        return [{ type: 'SpecDeleted', data: { specId: state.specId } }];
      default:
        return assertNever(command);
    }
  },
  evolve(state, event) {
    switch (event.type) {
      case 'SpecCreated': {
        const { specId, ...fields } = event.data;
        return { status: 'active', specId, fields };
      }
      case 'SpecUpdated':
        return state.status === 'none' ? state : { ...state, fields: { ...state.fields, ...event.data } };
      case 'SpecDeleted':
        return state.status === 'none' ? state : { ...state, status: 'deleted' };
      default:
        return assertNever(event);
    }
  },
};

/** Whether an image can run a spec: an image without vGPU support never gets a vGPU spec. */
export function imageCanRun(image: { vgpuSupported: boolean }, spec: { vgpuSupported: boolean }): boolean {
  return image.vgpuSupported || !spec.vgpuSupported;
}
