import type { Command, Decider, DomainEvent } from '../shared/decider.ts';
import { assertNever } from '../shared/decider.ts';
import { ValidationError } from '../shared/errors.ts';

/**
 * 预付费余额: a user's prepaid balance (TIANQI_PREPAID=1). One stream per user holds what an admin
 * credited or debited, with the reason, and the warnings and the arrears decided on it. Usage is
 * not copied onto it: it is the meter (`domain/usage/metering.ts`), itself folded from the
 * instances' events, counted from the time the account was opened (its first credit). So
 *
 *   balance = Σ adjustments − usage since opening
 *
 * is exact at any time and after any restart or replay: nothing is rounded twice, and no charge
 * can be posted twice or lost between ticks. Amounts are whole units of 1/10,000 of the currency
 * (the meter's own precision), so sums are integers.
 */
export const UNITS_PER_CURRENCY = 10_000;
/** At most 100 million in one adjustment. */
export const MAX_ADJUSTMENT = 100_000_000 * UNITS_PER_CURRENCY;

export const toUnits = (amount: number) => Math.round(amount * UNITS_PER_CURRENCY);
export const fromUnits = (units: number) => units / UNITS_PER_CURRENCY;

export interface BalanceAdjustment {
  /** Units, > 0 a credit (充值), < 0 a debit (扣款). */
  readonly amount: number;
  readonly reason: string;
  readonly byUsername: string;
  readonly at: string;
}

export type BalanceEvent =
  | DomainEvent<'BalanceAdjusted', BalanceAdjustment>
  /** The balance fell below the low-balance threshold (once, until a credit). */
  | DomainEvent<'BalanceLowWarned', { balance: number; threshold: number }>
  /** The balance reached zero: the user's running instances are stopped (欠费停机), once until a credit. */
  | DomainEvent<'BalanceExhausted', { balance: number }>;

export type BalanceCommand =
  | Command<'AdjustBalance', { amount: number; reason: string; byUsername: string }>
  /** `usage`: units the meter counts since the account's opening, read by the caller at `metadata.now`. */
  | Command<'CheckBalance', { usage: number; threshold: number }>;

export interface BalanceState {
  /** When the first adjustment was made: usage counts from then. null: no account yet. */
  readonly openedAt: string | null;
  /** Σ adjustments, units. */
  readonly adjusted: number;
  readonly warned: boolean;
  readonly exhausted: boolean;
}

export const balanceStream = (userId: string) => `balance-${userId}`;

/** The balance in units, given the meter's usage since opening. */
export const balanceOf = (state: Pick<BalanceState, 'adjusted'>, usage: number) => state.adjusted - usage;

export const balanceDecider: Decider<BalanceCommand, BalanceState, BalanceEvent> = {
  initialState: () => ({ openedAt: null, adjusted: 0, warned: false, exhausted: false }),
  decide(command, state) {
    switch (command.type) {
      case 'AdjustBalance': {
        const { amount, reason, byUsername } = command.data;
        const problems: Record<string, string> = {};
        if (!Number.isInteger(amount) || amount === 0 || Math.abs(amount) > MAX_ADJUSTMENT) {
          problems.amount = 'must be non-zero, at most 4 decimals and at most 100,000,000';
        }
        if (reason.trim().length === 0) problems.reason = 'say why (it is on the statement)';
        if (Object.keys(problems).length > 0) throw new ValidationError(problems);
        return [{ type: 'BalanceAdjusted', data: { amount, reason: reason.trim(), byUsername, at: command.metadata.now } }];
      }
      case 'CheckBalance': {
        if (state.openedAt === null) return [];
        const balance = balanceOf(state, command.data.usage);
        const { threshold } = command.data;
        const events: BalanceEvent[] = [];
        if (balance < threshold && balance > 0 && !state.warned && !state.exhausted) {
          events.push({ type: 'BalanceLowWarned', data: { balance, threshold } });
        }
        if (balance <= 0 && !state.exhausted) events.push({ type: 'BalanceExhausted', data: { balance } });
        return events;
      }
      default:
        return assertNever(command);
    }
  },
  evolve(state, event) {
    switch (event.type) {
      case 'BalanceAdjusted':
        return {
          openedAt: state.openedAt ?? event.data.at,
          adjusted: state.adjusted + event.data.amount,
          // A credit starts the warnings over: the next check decides again on the new balance.
          warned: event.data.amount > 0 ? false : state.warned,
          exhausted: event.data.amount > 0 ? false : state.exhausted,
        };
      case 'BalanceLowWarned':
        return { ...state, warned: true };
      case 'BalanceExhausted':
        return { ...state, warned: true, exhausted: true };
      default:
        return assertNever(event);
    }
  },
};
