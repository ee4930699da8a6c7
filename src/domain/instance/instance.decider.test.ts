import { describe, expect, it } from 'vitest';
import { deciderSpec } from '../shared/decider-spec.ts';
import type { InstanceEvent, InstancePlacement, InstanceRequest } from './instance.decider.ts';
import { INSTANCE_NAME, instanceDecider } from './instance.decider.ts';

const spec = deciderSpec(instanceDecider);

const request: InstanceRequest = {
  instanceId: 'i1', ownerId: 'u1', ownerName: 'alice', name: 'train', imageId: 'img', imageAddress: 'pytorch:2', specId: 's1',
  spec: { name: 'a100-1', gpuModel: 'A100', gpuCount: 1, gpuMemoryGb: 80, vgpu: false, cpuCores: 8, memoryGb: 64, systemDiskGb: 0, dataDiskGb: 100, pricePerHour: 10 },
  remark: '', requestedAt: '2026-01-01T00:00:00.000Z',
};
const placement: InstancePlacement = { nodeId: 'n1', nodeName: 'gpu-1', gpus: [{ index: 2, memoryGb: 80 }], containerName: 'train-i1-1', dataVolume: 'train-i1-1-data' };

const requested: InstanceEvent = { type: 'InstanceRequested', data: request };
const placed: InstanceEvent = { type: 'InstancePlaced', data: placement };
const created: InstanceEvent = { type: 'ContainerCreated', data: { containerId: 'c1', storageOptApplied: false } };
const running: InstanceEvent = { type: 'InstanceStateObserved', data: { status: 'running', reason: 'running', exitCode: null, oomKilled: false, source: 'provisioning' } };
const exited: InstanceEvent = { type: 'InstanceStateObserved', data: { status: 'exited', reason: 'stopped', exitCode: 0, oomKilled: false, source: 'operation' } };
const stopRequested: InstanceEvent = { type: 'InstanceOperationRequested', data: { operation: 'stop' } };
const deleteRequested: InstanceEvent = { type: 'InstanceOperationRequested', data: { operation: 'delete' } };
const deleted: InstanceEvent = { type: 'InstanceDeleted', data: { removed: ['container train-i1-1'], notRemoved: [] } };
const vanished: InstanceEvent = { type: 'InstanceContainerVanished', data: { reason: 'the container is gone from the node' } };
const failed: InstanceEvent = { type: 'InstanceProvisioningFailed', data: { reason: 'no such image' } };
const live = [requested, placed, created, running];

const session = { sessionId: 's1', via: 'ssh' as const, userId: 'u1', username: 'alice', clientAddress: '10.0.0.9', command: 'sftp', kind: 'sftp' as const };
const sessionEnd = { sessionId: 's1', via: 'ssh' as const, durationMs: 1000, bytesIn: 10, bytesOut: 20, exitCode: 0, reason: 'the client left' };

