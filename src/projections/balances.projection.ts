import { balanceDecider, type BalanceAdjustment, type BalanceEvent, type BalanceState } from '../domain/billing/balance.decider.ts';
import type { RecordedEvent } from '../ports/event-store.port.ts';
import { documentProjection } from './projection-runner.ts';

/** A user's prepaid account as the read side keeps it: the ledger's state and every adjustment. */
export interface BalanceView extends BalanceState {
  /** The user's id. */
  readonly id: string;
  readonly adjustments: readonly BalanceAdjustment[];
  readonly updatedAt: string;
}

export const BALANCES = 'balances';
const PREFIX = 'balance-';

export const balancesProjection = documentProjection<BalanceView>({
  name: 'balances',
  collection: BALANCES,
  indexes: [],
  idOf: (event) => (event.stream.startsWith(PREFIX) ? event.stream.slice(PREFIX.length) : undefined),
  evolve(doc, recorded) {
    const event = recorded as RecordedEvent & BalanceEvent;
    const id = recorded.stream.slice(PREFIX.length);
    const current: BalanceView = doc ?? { id, ...balanceDecider.initialState(), adjustments: [], updatedAt: recorded.metadata.time };
    const { id: _, adjustments, updatedAt: __, ...state } = current;
    const next = balanceDecider.evolve(state, event);
    return {
      id,
      ...next,
      adjustments: event.type === 'BalanceAdjusted' ? [...adjustments, event.data] : adjustments,
      updatedAt: recorded.metadata.time,
    };
  },
});
