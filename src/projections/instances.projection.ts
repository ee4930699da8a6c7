import { stoppedReason, type StopCause } from '../domain/instance/words.ts';
import type { InstanceEvent, InstanceStatus, Operation, SpecSnapshot } from '../domain/instance/instance.decider.ts';
import type { InstanceServicePort, PublishedPort } from '../domain/instance/service-ports.ts';
import type { RecordedEvent } from '../ports/event-store.port.ts';
import { documentProjection } from './projection-runner.ts';

/** Telemetry beside the read models (not projected from events): each instance's bounded time series for its charts. */
export const INSTANCE_SERIES = 'instance_series';

export interface InstanceView {
  readonly id: string;
  readonly name: string;
  readonly ownerId: string;
  readonly ownerName: string;
  readonly imageId: string;
  readonly imageAddress: string;
  readonly specId: string;
  readonly spec: SpecSnapshot;
  readonly nodeId: string;
  readonly nodeName: string;
  readonly containerId: string | null;
  readonly containerName: string;
  readonly dataVolume: string | null;
  readonly status: InstanceStatus;
  readonly statusReason: string;
  readonly pending: Operation | null;
  /** Who asked for the pending operation, and why a stop was made (for the status reason once it is done). */
  readonly pendingBy?: string | null;
  readonly stopCause?: StopCause | null;
  readonly gpuCards: readonly { index: number; memoryGb: number }[];
  /** 无卡模式: `none` while a GPU instance runs without its cards; absent: `gpu`. */
  readonly gpuMode?: 'gpu' | 'none';
  readonly remark: string;
  /** The image's service ports and the instance's own (absent on instances from before service ports). */
  readonly servicePorts?: readonly InstanceServicePort[];
  /** 定时关机: when the instance is to be stopped, and by whom it was set; absent or null when none is. */
  readonly scheduledStop?: { readonly at: string; readonly byUsername: string } | null;
  /** `scheduledStop.at`, top-level so the scheduler finds the due ones with one indexed query. */
  readonly scheduledStopAt?: string | null;
  /** Sessions and forwards open into it (from the audit's opens and closes; 0 once it stops). */
  readonly openSessions?: number;
  /** The last session opened or closed, service page used, or start. */
  readonly lastActivityAt?: string;
  /** Idle auto-stop: idle since then, and when it will be stopped once warned; null while in use. */
  readonly idle?: { readonly since: string; readonly stopAt: string | null } | null;
  /** The owner switched the idle auto-stop off for it. */
  readonly idleOptOut?: boolean;
  /** Service ports mapped to host ports of the node (absent when none). */
  readonly publicPorts?: readonly PublishedPort[];
  readonly createdAt: string;
  readonly updatedAt: string;
}

export const INSTANCES = 'instances';

const NO_SCHEDULE = { scheduledStop: null, scheduledStopAt: null } as const;

