import { NO_LIMITS, quotaUse, type QuotaEvent, type QuotaHolding, type QuotaLimits } from '../domain/quota/quota.decider.ts';
import type { RecordedEvent } from '../ports/event-store.port.ts';
import { documentProjection } from './projection-runner.ts';

/** A user's quota as the API shows it: the limits, what is held, and by which instances. */
export interface QuotaView {
  /** The user's id. */
  readonly id: string;
  readonly limits: QuotaLimits;
  readonly used: { readonly instances: number; readonly gpus: number };
  readonly holdings: readonly QuotaHolding[];
  readonly updatedAt: string;
}

export const QUOTAS = 'quotas';
const PREFIX = 'quota-user-';

export const quotasProjection = documentProjection<QuotaView>({
  name: 'quotas',
  collection: QUOTAS,
  idOf: (event) => (event.stream.startsWith(PREFIX) ? event.stream.slice(PREFIX.length) : undefined),
  evolve(doc, recorded) {
    const event = recorded as RecordedEvent & QuotaEvent;
    const id = recorded.stream.slice(PREFIX.length);
    const current = doc ?? { id, limits: NO_LIMITS, used: { instances: 0, gpus: 0 }, holdings: [], updatedAt: recorded.metadata.time };
    const holdings = Object.fromEntries(current.holdings.map((h) => [h.instanceId, h]));
    let limits = current.limits;
    switch (event.type) {
      case 'QuotaLimitsSet':
        limits = event.data;
        break;
      case 'QuotaClaimed':
        holdings[event.data.instanceId] = event.data;
        break;
      case 'QuotaReleased':
        delete holdings[event.data.instanceId];
        break;
      default:
        return undefined;
    }
    return { id, limits, used: quotaUse({ limits, holdings }), holdings: Object.values(holdings), updatedAt: recorded.metadata.time };
  },
});
