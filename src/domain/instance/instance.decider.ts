import type { Command, Decider, DomainEvent } from '../shared/decider.ts';
import { assertNever } from '../shared/decider.ts';
import { ConflictError, NotFoundError, ValidationError } from '../shared/errors.ts';
import type { ContainerOverrides } from '../catalog/spec.decider.ts';
import type { AccessKind } from './access.ts';
import { assertCanAdd, assertCanRemove, type InstanceServicePort, type PublishedPort, type ServicePort } from './service-ports.ts';

export type InstanceStatus = 'creating' | 'running' | 'exited' | 'failed';
export type Operation = 'start' | 'stop' | 'restart' | 'delete';

/** The spec as it was when the instance was requested: later spec edits do not change a running instance. */
export interface SpecSnapshot {
  readonly name: string;
  readonly gpuModel: string;
  readonly gpuCount: number;
  readonly gpuMemoryGb: number;
  readonly vgpu: boolean;
  readonly cpuCores: number;
  readonly memoryGb: number;
  readonly systemDiskGb: number;
  readonly dataDiskGb: number;
  readonly pricePerHour: number;
  /** The spec's exceptions to the platform's container limits, as they were at the request. */
  readonly containerOverrides?: ContainerOverrides;
  /** false: the instance has no way out at all (无外网); absent (older records): it has. */
  readonly internet?: boolean;
}

export interface InstanceRequest {
  readonly instanceId: string;
  readonly ownerId: string;
  readonly ownerName: string;
  readonly name: string;
  readonly imageId: string;
  readonly imageAddress: string;
  readonly specId: string;
  readonly spec: SpecSnapshot;
  readonly remark: string;
  readonly requestedAt: string;
  /** Its service ports: the image's at the request, and those given with the request. Absent in older records. */
  readonly servicePorts?: readonly InstanceServicePort[];
}

export interface InstancePlacement {
  readonly nodeId: string;
  readonly nodeName: string;
  readonly gpus: readonly { index: number; memoryGb: number }[];
  readonly containerName: string;
  readonly dataVolume: string | null;
  /** What it counts against GPU quotas (cards 1 each, vGPU slices by share); absent in older records: one per card. */
  readonly gpuShare?: number;
  /** Service ports mapped to host ports reserved on the node; absent when none (and in older records). */
  readonly publicPorts?: readonly PublishedPort[];
}

export type InstanceEvent =
  | DomainEvent<'InstanceRequested', InstanceRequest>
  | DomainEvent<'InstancePlaced', InstancePlacement>
  | DomainEvent<'InstanceProvisioningProgressed', { reason: string }>
  | DomainEvent<'ContainerCreated', { containerId: string; storageOptApplied: boolean }>
  | DomainEvent<'InstanceProvisioningFailed', { reason: string }>
  | DomainEvent<'InstanceStateObserved', {
      status: 'running' | 'exited';
      reason: string;
      exitCode: number | null;
      oomKilled: boolean;
      /** Who saw it: the engine's event stream, the reconcile loop, or the operation itself. */
      source: 'events' | 'reconcile' | 'operation' | 'provisioning';
    }>
  | DomainEvent<'InstanceContainerVanished', { reason: string }>
  /** `byUsername`: who asked (absent in older records, and when the platform stops it: a schedule, idleness, arrears). */
  | DomainEvent<'InstanceOperationRequested', { operation: Operation; byUsername?: string }>
  | DomainEvent<'InstanceOperationFailed', { operation: Operation; reason: string; willRetry: boolean }>
  | DomainEvent<'InstanceOperationCompleted', { operation: Operation }>
  | DomainEvent<'InstanceDeleted', { removed: string[]; notRemoved: { what: string; reason: string }[] }>
  | DomainEvent<'TerminalSessionOpened', TerminalSessionStart>
  | DomainEvent<'TerminalSessionClosed', TerminalSessionEnd>
  | DomainEvent<'ServicePortAdded', ServicePort>
  | DomainEvent<'ServicePortRemoved', { port: number }>
  | DomainEvent<'InstanceStopScheduled', ScheduledStop>
  | DomainEvent<'InstanceStopUnscheduled', { byUserId: string; byUsername: string }>
  | DomainEvent<'InstanceScheduledStopFired', { at: string }>
  | DomainEvent<'InstanceIdleStarted', { since: string }>
  | DomainEvent<'InstanceIdleEnded', Record<string, never>>
  | DomainEvent<'InstanceIdleWarned', { stopAt: string }>
  | DomainEvent<'InstanceIdleStopFired', { since: string; minutes: number }>
  /** 欠费停机: the owner's prepaid balance (units of 1/10,000) was used up. */
  | DomainEvent<'InstanceArrearsStopFired', { balance: number }>
  /**
   * 无卡模式 on or off: the container was made again (its files kept) without its cards, or with
   * cards taken again on the same node; the price per hour it is metered at from now on.
   */
  | DomainEvent<'InstanceGpuModeChanged', GpuModeChange>
  /** Card discovery no longer sees a card the instance holds (fell off the bus, driver reloaded, or the read failed: `reason`). */
  | DomainEvent<'InstanceGpuLost', { cards: { index: number; uuid: string }[]; reason: string | null }>
  /** 重试创建: a failed instance is provisioned again on its node (its capacity taken again, its data volume kept). */
  | DomainEvent<'InstanceProvisioningRetried', { byUsername: string }>
  | DomainEvent<'InstanceIdleOptOutSet', { optOut: boolean; byUsername: string }>
  | DomainEvent<'InstanceServiceUsed', Record<string, never>>;

