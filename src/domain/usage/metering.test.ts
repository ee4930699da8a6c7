import { describe, expect, it } from 'vitest';
import { applyUsageChange, usageInWindow, type UsageChange, type UsageRecord, gpuHoursThisMonth, monthStart } from './metering.ts';

const fresh: UsageRecord = {
  id: 'i1', ownerId: 'u1', ownerName: 'alice', name: 'train', specId: 's1', nodeId: 'n1',
  running: false, nodeUp: true, deleted: false, pricePerHour: 3.6, intervals: [],
};
const T = (minutes: number, seconds = 0) => new Date(Date.UTC(2026, 10, 26, 10, minutes, seconds)).toISOString();
const script = (steps: [string, UsageChange][]) => steps.reduce((r, [at, change]) => applyUsageChange(r, at, change), fresh);

describe('metering', () => {
  it('bills only the time observed running, across stop and start', () => {
    const r = script([
      [T(0), { running: true }],
      [T(10), { running: false }],
      [T(20), { running: true }],
      [T(25), { running: false }],
    ]);
    // 15 minutes at 3.6/h = 0.9
    expect(usageInWindow(r, T(0), T(59), T(59))).toEqual({ seconds: 900, cost: 0.9 });
  });

  it('stops the meter while the node is unreachable and resumes when it is back', () => {
    const r = script([
      [T(0), { running: true }],
      [T(5), { nodeUp: false }],
      [T(8), { running: false }], // observed during the outage: changes nothing billed
      [T(9), { running: true }],
      [T(12), { nodeUp: true }],
      [T(14), { deleted: true }],
    ]);
    expect(r.intervals).toEqual([
      { start: T(0), end: T(5), pricePerHour: 3.6 },
      { start: T(12), end: T(14), pricePerHour: 3.6 },
    ]);
    expect(usageInWindow(r, T(0), T(59), T(59)).seconds).toBe(7 * 60);
  });

  it('prices each stretch at the price in force then', () => {
    const r = script([
      [T(0), { running: true }],
      [T(30), { pricePerHour: 7.2 }],
      [T(40), { running: false }],
      [T(45), { pricePerHour: 1 }],
    ]);
    // 30 min × 3.6 + 10 min × 7.2 = 1.8 + 1.2
    expect(usageInWindow(r, T(0), T(59), T(59))).toEqual({ seconds: 2400, cost: 3 });
  });

  it('counts an open interval up to now, clipped to the window, to the second', () => {
    const r = script([[T(0), { running: true }]]);
    expect(usageInWindow(r, T(1), T(59), T(2, 30.9))).toEqual({ seconds: 90, cost: 0.09 });
    expect(usageInWindow(r, T(30), T(40), T(20))).toEqual({ seconds: 0, cost: 0 });
  });

  it('ignores repeated observations', () => {
    const r = script([[T(0), { running: true }], [T(1), { running: true }], [T(2), { nodeUp: true }]]);
    expect(r.intervals).toHaveLength(1);
  });
});

describe('GPU-hours this month', () => {
  const interval = (start: string, end: string | null) => ({ start, end, pricePerHour: 1 });
  it('counts running time × GPUs from the first of the month (UTC) to now, across instances', () => {
    const now = '2026-12-06T12:00:00.000Z';
    const records = [
      // 4 cards from 30 Nov 22:00 to 1 Dec 02:00: only the 2 hours in December count, × 4
      { gpus: 4, intervals: [interval('2026-11-30T22:00:00.000Z', '2026-12-01T02:00:00.000Z')] },
      // a quarter card, still running since 6 Dec 08:00: 4 hours × 0.25
      { gpus: 0.25, intervals: [interval('2026-12-06T08:00:00.000Z', null)] },
      // CPU only: no GPU-hours however long
      { gpus: 0, intervals: [interval('2026-12-01T00:00:00.000Z', null)] },
      // older records without a GPU figure count nothing
      { intervals: [interval('2026-12-02T00:00:00.000Z', '2026-12-03T00:00:00.000Z')] },
    ];
    expect(gpuHoursThisMonth(records, now)).toBe(2 * 4 + 4 * 0.25);
    expect(monthStart(now)).toBe('2026-12-01T00:00:00.000Z');
  });
});
