import { describe, expect, it } from 'vitest';
import { ConflictError, ValidationError } from '../shared/errors.ts';
import { imageDecider } from './image.decider.ts';
import { nodeCapacity, nodeDecider, nodeProblems, type NodeSettings } from './node.decider.ts';
import { imageCanRun, specDecider, specProblems, type SpecFields } from './spec.decider.ts';

const now = '2026-11-26T10:00:00.000Z';
const meta = { now, userId: 'admin' };
const cpuSpec: SpecFields = {
  name: 'CPU 4C8G', gpuModel: '', gpuCount: 0, gpuMemoryGb: 0, vgpuSupported: false, cpuCores: 4, memoryGb: 8,
  systemDiskGb: 50, dataDiskGb: 100, pricePerHour: 0.5, listed: true, remark: '',
};

describe('spec rules', () => {
  it('accepts a CPU-only spec with no GPU model', () => {
    expect(specProblems(cpuSpec)).toEqual({});
  });

  it('requires a GPU model and memory per card for a GPU spec', () => {
    expect(specProblems({ ...cpuSpec, gpuCount: 2 })).toEqual({
      gpuModel: 'is required when gpuCount is above 0',
      gpuMemoryGb: 'must be above 0 when gpuCount is above 0',
    });
  });

  it('refuses vGPU without GPUs, negative and unbounded numbers, and prices with 5 decimals', () => {
    const problems = specProblems({ ...cpuSpec, vgpuSupported: true, cpuCores: -1, memoryGb: 1e9, pricePerHour: 1.23456, systemDiskGb: 1.5 });
    expect(Object.keys(problems).sort()).toEqual(['cpuCores', 'memoryGb', 'pricePerHour', 'systemDiskGb', 'vgpuSupported']);
    expect(specProblems({ ...cpuSpec, pricePerHour: 1.2345 })).toEqual({});
  });

  it('checks the merged result of an update', () => {
    const state = specDecider.evolve(specDecider.initialState(), { type: 'SpecCreated', data: { ...cpuSpec, specId: 's1' } });
    expect(() => specDecider.decide({ type: 'UpdateSpec', data: { gpuCount: 1 }, metadata: meta }, state)).toThrow(ValidationError);
    expect(specDecider.decide({ type: 'UpdateSpec', data: { gpuCount: 1, gpuModel: 'A100', gpuMemoryGb: 80 }, metadata: meta }, state)).toHaveLength(1);
    expect(specDecider.decide({ type: 'UpdateSpec', data: { name: cpuSpec.name }, metadata: meta }, state)).toEqual([]);
  });

  it('never gives a vGPU spec to an image without vGPU support', () => {
    expect(imageCanRun({ vgpuSupported: false }, { vgpuSupported: true })).toBe(false);
    expect(imageCanRun({ vgpuSupported: false }, { vgpuSupported: false })).toBe(true);
    expect(imageCanRun({ vgpuSupported: true }, { vgpuSupported: true })).toBe(true);
  });
});

describe('deleting in use', () => {
  it('refuses to delete an image a live instance uses, and allows unlisting it', () => {
    const state = imageDecider.evolve(imageDecider.initialState(), {
      type: 'ImageCreated',
      data: { imageId: 'i1', name: 'pytorch', address: 'pytorch/pytorch:2.4', description: '', source: '', vgpuSupported: false, listed: true, remark: '' },
    });
    expect(() => imageDecider.decide({ type: 'DeleteImage', data: { liveInstances: 2 }, metadata: meta }, state)).toThrow(ConflictError);
    expect(imageDecider.decide({ type: 'UpdateImage', data: { listed: false }, metadata: meta }, state)).toEqual([
      { type: 'ImageUpdated', data: { listed: false } },
    ]);
    expect(imageDecider.decide({ type: 'DeleteImage', data: { liveInstances: 0 }, metadata: meta }, state)[0]!.type).toBe('ImageDeleted');
  });
});