/** 定时关机: the instance is stopped at `at` (an ISO time), set by that user. */
export interface ScheduledStop {
  readonly at: string;
  readonly byUserId: string;
  readonly byUsername: string;
}

/** How far ahead a stop may be scheduled. */
export const MAX_SCHEDULE_AHEAD_MS = 366 * 24 * 3600 * 1000;

/** Audit of a way into the instance: a shell or command (web terminal, SSH), SFTP or a port forward (SSH). */
export interface TerminalSessionStart {
  readonly sessionId: string;
  readonly via: 'web' | 'ssh';
  readonly userId: string;
  readonly username: string;
  readonly clientAddress: string;
  /** The shell or command that ran (`sftp`, or the forward's `host:port`). */
  readonly command: string;
  /** Absent in records from before SFTP and forwards: a shell, or a command when it is not a shell. */
  readonly kind?: AccessKind;
}

/** What an SFTP session did to files (up to FILE_PATHS_KEPT paths of each, and the counts). */
export interface FileActivity {
  readonly written: readonly string[];
  readonly writtenCount: number;
  readonly removed: readonly string[];
  readonly removedCount: number;
}

export const FILE_PATHS_KEPT = 50;

export interface TerminalSessionEnd {
  readonly sessionId: string;
  readonly via: 'web' | 'ssh';
  readonly durationMs: number;
  /** Bytes from the client into the container, and back. */
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly exitCode: number | null;
  /** Why it ended: the client left, the shell exited, the user was disabled, the instance stopped… */
  readonly reason: string;
  /** SFTP: files written and removed. */
  readonly files?: FileActivity;
  /** Port forward: how many connections went through it. */
  readonly connections?: number;
}

