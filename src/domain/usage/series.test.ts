import { describe, expect, it } from 'vitest';
import { addSample, pointsOf, type Sample, type Series } from './series.ts';

const T0 = Date.parse('2026-12-06T08:00:00.000Z');
const sample = (msAfter: number, values: Partial<Sample> = {}): Sample => ({
  at: new Date(T0 + msAfter).toISOString(), cpuPercent: 10, memoryBytes: 100, gpuMemoryBytes: null, rxBytes: 0, txBytes: 0, ...values,
});

describe('an instance\'s time series', () => {
  it('keeps one point a minute for the hour and per 15 minutes for the day, each the mean of its samples', () => {
    let s: Series | null = null;
    s = addSample(s, 'i1', sample(0, { cpuPercent: 10, rxBytes: 0 }));
    s = addSample(s, 'i1', sample(30_000, { cpuPercent: 30, rxBytes: 3_000 }));
    s = addSample(s, 'i1', sample(60_000, { cpuPercent: 50, rxBytes: 9_000 }));
    expect(s.hour.map((p) => [p.t.slice(11, 16), p.n, p.cpuPercent])).toEqual([['08:00', 2, 20], ['08:01', 1, 50]]);
    // Rates from the counters: 3,000 B in 30 s, then 6,000 B in 30 s.
    expect(s.hour.map((p) => p.rxBytesPerSecond)).toEqual([100, 200]);
    expect(s.day.map((p) => [p.t.slice(11, 16), p.n, p.cpuPercent])).toEqual([['08:00', 3, 30]]);
  });

  it('is bounded: an hour of minutes, a day of quarter hours, whatever the run', () => {
    let s: Series | null = null;
    for (let minute = 0; minute < 3 * 24 * 60; minute += 1) s = addSample(s, 'i1', sample(minute * 60_000));
    expect(s!.hour).toHaveLength(60);
    expect(s!.day).toHaveLength(96);
    const now = T0 + 3 * 24 * 3_600_000;
    expect(pointsOf(s, 'hour', now)).toHaveLength(59);
    // Two hours without a sample (the instance stopped): the hour is empty, the day is not.
    expect(pointsOf(s, 'hour', now + 2 * 3_600_000)).toEqual([]);
    expect(pointsOf(s, 'day', now + 2 * 3_600_000).length).toBeGreaterThan(80);
  });

  it('gives no rate for a counter that went back (the container restarted) and keeps order on a clock step back', () => {
    let s: Series | null = addSample(null, 'i1', sample(0, { rxBytes: 50_000, txBytes: 10 }));
    s = addSample(s, 'i1', sample(60_000, { rxBytes: 100, txBytes: 20 }));
    expect(s.hour.at(-1)!.rxBytesPerSecond).toBeNull();
    expect(s.hour.at(-1)!.txBytesPerSecond).toBeCloseTo(10 / 60);
    const before = s;
    s = addSample(s, 'i1', sample(-120_000));
    expect(s.hour.map((p) => p.t)).toEqual(before.hour.map((p) => p.t));
  });
});