describe('nodes', () => {
  const node: NodeSettings = {
    name: 'gpu-01', region: '', cpu: '', memory: '', systemDisk: '', dataDisk: '', cpuCores: null, memoryGb: 256, dataDiskGb: null,
    publicIp: '1.2.3.4', privateIp: '10.0.0.4', sshPort: 22, sshUser: '', sshPasswordSealed: null, gpuModel: 'A100', gpuCount: 4,
    gpuMemoryGb: 80, hamiCoreDir: '/root/HAMi-core/build', dockerEndpoint: 'tcp://10.0.0.4:2376', dockerTls: true, tlsCa: 'ca',
    tlsCert: 'cert', tlsKeySealed: 'sealed', listed: true, remark: '',
  };
  const facts = {
    serverVersion: '27.0', cpus: 64, memoryBytes: 512 * 1024 ** 3, operatingSystem: 'Ubuntu', kernelVersion: '6.8', architecture: 'x86_64',
    storageDriver: 'overlay2', nvidiaRuntime: true, runtimes: ['runc', 'nvidia'],
  };

  it('requires the TLS material for a TLS tcp endpoint', () => {
    expect(nodeProblems({ ...node, tlsCa: '', tlsKeySealed: null })).toEqual({
      tlsCa: 'is required when dockerTls is on',
      tlsKey: 'is required when dockerTls is on',
    });
    expect(nodeProblems({ ...node, dockerEndpoint: 'unix:///var/run/docker.sock', tlsCa: '', tlsKeySealed: null })).toEqual({});
  });

  it('takes capacity from the form, or from the engine where the form is empty, and exposes each card', () => {
    const capacity = nodeCapacity(node, facts);
    expect(capacity).toMatchObject({ cpuCores: 64, memoryGb: 256, dataDiskGb: null });
    expect(capacity.gpus).toEqual([0, 1, 2, 3].map((index) => ({ index, totalMemoryGb: 80, freeMemoryGb: 80 })));
    expect(nodeCapacity({ ...node, gpuCount: 0 }, null)).toMatchObject({ cpuCores: null, gpus: [] });
  });

  it('records connection checks, and in reconcile mode only changes', () => {
    let state = nodeDecider.evolve(nodeDecider.initialState(), { type: 'NodeRegistered', data: { ...node, nodeId: 'n1' } });
    expect(state.status === 'active' && state.connection.status).toBe('unknown');
    const ok = { ok: true, error: null, facts, onlyOnChange: true };
    const events = nodeDecider.decide({ type: 'RecordConnectionCheck', data: ok, metadata: meta }, state);
    expect(events).toEqual([{ type: 'NodeConnectionChecked', data: { status: 'connected', error: null, checkedAt: now, facts } }]);
    state = events.reduce(nodeDecider.evolve, state);
    expect(nodeDecider.decide({ type: 'RecordConnectionCheck', data: ok, metadata: meta }, state)).toEqual([]);
    expect(nodeDecider.decide({ type: 'RecordConnectionCheck', data: { ...ok, onlyOnChange: false }, metadata: meta }, state)).toHaveLength(1);
  });

  it('gives a stopped instance\'s cards, CPU and memory back and keeps its disk; a start takes the same cards again or is refused naming the card', () => {
    type Event = Parameters<typeof nodeDecider.evolve>[1];
    const apply = (state: ReturnType<typeof nodeDecider.initialState>, events: readonly Event[]) => events.reduce(nodeDecider.evolve, state);
    const reservation = { instanceId: 'i1', gpus: [{ index: 2, memoryGb: 80 }], vgpu: false, cpuCores: 8, memoryGb: 64, dataDiskGb: 100 };
    let state = apply(nodeDecider.initialState(), [{ type: 'NodeRegistered', data: { ...node, nodeId: 'n1' } }, { type: 'NodeCapacityReserved', data: reservation }]);
    const release = nodeDecider.decide({ type: 'ReleaseCompute', data: { instanceId: 'i1' }, metadata: meta }, state);
    expect(release).toEqual([{ type: 'NodeComputeReleased', data: { instanceId: 'i1' } }]);
    state = apply(state, release);
    expect(state.status === 'active' && state.reservations.i1).toEqual({ ...reservation, gpus: [], cpuCores: 0, memoryGb: 0, computeReleased: true });
    // once is enough; an instance without a reservation has nothing to give back
    expect(nodeDecider.decide({ type: 'ReleaseCompute', data: { instanceId: 'i1' }, metadata: meta }, state)).toEqual([]);
    expect(nodeDecider.decide({ type: 'ReleaseCompute', data: { instanceId: 'i9' }, metadata: meta }, state)).toEqual([]);

    // card 2 is free now: another instance may take it, and then i1's start is refused by name
    const other = { ...reservation, instanceId: 'i2' };
    const taken = apply(state, nodeDecider.decide({ type: 'ReserveCapacity', data: other, metadata: meta }, state));
    expect(() => nodeDecider.decide({ type: 'ReserveCapacity', data: reservation, metadata: meta }, taken)).toThrow(/GPU 2 is taken/);
    // untaken, i1 gets its own card back: the reservation is whole again
    const back = nodeDecider.decide({ type: 'ReserveCapacity', data: reservation, metadata: meta }, state);
    expect(back).toEqual([{ type: 'NodeCapacityReserved', data: reservation }]);
    expect(nodeDecider.decide({ type: 'ReserveCapacity', data: reservation, metadata: meta }, apply(state, back))).toEqual([]);
  });

  it('marks a connection change and resets the status to unknown', () => {
    const state = nodeDecider.evolve(nodeDecider.initialState(), { type: 'NodeRegistered', data: { ...node, nodeId: 'n1' } });
    const [event] = nodeDecider.decide({ type: 'ChangeNodeSettings', data: { dockerEndpoint: 'tcp://10.0.0.5:2376', remark: 'moved' }, metadata: meta }, state);
    expect(event).toEqual({ type: 'NodeSettingsChanged', data: { dockerEndpoint: 'tcp://10.0.0.5:2376', remark: 'moved', connectionChanged: true } });
    const [plain] = nodeDecider.decide({ type: 'ChangeNodeSettings', data: { remark: 'x' }, metadata: meta }, state);
    expect(plain!.data).toEqual({ remark: 'x', connectionChanged: false });
  });
});
