import { describe, expect, it } from 'vitest';
import { place, type ResourceRequest } from '../instance/placement.ts';
import { mergeInventory, modelMatches, parseCudaVersion, parseGpuQuery } from './gpu-inventory.ts';
import { ledgerOf, type NodeState } from './node.decider.ts';
import { RECORDED } from './nvidia-smi.recorded.ts';

const HEADER = '| NVIDIA-SMI 550.127.05             Driver Version: 550.127.05     CUDA Version: 12.4     |';

describe('card discovery', () => {
  it('reads each card: index, UUID, model, memory, driver, MIG mode', () => {
    const dgx = parseGpuQuery(RECORDED.dgxA100)!;
    expect(dgx.cards).toHaveLength(8);
    expect(dgx.driverVersion).toBe('535.129.03');
    expect(dgx.cards[3]).toEqual({ index: 3, uuid: 'GPU-4f1c2a7e-9b3d-4c8e-a1f0-0c5e6d7b8a93', model: 'NVIDIA A100-SXM4-80GB', memoryGb: 80, migMode: 'disabled', available: true });
    expect(parseGpuQuery(RECORDED.h100)!.cards.map((c) => c.memoryGb)).toEqual([80, 80]);
    expect(parseGpuQuery(RECORDED.rtx4090)!.cards[0]).toMatchObject({ model: 'NVIDIA GeForce RTX 4090', memoryGb: 24, migMode: 'n/a' });
    expect(parseGpuQuery(RECORDED.mig)!.cards[0]).toMatchObject({ memoryGb: 40, migMode: 'enabled' });
    expect(parseCudaVersion(HEADER)).toBe('12.4');
  });

  it('takes an error for no reading, not for cards', () => {
    for (const bad of ['', 'NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver.', 'No devices were found', '0, not-a-uuid, X, 1, 1, Disabled']) {
      expect(parseGpuQuery(bad), bad).toBeNull();
    }
    expect(parseCudaVersion('no header')).toBeNull();
  });

  it('keeps a card missing on the second read, unavailable; a failed read makes every card unavailable', () => {
    const first = mergeInventory(null, { ...parseGpuQuery(RECORDED.mixed)!, cudaVersion: '12.4' });
    const withoutCard2 = RECORDED.mixed.split('\n').filter((l) => !l.startsWith('2,')).join('\n');
    const second = mergeInventory(first, { ...parseGpuQuery(withoutCard2)!, cudaVersion: '12.4' });
    expect(second.cards.map((c) => [c.index, c.available])).toEqual([[0, true], [1, true], [2, false], [3, true]]);
    const back = mergeInventory(second, { ...parseGpuQuery(RECORDED.mixed)!, cudaVersion: '12.4' });
    expect(back.cards.every((c) => c.available)).toBe(true);
    const failed = mergeInventory(back, { error: 'NVIDIA-SMI has failed' });
    expect(failed.cards.every((c) => !c.available)).toBe(true);
    expect(failed.error).toBe('NVIDIA-SMI has failed');
  });

  it('names cards by the words of a spec\'s model, vendor words aside', () => {
    expect(modelMatches('A100', 'NVIDIA A100-SXM4-80GB')).toBe(true);
    expect(modelMatches('NVIDIA A100', 'NVIDIA A100 80GB PCIe')).toBe(true);
    expect(modelMatches('RTX 4090', 'NVIDIA GeForce RTX 4090')).toBe(true);
    expect(modelMatches('A10', 'NVIDIA A100-SXM4-80GB')).toBe(false);
    expect(modelMatches('H100', 'NVIDIA A100-SXM4-80GB')).toBe(false);
    expect(modelMatches('', 'NVIDIA A40')).toBe(false);
  });

  it('places on a mixed node by each card\'s own model and memory, never on a card gone missing', () => {
    const inventory = mergeInventory(null, { ...parseGpuQuery(RECORDED.mixed)!, cudaVersion: '12.4' });
    const node = (gpuInventory: typeof inventory): Exclude<NodeState, { status: 'none' }> => ({
      status: 'active', nodeId: 'n1', reservations: {}, join: { tokens: {}, agent: null },
      settings: { name: 'mixed', listed: true, gpuModel: 'declared-model', gpuCount: 1, gpuMemoryGb: 8, cpuCores: 64, memoryGb: 256, dataDiskGb: null } as never,
      connection: { status: 'connected', error: null, checkedAt: null, facts: { cpus: 64, memoryBytes: 256 * 1024 ** 3, gpuInventory } as never },
    });
    const want = (gpuModel: string, gpuCount: number, gpuMemoryGb: number): ResourceRequest => ({ gpuModel, gpuCount, gpuMemoryGb, vgpu: false, cpuCores: 1, memoryGb: 1, dataDiskGb: 0 });
    expect(place(want('A100', 2, 80), [ledgerOf(node(inventory))])!.gpus.map((g) => g.index)).toEqual([0, 1]);
    expect(place(want('RTX 4090', 2, 24), [ledgerOf(node(inventory))])!.gpus.map((g) => g.index)).toEqual([2, 3]);
    expect(place(want('RTX 4090', 3, 24), [ledgerOf(node(inventory))])).toBeNull();
    // The declared model no longer counts once cards are discovered.
    expect(place(want('declared-model', 1, 8), [ledgerOf(node(inventory))])).toBeNull();
    const lost = mergeInventory(inventory, { ...parseGpuQuery(RECORDED.mixed.split('\n').filter((l) => !l.startsWith('3,')).join('\n'))!, cudaVersion: '12.4' });
    expect(place(want('RTX 4090', 2, 24), [ledgerOf(node(lost))])).toBeNull();
    expect(place(want('RTX 4090', 1, 24), [ledgerOf(node(lost))])!.gpus.map((g) => g.index)).toEqual([2]);
    // An A40 sold as 48 GB reports 45 GiB: a 48 GB spec still fits it.
    const a40 = mergeInventory(null, { ...parseGpuQuery(RECORDED.a40)!, cudaVersion: null });
    expect(place(want('A40', 1, 48), [ledgerOf(node(a40))])).not.toBeNull();
  });
});
