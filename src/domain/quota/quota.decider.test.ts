import { describe, expect, it } from 'vitest';
import { deciderSpec } from '../shared/decider-spec.ts';
import { quotaDecider, quotaUse, type QuotaEvent } from './quota.decider.ts';

const spec = deciderSpec(quotaDecider);
const limits = (maxInstances: number | null, maxGpus: number | null, maxGpuHoursPerMonth: number | null = null): QuotaEvent =>
  ({ type: 'QuotaLimitsSet', data: { maxInstances, maxGpus, maxGpuHoursPerMonth } });
const claimed = (instanceId: string, gpus: number): QuotaEvent => ({ type: 'QuotaClaimed', data: { instanceId, instanceName: `n-${instanceId}`, gpus } });

describe('quota decider', () => {
  it('lets everything through without limits, and a claim once', () => {
    spec.given([]).when({ type: 'ClaimQuota', data: claimed('a', 8).data as never }).then([claimed('a', 8)]);
    spec.given([claimed('a', 8)]).when({ type: 'ClaimQuota', data: claimed('a', 8).data as never }).thenNothing();
  });

  it('refuses the instance over the count, naming the quota and what holds it', () => {
    spec.given([limits(2, null), claimed('a', 0), claimed('b', 0)]).when({ type: 'ClaimQuota', data: claimed('c', 0).data as never }).thenThrows('QUOTA_EXCEEDED');
    const state = [limits(2, null), claimed('a', 0), claimed('b', 0)].reduce(quotaDecider.evolve, quotaDecider.initialState());
    const refusal = (() => {
      try {
        quotaDecider.decide({ type: 'ClaimQuota', data: { instanceId: 'c', instanceName: 'n-c', gpus: 0 }, metadata: { now: '2026-01-01T00:00:00Z' } }, state);
      } catch (err) {
        return err as Error & { fields?: unknown };
      }
      return null;
    })();
    expect(refusal?.message).toContain('2 instances at once');
    expect(refusal?.message).toContain('n-a, n-b');
    expect(refusal?.fields).toEqual({ quota: 'maxInstances' });
  });

  it('counts GPUs as cards and slices as shares, and refuses only what goes over', () => {
    const given = [limits(null, 2), claimed('a', 1), claimed('b', 0.5)];
    spec.given(given).when({ type: 'ClaimQuota', data: claimed('c', 0.5).data as never }).then([claimed('c', 0.5)]);
    spec.given(given).when({ type: 'ClaimQuota', data: claimed('c', 0.75).data as never }).thenThrows('QUOTA_EXCEEDED');
    // a CPU-only instance is not held back by a full GPU quota
    spec.given([...given, claimed('c', 0.5)]).when({ type: 'ClaimQuota', data: claimed('d', 0).data as never }).then([claimed('d', 0)]);
    expect(quotaUse([...given, claimed('c', 0.5)].reduce(quotaDecider.evolve, quotaDecider.initialState()))).toEqual({ instances: 3, gpus: 2 });
  });

  it('frees a place on release; a lowered limit holds the next claim, not the ones held', () => {
    spec.given([limits(1, null), claimed('a', 0), { type: 'QuotaReleased', data: { instanceId: 'a' } }])
      .when({ type: 'ClaimQuota', data: claimed('b', 0).data as never }).then([claimed('b', 0)]);
    spec.given([claimed('a', 1), claimed('b', 1)]).when({ type: 'SetQuotaLimits', data: { maxInstances: 1, maxGpus: 1 } })
      .then([limits(1, 1)]);
    spec.given([claimed('a', 1)]).when({ type: 'ReleaseQuota', data: { instanceId: 'x' } }).thenNothing();
  });

  it('refuses a GPU instance once the month\'s GPU-hours are used up, and lets a CPU-only one through', () => {
    const given = [limits(null, null, 100)];
    spec.given(given).when({ type: 'ClaimQuota', data: { instanceId: 'a', instanceName: 'n-a', gpus: 1, gpuHoursThisMonth: 99.5 } }).then([claimed('a', 1)]);
    spec.given(given).when({ type: 'ClaimQuota', data: { instanceId: 'a', instanceName: 'n-a', gpus: 1, gpuHoursThisMonth: 100 } }).thenThrows('QUOTA_EXCEEDED');
    spec.given(given).when({ type: 'ClaimQuota', data: { instanceId: 'b', instanceName: 'n-b', gpus: 0, gpuHoursThisMonth: 250 } }).then([claimed('b', 0)]);
    spec.given([]).when({ type: 'SetQuotaLimits', data: { maxInstances: null, maxGpus: null, maxGpuHoursPerMonth: 0.001 } }).thenThrows('VALIDATION_FAILED');
  });

  it('names the group in a group\'s refusal', () => {
    const state = [limits(1, null), claimed('a', 0)].reduce(quotaDecider.evolve, quotaDecider.initialState());
    expect(() => quotaDecider.decide({ type: 'ClaimQuota', data: { instanceId: 'b', instanceName: 'n-b', gpus: 0, group: 'NLP 组' }, metadata: { now: '2026-01-01T00:00:00Z' } }, state))
      .toThrow(/The quota of your group NLP 组 of 1 instance at once is reached/);
    spec.given([]).when({ type: 'SetQuotaGroup', data: { groupId: 'g1' } }).then([{ type: 'QuotaGroupSet', data: { groupId: 'g1' } }]);
    spec.given([{ type: 'QuotaGroupSet', data: { groupId: 'g1' } }]).when({ type: 'SetQuotaGroup', data: { groupId: 'g1' } }).thenNothing();
  });

  it('takes whole instance counts and GPU numbers with two decimals, or null', () => {
    for (const bad of [{ maxInstances: 1.5, maxGpus: null }, { maxInstances: -1, maxGpus: null }, { maxInstances: null, maxGpus: 0.125 }, { maxInstances: null, maxGpus: 1e9 }]) {
      spec.given([]).when({ type: 'SetQuotaLimits', data: bad }).thenThrows('VALIDATION_FAILED');
    }
    spec.given([limits(null, null)]).when({ type: 'SetQuotaLimits', data: { maxInstances: null, maxGpus: null } }).thenNothing();
  });
});
