import { describe, expect, it } from 'vitest';
import { busyNow, idleStep, type IdleFacts, type IdlePolicy } from './idle.ts';

const policy: IdlePolicy = { minutes: 60, cpuPercent: 5, gpuPercent: 5, optOutAllowed: true };
const T = (minutes: number) => new Date(Date.UTC(2026, 11, 6, 10, 0) + minutes * 60_000).toISOString();
const facts = (over: Partial<IdleFacts> = {}): IdleFacts => ({
  openSessions: 0, lastActivityAt: T(0), sample: { at: T(0), cpuPercent: 0.4, gpuPercents: [0] }, hasGpus: true,
  idleSince: null, warned: false, optedOut: false, ...over,
});

/**
 * Recorded samples of a real training day on one A100 (every 30 s, condensed to the minutes that
 * change): a notebook open for an hour, a run at 95–99 % GPU, then nobody: the kernel at 0.3 %
 * CPU, the card at 0 %, nvidia-smi's memory still held by the dead kernel's context.
 */
const day: [minute: number, cpu: number | null, gpu: number | null][] = [
  [0, 12.1, 0], [30, 3.2, 0], [45, 180.4, 97], [90, 176.9, 99], [120, 0.6, 0], [121, 0.3, 0], [240, 0.4, 0],
];

describe('idle auto-stop', () => {
  it('is busy with a session open, with CPU or any GPU at or over the threshold; unknown without a fresh, whole sample', () => {
    expect(busyNow(policy, facts(), Date.parse(T(1)))).toBe('idle');
    expect(busyNow(policy, facts({ openSessions: 1 }), Date.parse(T(1)))).toBe('busy');
    expect(busyNow(policy, facts({ sample: { at: T(0), cpuPercent: 5, gpuPercents: [0] } }), Date.parse(T(1)))).toBe('busy');
    expect(busyNow(policy, facts({ sample: { at: T(0), cpuPercent: 1, gpuPercents: [0, 37] } }), Date.parse(T(1)))).toBe('busy');
    expect(busyNow(policy, facts({ sample: { at: T(0), cpuPercent: 1, gpuPercents: [null, 37] } }), Date.parse(T(1)))).toBe('busy');
    // a card that does not report, no sample, a stale sample: not known either way
    expect(busyNow(policy, facts({ sample: { at: T(0), cpuPercent: 1, gpuPercents: [null] } }), Date.parse(T(1)))).toBe('unknown');
    expect(busyNow(policy, facts({ sample: null }), Date.parse(T(1)))).toBe('unknown');
    expect(busyNow(policy, facts(), Date.parse(T(4)))).toBe('unknown');
    // a CPU-only instance needs no GPU figures
    expect(busyNow(policy, facts({ hasGpus: false, sample: { at: T(0), cpuPercent: 1, gpuPercents: [] } }), Date.parse(T(1)))).toBe('idle');
  });

  it('decides nothing on a stale sample: neither a stop nor an idle period lost', () => {
    expect(idleStep(policy, facts({ idleSince: T(1), sample: { at: T(10), cpuPercent: 0.1, gpuPercents: [0] } }), T(90))).toEqual({ kind: 'none' });
  });

  it('starts the clock when first seen idle, warns 10 minutes before, stops at the policy\'s minutes', () => {
    expect(idleStep(policy, facts(), T(1))).toEqual({ kind: 'idle', since: T(1) });
    const idle = (at: number, over: Partial<IdleFacts> = {}) => facts({ idleSince: T(1), sample: { at: T(at), cpuPercent: 0.2, gpuPercents: [0] }, ...over });
    expect(idleStep(policy, idle(30), T(30))).toEqual({ kind: 'none' });
    expect(idleStep(policy, idle(51), T(51))).toEqual({ kind: 'warn', stopAt: T(61) });
    expect(idleStep(policy, idle(55, { warned: true }), T(55))).toEqual({ kind: 'none' });
    expect(idleStep(policy, idle(61, { warned: true }), T(61))).toEqual({ kind: 'stop' });
    // a platform down through the warning still stops: the stop does not wait for a warning
    expect(idleStep(policy, idle(90), T(90))).toEqual({ kind: 'stop' });
  });

  it('starts over after a use, ends with work, and leaves an instance alone without a policy or opted out', () => {
    // a page used at minute 40: idle from then
    expect(idleStep(policy, facts({ idleSince: T(1), lastActivityAt: T(40), sample: { at: T(41), cpuPercent: 0.1, gpuPercents: [0] } }), T(41)))
      .toEqual({ kind: 'idle', since: T(40) });
    expect(idleStep(policy, facts({ idleSince: T(1), sample: { at: T(41), cpuPercent: 90, gpuPercents: [0] } }), T(41))).toEqual({ kind: 'busy' });
    expect(idleStep(null, facts({ idleSince: T(1) }), T(70))).toEqual({ kind: 'busy' });
    expect(idleStep(policy, facts({ idleSince: T(1), optedOut: true }), T(70))).toEqual({ kind: 'busy' });
    expect(idleStep(policy, facts({ optedOut: true }), T(70))).toEqual({ kind: 'none' });
  });

  it('over a recorded day: never stops while the run works, stops an hour after the card went quiet', () => {
    let state: Pick<IdleFacts, 'idleSince' | 'warned'> = { idleSince: null, warned: false };
    const outcomes: string[] = [];
    for (let minute = 0; minute <= 240; minute++) {
      const [, cpu, gpu] = [...day].reverse().find(([m]) => m <= minute)!;
      const step = idleStep(policy, facts({ ...state, lastActivityAt: T(0), sample: { at: T(minute), cpuPercent: cpu, gpuPercents: [gpu] } }), T(minute));
      if (step.kind === 'idle') state = { idleSince: step.since, warned: false };
      if (step.kind === 'busy') state = { idleSince: null, warned: false };
      if (step.kind === 'warn') state = { ...state, warned: true };
      if (step.kind !== 'none') outcomes.push(`${minute} ${step.kind}`);
      if (step.kind === 'stop') break;
    }
    // idle 30–44 (a pause, too short), busy with the run from 45, idle from 120, warned at 170, stopped at 180
    expect(outcomes).toEqual(['30 idle', '45 busy', '120 idle', '170 warn', '180 stop']);
  });
});
