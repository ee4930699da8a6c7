import { describe, expect, it } from 'vitest';
import { reservationProblem } from '../catalog/node.decider.ts';
import { candidates, place, type CardLedger, type HostPortLedger, type NodeLedger, type ResourceRequest } from './placement.ts';

const card = (index: number, over: Partial<CardLedger> = {}): CardLedger => ({ index, totalMemoryGb: 80, slicedMemoryGb: 0, whole: false, ...over });
const ports = (min: number, max: number, taken: number[] = []): HostPortLedger => ({ min, max, taken: new Set(taken) });
const node = (name: string, over: Partial<NodeLedger> = {}): NodeLedger => ({
  nodeId: `id-${name}`, name, listed: true, connected: true, gpuModel: 'NVIDIA A100', cards: [card(0), card(1), card(2), card(3)],
  cpuCores: 64, memoryGb: 512, dataDiskGb: 2000, usedCpuCores: 0, usedMemoryGb: 0, usedDataDiskGb: 0, hostPorts: ports(30_000, 32_767), ...over,
});
const gpu1: ResourceRequest = { gpuCount: 1, gpuMemoryGb: 80, vgpu: false, gpuModel: 'nvidia a100', cpuCores: 8, memoryGb: 64, dataDiskGb: 100 };
const slice20: ResourceRequest = { ...gpu1, gpuMemoryGb: 20, vgpu: true };
const cpuOnly: ResourceRequest = { gpuCount: 0, gpuMemoryGb: 0, vgpu: false, gpuModel: '', cpuCores: 4, memoryGb: 8, dataDiskGb: 10 };

