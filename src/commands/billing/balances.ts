import { balanceDecider, balanceOf, balanceStream, fromUnits, toUnits, type BalanceState } from '../../domain/billing/balance.decider.ts';
import { ConflictError } from '../../domain/shared/errors.ts';
import { usageInWindow, usageUnitsSince } from '../../domain/usage/metering.ts';
import type { ReadStore } from '../../ports/read-store.port.ts';
import { BALANCES, type BalanceView } from '../../projections/balances.projection.ts';
import { usageRecords } from '../../projections/usage.projection.ts';
import { USERS, type UserView } from '../../projections/users.projection.ts';
import type { CommandBus, CommandContext } from '../command-bus.ts';

/** The prepaid settings (TIANQI_PREPAID, TIANQI_LOW_BALANCE). */
export interface PrepaidSettings {
  readonly enabled: boolean;
  /** Currency: below this the owner is warned once. */
  readonly lowBalance: number;
}

/** A user's prepaid account as the API shows it: amounts in currency, 4 decimals. */
export interface Statement {
  readonly userId: string;
  readonly enabled: boolean;
  readonly openedAt: string | null;
  readonly balance: number;
  readonly credited: number;
  readonly usage: number;
  readonly lowBalance: number;
  readonly warned: boolean;
  readonly exhausted: boolean;
  readonly adjustments: readonly { amount: number; reason: string; byUsername: string; at: string }[];
  /** Usage since the opening, per instance (deleted ones too), the meter's figures. */
  readonly instances: readonly { instanceId: string; name: string; deleted: boolean; seconds: number; cost: number }[];
  readonly asOf: string;
}

/**
 * 预付费: credits and debits by admins, the balance against the meter, and the gate creates and
 * starts go through. See `domain/billing/balance.decider.ts` for why usage is read from the
 * meter instead of being posted.
 */
export class Balances {
  constructor(
    private readonly bus: CommandBus,
    private readonly store: ReadStore,
    readonly settings: PrepaidSettings,
    private readonly clock: () => number = Date.now,
  ) {}

  private now(): string {
    return new Date(this.clock()).toISOString();
  }

  /** Units the meter counts for the user since the account was opened (0 before). */
  async usageSince(userId: string, openedAt: string | null, now = this.now()): Promise<number> {
    if (openedAt === null) return 0;
    return usageUnitsSince(await usageRecords(this.store, userId), openedAt, now);
  }

  async statement(userId: string): Promise<Statement> {
    const now = this.now();
    const view = await this.store.collection<BalanceView>(BALANCES).get(userId);
    const state: BalanceState = view ?? balanceDecider.initialState();
    const records = state.openedAt === null ? [] : await usageRecords(this.store, userId);
    const metered = records.map((r) => ({ instanceId: r.id, name: r.name, deleted: r.deleted, ...usageInWindow(r, state.openedAt!, now, now) }));
    // As usageUnitsSince counts it: each instance rounded once, then summed.
    const usage = metered.reduce((sum, i) => sum + toUnits(i.cost), 0);
    const instances = metered.filter((i) => i.seconds > 0);
    return {
      userId,
      enabled: this.settings.enabled,
      openedAt: state.openedAt,
      balance: fromUnits(balanceOf(state, usage)),
      credited: fromUnits(state.adjusted),
      usage: fromUnits(usage),
      lowBalance: this.settings.lowBalance,
      warned: state.warned,
      exhausted: state.exhausted,
      adjustments: (view?.adjustments ?? []).map((a) => ({ ...a, amount: fromUnits(a.amount) })).reverse(),
      instances,
      asOf: now,
    };
  }

  /** 充值 (amount > 0) or 扣款 (< 0), in currency, with the reason on the statement. */
  async adjust(userId: string, amount: number, reason: string, byUsername: string, context: CommandContext): Promise<void> {
    if (!this.settings.enabled) {
      throw new ConflictError('PREPAID_OFF', 'Prepaid balances are switched off in this deployment (set TIANQI_PREPAID=1 to use them).');
    }
    await this.bus.execute(balanceDecider, balanceStream(userId), { type: 'AdjustBalance', data: { amount: toUnits(amount), reason, byUsername } }, { ...context, now: this.now() });
  }

  /** Decides the warnings and the arrears on the balance as the meter has it now; the state after. */
  async check(userId: string, context: CommandContext): Promise<{ state: BalanceState; balance: number }> {
    const now = this.now();
    const { state: before } = await this.bus.load(balanceDecider, balanceStream(userId));
    const usage = await this.usageSince(userId, before.openedAt, now);
    const { state } = await this.bus.execute(balanceDecider, balanceStream(userId), {
      type: 'CheckBalance', data: { usage, threshold: toUnits(this.settings.lowBalance) },
    }, { ...context, now });
    return { state, balance: balanceOf(state, usage) };
  }

  /**
   * A create or start for this owner needs a positive balance (admins' own instances aside): 409
   * BALANCE_EXHAUSTED otherwise, with the balance named, before anything is reserved.
   */
  async admit(ownerId: string): Promise<void> {
    if (!this.settings.enabled) return;
    const owner = await this.store.collection<UserView>(USERS).get(ownerId);
    if (!owner || owner.role === 'admin') return;
    const view = await this.store.collection<BalanceView>(BALANCES).get(ownerId);
    const state: BalanceState = view ?? balanceDecider.initialState();
    const balance = balanceOf(state, await this.usageSince(ownerId, state.openedAt));
    if (balance <= 0) {
      throw new ConflictError('BALANCE_EXHAUSTED', state.openedAt === null
        ? 'This platform is prepaid and your account has no balance yet. Ask an administrator to top it up (充值).'
        : `Your prepaid balance is used up (${fromUnits(balance).toFixed(2)}). Ask an administrator to top it up (充值), then start again.`);
    }
  }
}