describe('instance decider', () => {
  describe('request and provisioning', () => {
    it('records a request with its placement, once', () => {
      spec.given([]).when({ type: 'RequestInstance', data: { request, placement } }).then([requested, placed]);
      spec.given([requested, placed]).when({ type: 'RequestInstance', data: { request, placement } }).thenThrows('INSTANCE_EXISTS');
    });

    it('records progress only while creating, and only when it says something new', () => {
      spec.given([requested, placed]).when({ type: 'RecordProgress', data: { reason: 'pulling pytorch:2' } })
        .then([{ type: 'InstanceProvisioningProgressed', data: { reason: 'pulling pytorch:2' } }]);
      spec.given([requested, placed]).when({ type: 'RecordProgress', data: { reason: 'placed; preparing the container' } }).thenNothing();
      spec.given(live).when({ type: 'RecordProgress', data: { reason: 'late' } }).thenNothing();
    });

    it('records the container once, and a failure only while creating', () => {
      spec.given([requested, placed]).when({ type: 'RecordContainerCreated', data: { containerId: 'c1', storageOptApplied: false } }).then([created]);
      spec.given([requested, placed, created]).when({ type: 'RecordContainerCreated', data: { containerId: 'c1', storageOptApplied: false } }).thenNothing();
      spec.given([requested, placed]).when({ type: 'FailProvisioning', data: { reason: 'no such image' } }).then([failed]);
      spec.given(live).when({ type: 'FailProvisioning', data: { reason: 'late' } }).thenNothing();
    });

    it('knows no instance that was never requested', () => {
      spec.given([]).when({ type: 'RecordProgress', data: { reason: 'x' } }).thenThrows(404);
      spec.given([]).when({ type: 'OpenTerminalSession', data: session }).thenThrows(404);
    });
  });

  describe('observed state', () => {
    it('records a change of state, not a repeat', () => {
      spec.given(live).when({ type: 'ObserveState', data: exited.data as never }).then([exited]);
      spec.given(live).when({ type: 'ObserveState', data: running.data as never }).thenNothing();
    });

    it('keeps a failed provisioning failed when the container is seen exited', () => {
      spec.given([requested, placed, failed]).when({ type: 'ObserveState', data: exited.data as never }).thenNothing();
    });

    it('marks a vanished container once', () => {
      spec.given(live).when({ type: 'MarkVanished', data: { reason: 'the container is gone from the node' } }).then([vanished]);
      spec.given([...live, vanished]).when({ type: 'MarkVanished', data: { reason: 'the container is gone from the node' } }).thenNothing();
    });
  });

  describe('operations', () => {
    it('accepts a stop of a running instance and refuses what makes no sense', () => {
      spec.given(live).when({ type: 'RequestOperation', data: { operation: 'stop' } }).then([stopRequested]);
      spec.given([...live, exited]).when({ type: 'RequestOperation', data: { operation: 'stop' } }).thenThrows('NOT_RUNNING');
      spec.given(live).when({ type: 'RequestOperation', data: { operation: 'start' } }).thenThrows('ALREADY_RUNNING');
      spec.given([requested, placed]).when({ type: 'RequestOperation', data: { operation: 'start' } }).thenThrows('NO_CONTAINER');
      spec.given([...live, deleteRequested]).when({ type: 'RequestOperation', data: { operation: 'restart' } }).thenThrows('INSTANCE_DELETING');
    });

    it('always accepts a delete, even of a failed instance without a container', () => {
      spec.given([requested, placed, failed]).when({ type: 'RequestOperation', data: { operation: 'delete' } }).then([deleteRequested]);
    });

    it('completes only the pending operation', () => {
      spec.given([...live, stopRequested]).when({ type: 'CompleteOperation', data: { operation: 'stop' } })
        .then([{ type: 'InstanceOperationCompleted', data: { operation: 'stop' } }]);
      spec.given(live).when({ type: 'CompleteOperation', data: { operation: 'stop' } }).thenNothing();
    });

    it('is gone for every command once deleted, but the audit trail closes its sessions', () => {
      const gone = [...live, deleteRequested, deleted];
      spec.given(gone).when({ type: 'RequestOperation', data: { operation: 'start' } }).thenThrows(404);
      spec.given(gone).when({ type: 'OpenTerminalSession', data: session }).thenThrows(404);
      spec.given(gone).when({ type: 'CloseTerminalSession', data: sessionEnd }).then([{ type: 'TerminalSessionClosed', data: sessionEnd }]);
    });
  });

  describe('ways in (terminal, SSH, SFTP, forwards)', () => {
    it('lets a running instance be entered, and nothing else', () => {
      spec.given(live).when({ type: 'OpenTerminalSession', data: session }).then([{ type: 'TerminalSessionOpened', data: session }]);
      spec.given([...live, exited]).when({ type: 'OpenTerminalSession', data: session }).thenThrows('NOT_RUNNING');
      spec.given([requested, placed]).when({ type: 'OpenTerminalSession', data: session }).thenThrows('NOT_RUNNING');
    });
  });

  describe('service ports', () => {
    const withImagePorts: InstanceEvent = { type: 'InstanceRequested', data: { ...request, servicePorts: [{ port: 8888, name: 'JupyterLab', protocol: 'http', source: 'image' }] } };
    const ported = [withImagePorts, placed, created, running];
    const gradio = { port: 7860, name: 'Gradio', protocol: 'http' as const };

    it('adds a port of the instance\'s own, once, up to eight, and removes only its own', () => {
      spec.given(ported).when({ type: 'AddServicePort', data: gradio }).then([{ type: 'ServicePortAdded', data: gradio }]);
      spec.given([...ported, { type: 'ServicePortAdded', data: gradio }]).when({ type: 'AddServicePort', data: gradio }).thenThrows('PORT_DECLARED');
      spec.given(ported).when({ type: 'AddServicePort', data: { ...gradio, port: 8888 } }).thenThrows('PORT_DECLARED');
      const eight: InstanceEvent[] = Array.from({ length: 8 }, (_, i) => ({ type: 'ServicePortAdded', data: { port: 9000 + i, name: `app ${i}`, protocol: 'http' } }));
      spec.given([...ported, ...eight]).when({ type: 'AddServicePort', data: gradio }).thenThrows('TOO_MANY_PORTS');
      spec.given([...ported, ...eight, { type: 'ServicePortRemoved', data: { port: 9000 } }]).when({ type: 'AddServicePort', data: gradio })
        .then([{ type: 'ServicePortAdded', data: gradio }]);
      spec.given([...ported, { type: 'ServicePortAdded', data: gradio }]).when({ type: 'RemoveServicePort', data: { port: 7860 } })
        .then([{ type: 'ServicePortRemoved', data: { port: 7860 } }]);
      spec.given(ported).when({ type: 'RemoveServicePort', data: { port: 8888 } }).thenThrows('IMAGE_PORT');
      spec.given(ported).when({ type: 'RemoveServicePort', data: { port: 7860 } }).thenThrows('SERVICE_NOT_FOUND');
    });

    it('works on instances recorded before service ports, and not on deleted ones', () => {
      spec.given(live).when({ type: 'AddServicePort', data: gradio }).then([{ type: 'ServicePortAdded', data: gradio }]);
      spec.given([...live, deleteRequested, deleted]).when({ type: 'AddServicePort', data: gradio }).thenThrows('NOT_FOUND');
    });
  });
  describe('无卡模式 and replaced containers', () => {
    const toNone = { mode: 'none' as const, gpus: [], gpuShare: 0, containerId: 'c2', pricePerHour: 0.1 };
    const done: InstanceEvent = { type: 'InstanceOperationCompleted', data: { operation: 'stop' } };
    it('changes the GPU mode only while stopped, once', () => {
      spec.given(live).when({ type: 'ChangeGpuMode', data: toNone }).thenThrows('NOT_STOPPED');
      spec.given([...live, stopRequested, exited, done]).when({ type: 'ChangeGpuMode', data: toNone }).then([{ type: 'InstanceGpuModeChanged', data: toNone }]);
      spec.given([...live, stopRequested, exited, done, { type: 'InstanceGpuModeChanged', data: toNone }]).when({ type: 'ChangeGpuMode', data: toNone }).thenNothing();
    });

    it('takes only its own container going away for a vanishing, not one it replaced', () => {
      const changed: InstanceEvent = { type: 'InstanceGpuModeChanged', data: toNone };
      spec.given([...live, stopRequested, exited, done, changed]).when({ type: 'MarkVanished', data: { reason: 'removed', containerId: 'c1' } }).thenNothing();
      spec.given([...live, stopRequested, exited, done, changed]).when({ type: 'MarkVanished', data: { reason: 'removed', containerId: 'c2' } })
        .then([{ type: 'InstanceContainerVanished', data: { reason: 'removed' } }]);
    });
  });

  describe('scheduled stop (定时关机)', () => {
    const by = { byUserId: 'u1', byUsername: 'alice' };
    const at = '2026-01-01T02:00:00.000Z';
    const scheduled: InstanceEvent = { type: 'InstanceStopScheduled', data: { at, ...by } };
    const fired: InstanceEvent = { type: 'InstanceScheduledStopFired', data: { at } };

    it('is set on a running instance for a time ahead (normalized), replaced by a new time, and refused otherwise', () => {
      spec.given(live).when({ type: 'ScheduleStop', data: { at: '2026-01-01T10:00:00+08:00', ...by } }).then([scheduled]);
      spec.given([...live, scheduled]).when({ type: 'ScheduleStop', data: { at, ...by } }).thenNothing();
      spec.given([...live, scheduled]).when({ type: 'ScheduleStop', data: { at: '2026-01-01T03:00:00.000Z', ...by } })
        .then([{ type: 'InstanceStopScheduled', data: { at: '2026-01-01T03:00:00.000Z', ...by } }]);
      spec.given(live).when({ type: 'ScheduleStop', data: { at: '2025-12-31T23:59:59.000Z', ...by } }).thenThrows('VALIDATION_FAILED');
      spec.given(live).when({ type: 'ScheduleStop', data: { at: '2027-01-03T00:00:00.000Z', ...by } }).thenThrows('VALIDATION_FAILED');
      spec.given([...live, exited]).when({ type: 'ScheduleStop', data: { at, ...by } }).thenThrows('NOT_RUNNING');
      spec.given([...live, stopRequested]).when({ type: 'ScheduleStop', data: { at, ...by } }).thenThrows('NOT_RUNNING');
    });

    it('fires once, only at the time it stands for, as a stop request', () => {
      spec.given([...live, scheduled]).when({ type: 'FireScheduledStop', data: { at } }).then([fired, stopRequested]);
      spec.given([...live, scheduled, fired, stopRequested]).when({ type: 'FireScheduledStop', data: { at } }).thenNothing();
      spec.given([...live, scheduled]).when({ type: 'FireScheduledStop', data: { at: '2026-01-01T01:00:00.000Z' } }).thenNothing();
      spec.given([...live, scheduled, { type: 'InstanceStopUnscheduled', data: by }]).when({ type: 'FireScheduledStop', data: { at } }).thenNothing();
      spec.given([...live, scheduled, deleteRequested]).when({ type: 'FireScheduledStop', data: { at } }).then([fired]);
    });

    it('ends with a completed stop, a deletion or a failure: a later start does not bring it back', () => {
      const stopDone: InstanceEvent = { type: 'InstanceOperationCompleted', data: { operation: 'stop' } };
      spec.given([...live, scheduled, stopRequested, exited, stopDone]).when({ type: 'FireScheduledStop', data: { at } }).thenNothing();
      spec.given([...live, scheduled, vanished]).when({ type: 'FireScheduledStop', data: { at } }).thenNothing();
      spec.given([...live, scheduled]).when({ type: 'UnscheduleStop', data: by }).then([{ type: 'InstanceStopUnscheduled', data: by }]);
      spec.given(live).when({ type: 'UnscheduleStop', data: by }).thenNothing();
    });
  });
  it('takes only names Docker takes for containers and volumes: a letter or digit first', () => {
    for (const good of ['a', '9', 'train-1', 'Train_v2', 'a'.repeat(63)]) expect(INSTANCE_NAME.test(good), good).toBe(true);
    for (const bad of ['-abc', '_abc', '', 'a'.repeat(64), 'has space', '中文', 'a.b']) expect(INSTANCE_NAME.test(bad), bad).toBe(false);
  });
});
