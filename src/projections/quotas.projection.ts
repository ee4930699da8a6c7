import { NO_LIMITS, quotaUse, type QuotaEvent, type QuotaHolding, type QuotaLimits } from '../domain/quota/quota.decider.ts';
import type { RecordedEvent } from '../ports/event-store.port.ts';
import { documentProjection } from './projection-runner.ts';

/** A user's or a group's quota as the API shows it: the limits, what is held, and by which instances. */
export interface QuotaView {
  /** The user's id, or `group:<group id>`. */
  readonly id: string;
  /** A user's group (用户组), or null. */
  readonly groupId?: string | null;
  readonly limits: QuotaLimits;
  readonly used: { readonly instances: number; readonly gpus: number };
  readonly holdings: readonly QuotaHolding[];
  readonly updatedAt: string;
}

export const QUOTAS = 'quotas';
const PREFIX = 'quota-user-';
const GROUP_PREFIX = 'quota-group-';
/** A group's quota document: beside the users', told apart by its id. */
export const groupQuotaId = (groupId: string) => `group:${groupId}`;

function quotaIdOf(stream: string): string | undefined {
  if (stream.startsWith(PREFIX)) return stream.slice(PREFIX.length);
  if (stream.startsWith(GROUP_PREFIX)) return groupQuotaId(stream.slice(GROUP_PREFIX.length));
  return undefined;
}

export const quotasProjection = documentProjection<QuotaView>({
  name: 'quotas',
  collection: QUOTAS,
  indexes: [{ fields: { groupId: 1 } }],
  idOf: (event) => quotaIdOf(event.stream),
  evolve(doc, recorded) {
    const event = recorded as RecordedEvent & QuotaEvent;
    const id = quotaIdOf(recorded.stream)!;
    const current = doc ?? { id, limits: NO_LIMITS, used: { instances: 0, gpus: 0 }, holdings: [], updatedAt: recorded.metadata.time };
    const holdings = Object.fromEntries(current.holdings.map((h) => [h.instanceId, h]));
    let limits = current.limits;
    let groupId = current.groupId ?? null;
    switch (event.type) {
      case 'QuotaGroupSet':
        groupId = event.data.groupId;
        break;
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
    return { id, groupId, limits, used: quotaUse({ limits, holdings }), holdings: Object.values(holdings), updatedAt: recorded.metadata.time };
  },
});