export type InstanceCommand =
  | Command<'RequestInstance', { request: InstanceRequest; placement: InstancePlacement }>
  | Command<'RecordProgress', { reason: string }>
  | Command<'RecordContainerCreated', { containerId: string; storageOptApplied: boolean }>
  | Command<'FailProvisioning', { reason: string }>
  | Command<'ObserveState', {
      status: 'running' | 'exited';
      reason: string;
      exitCode: number | null;
      oomKilled: boolean;
      source: 'events' | 'reconcile' | 'operation' | 'provisioning';
    }>
  /** `containerId`: the container that went, where known: another than the instance's own (one it replaced) is no vanishing. */
  | Command<'MarkVanished', { reason: string; containerId?: string }>
  | Command<'RequestOperation', { operation: Operation; byUsername?: string }>
  | Command<'FailOperation', { operation: Operation; reason: string; willRetry: boolean }>
  | Command<'CompleteOperation', { operation: Operation }>
  | Command<'RecordDeleted', { removed: string[]; notRemoved: { what: string; reason: string }[] }>
  | Command<'OpenTerminalSession', TerminalSessionStart>
  | Command<'CloseTerminalSession', TerminalSessionEnd>
  | Command<'AddServicePort', ServicePort>
  | Command<'RemoveServicePort', { port: number }>
  | Command<'ScheduleStop', ScheduledStop>
  | Command<'UnscheduleStop', { byUserId: string; byUsername: string }>
  /** The scheduler found the stop due: only the schedule of that time fires (a replaced or cancelled one does not). */
  | Command<'FireScheduledStop', { at: string }>
  /** The idle auto-stop's findings (src/domain/instance/idle.ts): each recorded once. */
  | Command<'RecordIdle', { since: string }>
  | Command<'RecordBusy', Record<string, never>>
  | Command<'WarnIdle', { stopAt: string }>
  | Command<'FireIdleStop', { since: string; minutes: number }>
  | Command<'FireArrearsStop', { balance: number }>
  | Command<'ChangeGpuMode', GpuModeChange>
  | Command<'RecordGpuLost', { cards: { index: number; uuid: string }[]; reason: string | null }>
  | Command<'RetryProvisioning', { byUsername: string }>
  /** `allowed`: whether the spec's policy lets the owner opt out (the caller reads the spec). */
  | Command<'SetIdleOptOut', { optOut: boolean; allowed: boolean; byUsername: string }>
  | Command<'RecordServiceUse', Record<string, never>>;

/** A GPU instance's cards: its own (`gpu`), or none while in 无卡模式 (`none`). */
export type GpuMode = 'gpu' | 'none';

export interface GpuModeChange {
  readonly mode: GpuMode;
  readonly gpus: readonly { index: number; memoryGb: number }[];
  readonly gpuShare: number;
  /** The container made again for the mode. */
  readonly containerId: string;
  readonly pricePerHour: number;
}

export interface LiveInstance extends InstanceRequest, InstancePlacement {
  readonly status: InstanceStatus;
  readonly statusReason: string;
  readonly containerId: string | null;
  /** An operation that could not reach the engine yet; retried when the node is back. */
  readonly pending: Operation | null;
  readonly deleted: boolean;
  /** 定时关机, while one is set (absent or null: none). */
  readonly scheduledStop?: ScheduledStop | null;
  /** Idle since then, as the idle auto-stop found; absent or null while in use. */
  readonly idleSince?: string | null;
  /** Whether this idle period's coming stop has been warned of. */
  readonly idleWarned?: boolean;
  /** The owner switched the idle auto-stop off for it (where the spec allows). */
  readonly idleOptOut?: boolean;
  /** Absent (older records, CPU specs): `gpu`. */
  readonly gpuMode?: GpuMode;
}

export type InstanceState = { readonly status: 'none' } | { readonly status: 'requested'; readonly request: InstanceRequest } | LiveInstance;

export const instanceStream = (instanceId: string) => `instance-${instanceId}`;

/** As Docker takes container and volume names (the instance's are made of it): a letter or digit first. */
export const INSTANCE_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;

function live(state: InstanceState): LiveInstance {
  if (state.status === 'none' || state.status === 'requested' || state.deleted) throw new NotFoundError('Instance');
  return state;
}

/** Which operations make sense in which state: a clear 409 instead of a confusing engine error. */
function assertAllowed(instance: LiveInstance, operation: Operation): void {
  if (operation === 'delete') return;
  if (instance.pending === 'delete') throw new ConflictError('INSTANCE_DELETING', 'This instance is being deleted.');
  if (!instance.containerId) {
    throw new ConflictError('NO_CONTAINER', `The instance has no container yet (status ${instance.status}).`);
  }
  if (operation === 'start' && instance.status === 'running') throw new ConflictError('ALREADY_RUNNING', 'The instance is already running.');
  if (operation === 'stop' && instance.status !== 'running') throw new ConflictError('NOT_RUNNING', 'The instance is not running.');
}