/** Instances that are not deleted; deleting one removes its document. */
export const instancesProjection = documentProjection<InstanceView>({
  name: 'instances',
  collection: INSTANCES,
  indexes: [{ fields: { ownerId: 1, name: 1 }, unique: true }, { fields: { scheduledStopAt: 1 } }],
  idOf: (event) => (event.stream.startsWith('instance-') ? event.stream.slice('instance-'.length) : undefined),
  evolve(doc, recorded) {
    const event = recorded as RecordedEvent & InstanceEvent;
    const at = recorded.metadata.time;
    if (event.type === 'InstanceRequested') {
      const { instanceId, requestedAt, ...request } = event.data;
      // The placement follows in the same append, so no reader sees an instance without a node.
      return {
        id: instanceId, ...request, nodeId: '', nodeName: '', containerId: null, containerName: '', dataVolume: null, status: 'creating',
        statusReason: 'requested', pending: null, gpuCards: [], createdAt: requestedAt, updatedAt: at, openSessions: 0, lastActivityAt: requestedAt,
      };
    }
    if (!doc) return undefined;
    switch (event.type) {
      case 'InstancePlaced': {
        // The GPU share is the quotas' (and the meter's), not part of the instance as the API shows it.
        const { gpus, gpuShare: _share, ...placement } = event.data;
        return { ...doc, ...placement, gpuCards: gpus, statusReason: 'placed; preparing the container', updatedAt: at };
      }
      case 'InstanceProvisioningProgressed':
        return { ...doc, statusReason: event.data.reason, updatedAt: at };
      case 'ContainerCreated':
        return { ...doc, containerId: event.data.containerId, updatedAt: at };
      case 'InstanceProvisioningFailed':
        return { ...doc, status: 'failed', statusReason: event.data.reason, ...NO_SCHEDULE, updatedAt: at };
      case 'InstanceStateObserved':
        return {
          ...doc, status: event.data.status, statusReason: event.data.reason, updatedAt: at,
          ...(event.data.status === 'running' ? { lastActivityAt: at } : { openSessions: 0, idle: null }),
        };
      case 'TerminalSessionOpened':
        return { ...doc, openSessions: (doc.openSessions ?? 0) + 1, lastActivityAt: at };
      case 'TerminalSessionClosed':
        return { ...doc, openSessions: Math.max(0, (doc.openSessions ?? 0) - 1), lastActivityAt: at };
      case 'InstanceServiceUsed':
        return { ...doc, lastActivityAt: at };
      case 'InstanceIdleStarted':
        return { ...doc, idle: { since: event.data.since, stopAt: null }, updatedAt: at };
      case 'InstanceIdleWarned':
        return { ...doc, idle: doc.idle ? { ...doc.idle, stopAt: event.data.stopAt } : null, updatedAt: at };
      case 'InstanceProvisioningRetried':
        return { ...doc, status: 'creating', statusReason: 'retrying: preparing the container', containerId: null, updatedAt: at };
      case 'InstanceGpuLost':
        return { ...doc, statusReason: `GPU ${event.data.cards.map((c) => c.index).join(', ')} no longer seen on the node`, updatedAt: at };
      case 'InstanceGpuModeChanged':
        return { ...doc, gpuMode: event.data.mode, gpuCards: event.data.gpus, containerId: event.data.containerId, updatedAt: at };
      case 'InstanceIdleEnded':
        return { ...doc, idle: null, updatedAt: at };
      case 'InstanceIdleStopFired':
        return { ...doc, idle: null, stopCause: 'idle', updatedAt: at };
      case 'InstanceIdleOptOutSet':
        return { ...doc, idleOptOut: event.data.optOut, ...(event.data.optOut ? { idle: null } : {}), updatedAt: at };
      case 'InstanceContainerVanished':
        return { ...doc, status: 'failed', statusReason: event.data.reason, containerId: null, ...NO_SCHEDULE, updatedAt: at };
      case 'InstanceOperationRequested':
        return {
          ...doc, pending: event.data.operation, pendingBy: event.data.byUsername ?? null,
          // A stop the platform fires is announced by its own event just before.
          stopCause: event.data.byUsername ? 'user' : doc.stopCause ?? null, updatedAt: at,
        };
      case 'InstanceOperationFailed':
        return event.data.willRetry ? { ...doc, updatedAt: at } : { ...doc, pending: null, statusReason: event.data.reason, updatedAt: at };
      case 'InstanceOperationCompleted':
        return {
          ...doc, pending: null, pendingBy: null, stopCause: null,
          // Stopped on request: said as such, not as the signal that ended the processes.
          ...(event.data.operation === 'stop' && doc.status !== 'running' ? { statusReason: stoppedReason(doc.stopCause ?? undefined, doc.pendingBy ?? undefined) } : {}),
          ...(event.data.operation === 'stop' ? { ...NO_SCHEDULE, idle: null } : {}), updatedAt: at,
        };
      case 'InstanceStopScheduled':
        return { ...doc, scheduledStop: { at: event.data.at, byUsername: event.data.byUsername }, scheduledStopAt: event.data.at, updatedAt: at };
      case 'InstanceStopUnscheduled':
        return { ...doc, ...NO_SCHEDULE, updatedAt: at };
      case 'InstanceScheduledStopFired':
        return { ...doc, ...NO_SCHEDULE, stopCause: 'scheduled', updatedAt: at };
      case 'InstanceArrearsStopFired':
        return { ...doc, stopCause: 'arrears', updatedAt: at };
      case 'InstanceDeleted':
        return null;
      case 'ServicePortAdded':
        return { ...doc, servicePorts: [...(doc.servicePorts ?? []), { ...event.data, source: 'instance' }], updatedAt: at };
      case 'ServicePortRemoved':
        return { ...doc, servicePorts: (doc.servicePorts ?? []).filter((p) => p.port !== event.data.port), updatedAt: at };
      default:
        return undefined;
    }
  },
});
