import { describe, expect, it } from 'vitest';
import { gpuShare } from './instances.ts';

describe('what an instance counts against a GPU quota', () => {
  const cards = [0, 1, 2, 3].map((index) => ({ index, totalMemoryGb: 80 }));
  it('counts whole cards as 1 each and vGPU slices as their share of the card', () => {
    expect(gpuShare(false, [{ index: 0, memoryGb: 80 }, { index: 3, memoryGb: 80 }], cards)).toBe(2);
    expect(gpuShare(true, [{ index: 1, memoryGb: 20 }], cards)).toBe(0.25);
    expect(gpuShare(true, [{ index: 1, memoryGb: 24 }, { index: 2, memoryGb: 24 }], cards)).toBe(0.6);
    expect(gpuShare(false, [], cards)).toBe(0);
  });
  it('counts a card of unknown size whole, and never more than a card for one slice', () => {
    expect(gpuShare(true, [{ index: 9, memoryGb: 20 }], cards)).toBe(1);
    expect(gpuShare(true, [{ index: 0, memoryGb: 100 }], cards)).toBe(1);
  });
});