describe('placement', () => {
  it('grants explicit card indices, skipping cards already taken', () => {
    const busy = node('a', { cards: [card(0, { whole: true }), card(1, { slicedMemoryGb: 20 }), card(2), card(3)] });
    expect(place({ ...gpu1, gpuCount: 2 }, [busy])).toEqual({ nodeId: 'id-a', gpus: [{ index: 2, memoryGb: 80 }, { index: 3, memoryGb: 80 }], hostPorts: [] });
  });

  it('only uses listed, connected nodes with the same GPU model', () => {
    const nodes = [node('a', { listed: false }), node('b', { connected: false }), node('c', { gpuModel: 'RTX 4090' })];
    expect(place(gpu1, nodes)).toBeNull();
    expect(place(gpu1, [...nodes, node('d')])!.nodeId).toBe('id-d');
  });

  it('ignores GPU fields for a CPU-only spec', () => {
    expect(place(cpuOnly, [node('a', { gpuModel: '', cards: [] })])).toEqual({ nodeId: 'id-a', gpus: [], hostPorts: [] });
  });

  it('never lets a vGPU slice span cards, and packs slices onto used cards first', () => {
    const n = node('a', { cards: [card(0, { slicedMemoryGb: 70 }), card(1, { slicedMemoryGb: 40 }), card(2)] });
    expect(place(slice20, [n])).toEqual({ nodeId: 'id-a', gpus: [{ index: 1, memoryGb: 20 }], hostPorts: [] });
    expect(place(slice20, [n], 'spread')).toEqual({ nodeId: 'id-a', gpus: [{ index: 2, memoryGb: 20 }], hostPorts: [] });
    const full = node('b', { cards: [card(0, { slicedMemoryGb: 70 }), card(1, { whole: true })] });
    expect(place(slice20, [full])).toBeNull();
  });

  it('gives a multi-card vGPU spec distinct cards', () => {
    const n = node('a', { cards: [card(0, { slicedMemoryGb: 70 }), card(1, { slicedMemoryGb: 40 }), card(2)] });
    expect(place({ ...slice20, gpuCount: 2 }, [n])!.gpus.map((g) => g.index)).toEqual([1, 2]);
  });

  it('binpacks onto the busiest node by default and spreads on request', () => {
    const empty = node('a');
    const half = node('b', { cards: [card(0, { whole: true }), card(1, { whole: true }), card(2), card(3)] });
    expect(place(gpu1, [empty, half])!.nodeId).toBe('id-b');
    expect(place(gpu1, [empty, half], 'spread')!.nodeId).toBe('id-a');
  });

  it('checks CPU, memory and disk', () => {
    expect(place(gpu1, [node('a', { usedCpuCores: 60 })])).toBeNull();
    expect(place(gpu1, [node('a', { usedMemoryGb: 500 })])).toBeNull();
    expect(place(gpu1, [node('a', { usedDataDiskGb: 1950 })])).toBeNull();
    expect(place(gpu1, [node('a', { dataDiskGb: null, usedDataDiskGb: 1e9 })])).not.toBeNull();
  });

  it('lists every candidate with the free memory of each usable card', () => {
    const n = node('a', { cards: [card(0, { slicedMemoryGb: 70 }), card(1, { whole: true }), card(2, { slicedMemoryGb: 20 })] });
    expect(candidates(slice20, [n, node('z', { connected: false })])).toEqual([
      { nodeId: 'id-a', name: 'a', cards: [{ index: 2, totalMemoryGb: 80, freeMemoryGb: 60, whole: false }], freeCpuCores: 64, freeMemoryGb: 512, freeDataDiskGb: 2000, freePublicPorts: 2768 },
    ]);
  });

  it('refuses a reservation whose card was taken in the meantime', () => {
    const n = node('a', { cards: [card(0, { whole: true }), card(1, { slicedMemoryGb: 70 })] });
    const r = { instanceId: 'i', cpuCores: 1, memoryGb: 1, dataDiskGb: 0 };
    expect(reservationProblem(n, { ...r, vgpu: false, gpus: [{ index: 0, memoryGb: 80 }] })).toBe('GPU 0 is taken');
    expect(reservationProblem(n, { ...r, vgpu: true, gpus: [{ index: 1, memoryGb: 20 }] })).toBe('GPU 1 is taken');
    expect(reservationProblem(n, { ...r, vgpu: true, gpus: [{ index: 1, memoryGb: 10 }] })).toBeNull();
    expect(reservationProblem(n, { ...r, vgpu: false, gpus: [{ index: 7, memoryGb: 80 }] })).toBe('it has no GPU 7');
  });

  it('maps public ports to the lowest free host ports of the node\'s range, and skips nodes without enough', () => {
    const busy = node('a', { hostPorts: ports(40_000, 40_003, [40_000, 40_002]) });
    expect(place({ ...cpuOnly, publicPorts: 2 }, [busy])!.hostPorts).toEqual([40_001, 40_003]);
    expect(place({ ...cpuOnly, publicPorts: 3 }, [busy])).toBeNull();
    // binpack would take the busier node a; only b has three free ports
    const roomy = node('b', { hostPorts: ports(40_000, 40_009) });
    expect(place({ ...cpuOnly, publicPorts: 3 }, [busy, roomy])).toEqual({ nodeId: 'id-b', gpus: [], hostPorts: [40_000, 40_001, 40_002] });
    // a port held from before the range was narrowed does not count against the new range
    expect(candidates(cpuOnly, [node('c', { hostPorts: ports(40_000, 40_001, [39_000]) })])[0]!.freePublicPorts).toBe(2);
  });

  it('refuses a reservation whose host port was taken meanwhile, or lies outside the range', () => {
    const n = node('a', { hostPorts: ports(40_000, 40_010, [40_005]) });
    const r = { instanceId: 'i', cpuCores: 1, memoryGb: 1, dataDiskGb: 0, vgpu: false, gpus: [] };
    expect(reservationProblem(n, { ...r, hostPorts: [{ port: 8888, hostPort: 40_005 }] })).toBe('host port 40005 is taken');
    expect(reservationProblem(n, { ...r, hostPorts: [{ port: 8888, hostPort: 50_000 }] })).toBe('host port 50000 is outside its public port range 40000–40010');
    expect(reservationProblem(n, { ...r, hostPorts: [{ port: 8888, hostPort: 40_001 }, { port: 6006, hostPort: 40_001 }] })).toBe('host port 40001 is asked for twice');
    expect(reservationProblem(n, { ...r, hostPorts: [{ port: 8888, hostPort: 40_001 }, { port: 6006, hostPort: 40_002 }] })).toBeNull();
  });
});