export const instanceDecider: Decider<InstanceCommand, InstanceState, InstanceEvent> = {
  initialState: () => ({ status: 'none' }),
  decide(command, state) {
    switch (command.type) {
      case 'RequestInstance':
        if (state.status !== 'none') throw new ConflictError('INSTANCE_EXISTS', 'This instance already exists.');
        return [
          { type: 'InstanceRequested', data: command.data.request },
          { type: 'InstancePlaced', data: command.data.placement },
        ];
      case 'RecordProgress': {
        const instance = live(state);
        if (instance.status !== 'creating' || instance.statusReason === command.data.reason) return [];
        return [{ type: 'InstanceProvisioningProgressed', data: command.data }];
      }
      case 'RecordContainerCreated': {
        const instance = live(state);
        if (instance.containerId === command.data.containerId) return [];
        return [{ type: 'ContainerCreated', data: command.data }];
      }
      case 'FailProvisioning': {
        const instance = live(state);
        if (instance.status !== 'creating') return [];
        return [{ type: 'InstanceProvisioningFailed', data: command.data }];
      }
      case 'ObserveState': {
        const instance = live(state);
        const same = instance.status === command.data.status && instance.statusReason === command.data.reason;
        // A failed provisioning stays failed until someone starts the instance successfully.
        if (same || (instance.status === 'failed' && command.data.status === 'exited')) return [];
        return [{ type: 'InstanceStateObserved', data: command.data }];
      }
      case 'MarkVanished': {
        const instance = live(state);
        if (instance.status === 'failed' && instance.statusReason === command.data.reason) return [];
        if (command.data.containerId !== undefined && command.data.containerId !== instance.containerId) return [];
        return [{ type: 'InstanceContainerVanished', data: { reason: command.data.reason } }];
      }
      case 'RequestOperation': {
        const instance = live(state);
        assertAllowed(instance, command.data.operation);
        return [{ type: 'InstanceOperationRequested', data: command.data }];
      }
      case 'FailOperation':
        live(state);
        return [{ type: 'InstanceOperationFailed', data: command.data }];
      case 'CompleteOperation': {
        const instance = live(state);
        if (instance.pending !== command.data.operation) return [];
        return [{ type: 'InstanceOperationCompleted', data: command.data }];
      }
      case 'RecordDeleted':
        live(state);
        return [{ type: 'InstanceDeleted', data: command.data }];
      case 'OpenTerminalSession': {
        const instance = live(state);
        if (instance.status !== 'running') throw new ConflictError('NOT_RUNNING', 'Only a running instance can be entered.');
        return [{ type: 'TerminalSessionOpened', data: command.data }];
      }
      case 'CloseTerminalSession':
        // Recorded even after the instance was deleted: the audit trail keeps every session.
        if (state.status === 'none' || state.status === 'requested') throw new NotFoundError('Instance');
        return [{ type: 'TerminalSessionClosed', data: command.data }];
      case 'AddServicePort':
        assertCanAdd(live(state).servicePorts ?? [], command.data);
        return [{ type: 'ServicePortAdded', data: command.data }];
      case 'RemoveServicePort': {
        const instance = live(state);
        assertCanRemove(instance.servicePorts ?? [], command.data.port, instance.publicPorts);
        return [{ type: 'ServicePortRemoved', data: command.data }];
      }
      case 'ScheduleStop': {
        const instance = live(state);
        if (instance.status !== 'running' || instance.pending === 'stop' || instance.pending === 'delete') {
          throw new ConflictError('NOT_RUNNING', 'Only a running instance can have a scheduled stop.');
        }
        const at = Date.parse(command.data.at);
        const now = Date.parse(command.metadata.now);
        if (!Number.isFinite(at) || at <= now) throw new ValidationError({ at: 'must be a time in the future' });
        if (at - now > MAX_SCHEDULE_AHEAD_MS) throw new ValidationError({ at: 'may be at most 366 days ahead' });
        const stop = { ...command.data, at: new Date(at).toISOString() };
        if (instance.scheduledStop?.at === stop.at) return [];
        return [{ type: 'InstanceStopScheduled', data: stop }];
      }
      case 'UnscheduleStop': {
        const instance = live(state);
        if (!instance.scheduledStop) return [];
        return [{ type: 'InstanceStopUnscheduled', data: command.data }];
      }
      case 'FireScheduledStop': {
        if (state.status === 'none' || state.status === 'requested' || state.deleted) return [];
        if (state.scheduledStop?.at !== command.data.at) return [];
        const fired: InstanceEvent = { type: 'InstanceScheduledStopFired', data: command.data };
        // Stopped or being stopped already (or deleted): the schedule is over all the same.
        if (state.status !== 'running' || state.pending) return [fired];
        return [fired, { type: 'InstanceOperationRequested', data: { operation: 'stop' } }];
      }
      case 'RecordIdle': {
        const instance = live(state);
        if (instance.status !== 'running' || instance.idleSince === command.data.since) return [];
        return [{ type: 'InstanceIdleStarted', data: command.data }];
      }
      case 'RecordBusy':
        return live(state).idleSince ? [{ type: 'InstanceIdleEnded', data: {} }] : [];
      case 'WarnIdle': {
        const instance = live(state);
        if (!instance.idleSince || instance.idleWarned) return [];
        return [{ type: 'InstanceIdleWarned', data: command.data }];
      }
      case 'FireIdleStop': {
        if (state.status === 'none' || state.status === 'requested' || state.deleted) return [];
        // Only the idle period it was decided on: a use since then has started it over.
        if (state.idleSince !== command.data.since || state.status !== 'running' || state.pending) return [];
        return [{ type: 'InstanceIdleStopFired', data: command.data }, { type: 'InstanceOperationRequested', data: { operation: 'stop' } }];
      }
      case 'ChangeGpuMode': {
        const instance = live(state);
        if ((instance.gpuMode ?? 'gpu') === command.data.mode && instance.containerId === command.data.containerId) return [];
        if (instance.status !== 'exited' || instance.pending) {
          throw new ConflictError('NOT_STOPPED', 'Stop the instance first: its cards change only while it is stopped.');
        }
        return [{ type: 'InstanceGpuModeChanged', data: command.data }];
      }
      case 'RetryProvisioning': {
        const instance = live(state);
        if (instance.status !== 'failed' || instance.pending) {
          throw new ConflictError('NOT_FAILED', 'Only a failed instance is created again; start or restart this one instead.');
        }
        return [{ type: 'InstanceProvisioningRetried', data: command.data }];
      }
      case 'RecordGpuLost': {
        if (state.status === 'none' || state.status === 'requested' || state.deleted) return [];
        return [{ type: 'InstanceGpuLost', data: command.data }];
      }
      case 'FireArrearsStop':
        if (state.status !== 'running' || state.pending || state.deleted) return [];
        return [{ type: 'InstanceArrearsStopFired', data: command.data }, { type: 'InstanceOperationRequested', data: { operation: 'stop' } }];
      case 'SetIdleOptOut': {
        const instance = live(state);
        if (command.data.optOut && !command.data.allowed) {
          throw new ConflictError('IDLE_STOP_REQUIRED', 'This spec\'s idle auto-stop cannot be switched off for an instance.');
        }
        if (Boolean(instance.idleOptOut) === command.data.optOut) return [];
        return [{ type: 'InstanceIdleOptOutSet', data: { optOut: command.data.optOut, byUsername: command.data.byUsername } }];
      }
      case 'RecordServiceUse':
        return live(state).status === 'running' ? [{ type: 'InstanceServiceUsed', data: {} }] : [];
      default:
        return assertNever(command);
    }
  },
  evolve(state, event) {
    if (event.type === 'InstanceRequested') return { status: 'requested', request: event.data };
    if (event.type === 'InstancePlaced') {
      if (state.status !== 'requested') return state;
      return {
        ...state.request,
        ...event.data,
        status: 'creating',
        statusReason: 'placed; preparing the container',
        containerId: null,
        pending: null,
        deleted: false,
      };
    }
    if (state.status === 'none' || state.status === 'requested') return state;
    switch (event.type) {
      case 'InstanceProvisioningProgressed':
        return { ...state, statusReason: event.data.reason };
      case 'ContainerCreated':
        return { ...state, containerId: event.data.containerId };
      case 'InstanceProvisioningFailed':
        return { ...state, status: 'failed', statusReason: event.data.reason, scheduledStop: null };
      case 'InstanceStateObserved':
        return { ...state, status: event.data.status, statusReason: event.data.reason };
      case 'InstanceContainerVanished':
        return { ...state, status: 'failed', statusReason: event.data.reason, containerId: null, scheduledStop: null };
      case 'InstanceOperationRequested':
        return { ...state, pending: event.data.operation };
      case 'InstanceOperationFailed':
        return event.data.willRetry ? state : { ...state, pending: null, statusReason: event.data.reason };
      case 'InstanceOperationCompleted':
        // A stop ends the schedule: a later start does not bring an old stop time back.
        return { ...state, pending: null, ...(event.data.operation === 'stop' ? { scheduledStop: null, idleSince: null, idleWarned: false } : {}) };
      case 'InstanceDeleted':
        return { ...state, deleted: true, pending: null, scheduledStop: null };
      case 'InstanceStopScheduled':
        return { ...state, scheduledStop: event.data };
      case 'InstanceStopUnscheduled':
      case 'InstanceScheduledStopFired':
        return { ...state, scheduledStop: null };
      case 'InstanceIdleStarted':
        return { ...state, idleSince: event.data.since, idleWarned: false };
      case 'InstanceIdleEnded':
      case 'InstanceIdleStopFired':
        return { ...state, idleSince: null, idleWarned: false };
      case 'InstanceIdleWarned':
        return { ...state, idleWarned: true };
      case 'InstanceArrearsStopFired':
      case 'InstanceGpuLost':
        return state;
      case 'InstanceProvisioningRetried':
        return { ...state, status: 'creating', statusReason: 'retrying', containerId: null };
      case 'InstanceGpuModeChanged':
        return { ...state, gpuMode: event.data.mode, gpus: event.data.gpus, gpuShare: event.data.gpuShare, containerId: event.data.containerId };
      case 'InstanceIdleOptOutSet':
        return { ...state, idleOptOut: event.data.optOut, ...(event.data.optOut ? { idleSince: null, idleWarned: false } : {}) };
      case 'InstanceServiceUsed':
        return state;
      case 'TerminalSessionOpened':
      case 'TerminalSessionClosed':
        return state;
      case 'ServicePortAdded':
        return { ...state, servicePorts: [...(state.servicePorts ?? []), { ...event.data, source: 'instance' }] };
      case 'ServicePortRemoved':
        return { ...state, servicePorts: (state.servicePorts ?? []).filter((p) => p.port !== event.data.port) };
      default:
        return assertNever(event);
    }
  },
};

/** `<name>-<instance id>-<unix seconds of the request>`: deterministic, so a retry finds its container. */
export function containerName(name: string, instanceId: string, requestedAt: string): string {
  return `${name}-${instanceId}-${Math.floor(Date.parse(requestedAt) / 1000)}`;
}

/** Human description of a container's state for `statusReason`. */
export function describeExit(exitCode: number | null, oomKilled: boolean): string {
  if (oomKilled) return 'killed: out of memory (OOM)';
  if (exitCode === null) return 'stopped';
  if (exitCode === 0) return 'exited normally (code 0)';
  if (exitCode === 137) return 'killed (code 137, SIGKILL)';
  if (exitCode === 143) return 'stopped (code 143, SIGTERM)';
  return `exited with code ${exitCode}`;
}
