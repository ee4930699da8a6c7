import type { Command, Decider, DomainEvent } from '../shared/decider.ts';
import { assertNever } from '../shared/decider.ts';
import { ConflictError, ValidationError } from '../shared/errors.ts';

/**
 * A user's quota: how many instances and how many GPUs they may hold at once. The limits and
 * what is held are one stream per user, so a claim is decided against both with the stream's
 * expected revision: two creates at once cannot both take the last place (the capacity ledger's
 * guarantee), and a limit lowered meanwhile is seen by the next claim.
 */
export interface QuotaLimits {
  /** Instances holding compute at once (creating, running; stopped ones hold none). null: no limit. */
  readonly maxInstances: number | null;
  /** GPUs held at once, whole cards as 1 each and vGPU slices as their share of a card. null: no limit. */
  readonly maxGpus: number | null;
  /** GPU-hours per calendar month (UTC), running time × GPUs; absent or null: no limit. */
  readonly maxGpuHoursPerMonth?: number | null;
}

export interface QuotaHolding {
  readonly instanceId: string;
  readonly instanceName: string;
  /** GPU equivalents: cards × 1, or a slice's memory over its card's. */
  readonly gpus: number;
  /** In a user's quota: the group whose quota it also holds a place in (released from there too). */
  readonly groupId?: string;
}

export type QuotaEvent =
  | DomainEvent<'QuotaLimitsSet', QuotaLimits>
  | DomainEvent<'QuotaClaimed', QuotaHolding>
  | DomainEvent<'QuotaReleased', { instanceId: string }>
  /** A user's group (用户组), whose quota their instances count against too; null: none. */
  | DomainEvent<'QuotaGroupSet', { groupId: string | null }>;

export type QuotaCommand =
  | Command<'SetQuotaLimits', QuotaLimits>
  /** `gpuHoursThisMonth`: what the user has used this month, read from the meter by the caller. */
  | Command<'ClaimQuota', QuotaHolding & { gpuHoursThisMonth?: number; group?: string }>
  | Command<'ReleaseQuota', { instanceId: string }>
  | Command<'SetQuotaGroup', { groupId: string | null }>;

export interface QuotaState {
  readonly limits: QuotaLimits;
  readonly holdings: Readonly<Record<string, QuotaHolding>>;
  /** A user's group, if any (a group's own quota has none). */
  readonly groupId?: string | null;
}

export const NO_LIMITS: QuotaLimits = { maxInstances: null, maxGpus: null, maxGpuHoursPerMonth: null };
export const MAX_QUOTA = 100_000;

export const quotaStream = (userId: string) => `quota-user-${userId}`;
export const groupQuotaStream = (groupId: string) => `quota-group-${groupId}`;

/** Two decimals: 0.25 of a card, never 0.30000000000000004. */
export const roundGpus = (n: number) => Math.round(n * 100) / 100;

export function quotaUse(state: QuotaState): { instances: number; gpus: number } {
  const held = Object.values(state.holdings);
  return { instances: held.length, gpus: roundGpus(held.reduce((sum, h) => sum + h.gpus, 0)) };
}

function assertLimits(limits: QuotaLimits): void {
  const problems: Record<string, string> = {};
  const check = (name: keyof QuotaLimits, integer: boolean) => {
    const value = limits[name];
    if (value === null || value === undefined) return;
    if (!Number.isFinite(value) || value < 0 || value > MAX_QUOTA || (integer && !Number.isInteger(value))) {
      problems[name] = integer ? `must be a whole number 0–${MAX_QUOTA}, or null for no limit` : `must be 0–${MAX_QUOTA}, or null for no limit`;
    } else if (!integer && roundGpus(value) !== value) {
      problems[name] = 'at most two decimals';
    }
  };
  check('maxInstances', true);
  check('maxGpus', false);
  if (limits.maxGpuHoursPerMonth !== undefined) check('maxGpuHoursPerMonth', false);
  if (Object.keys(problems).length > 0) throw new ValidationError(problems);
}

export const quotaDecider: Decider<QuotaCommand, QuotaState, QuotaEvent> = {
  initialState: () => ({ limits: NO_LIMITS, holdings: {} }),
  decide(command, state) {
    switch (command.type) {
      case 'SetQuotaLimits': {
        assertLimits(command.data);
        const { maxInstances, maxGpus } = command.data;
        const maxGpuHoursPerMonth = command.data.maxGpuHoursPerMonth ?? null;
        const was = state.limits;
        if (was.maxInstances === maxInstances && was.maxGpus === maxGpus && (was.maxGpuHoursPerMonth ?? null) === maxGpuHoursPerMonth) return [];
        return [{ type: 'QuotaLimitsSet', data: { maxInstances, maxGpus, maxGpuHoursPerMonth } }];
      }
      case 'ClaimQuota': {
        const { gpuHoursThisMonth, group, ...holding } = command.data;
        if (state.holdings[holding.instanceId]) return [];
        const use = quotaUse(state);
        const { maxInstances, maxGpus } = state.limits;
        const monthly = state.limits.maxGpuHoursPerMonth ?? null;
        // Whose quota: the user's own, or (for a group's stream) the group's, named.
        const whose = group === undefined ? 'Your quota' : `The quota of your group ${group}`;
        const field = (name: string) => ({ quota: group === undefined ? name : `group.${name}` });
        if (holding.gpus > 0 && monthly !== null && (gpuHoursThisMonth ?? 0) >= monthly) {
          throw new ConflictError('QUOTA_EXCEEDED', `${whose} of ${monthly} GPU-hours this month is used up (${gpuHoursThisMonth} used). CPU-only instances still start; ask an admin for more, or wait for next month.`, field('maxGpuHoursPerMonth'));
        }
        if (maxInstances !== null && use.instances + 1 > maxInstances) {
          const names = Object.values(state.holdings).map((h) => h.instanceName).join(', ');
          throw new ConflictError('QUOTA_EXCEEDED', `${whose} of ${maxInstances} instance${maxInstances === 1 ? '' : 's'} at once is reached${names ? ` (${names})` : ''}. Stop or delete one, or ask an admin for more.`, field('maxInstances'));
        }
        if (holding.gpus > 0 && maxGpus !== null && roundGpus(use.gpus + holding.gpus) > maxGpus) {
          throw new ConflictError('QUOTA_EXCEEDED', `${whose} of ${maxGpus} GPU${maxGpus === 1 ? '' : 's'} at once would be exceeded: ${use.gpus} in use, this one needs ${holding.gpus}. Stop an instance that holds GPUs, or ask an admin for more.`, field('maxGpus'));
        }
        return [{ type: 'QuotaClaimed', data: holding }];
      }
      case 'ReleaseQuota':
        if (!state.holdings[command.data.instanceId]) return [];
        return [{ type: 'QuotaReleased', data: command.data }];
      case 'SetQuotaGroup':
        if ((state.groupId ?? null) === command.data.groupId) return [];
        return [{ type: 'QuotaGroupSet', data: command.data }];
      default:
        return assertNever(command);
    }
  },
  evolve(state, event) {
    switch (event.type) {
      case 'QuotaLimitsSet':
        return { ...state, limits: event.data };
      case 'QuotaClaimed':
        return { ...state, holdings: { ...state.holdings, [event.data.instanceId]: event.data } };
      case 'QuotaReleased': {
        const { [event.data.instanceId]: _, ...rest } = state.holdings;
        return { ...state, holdings: rest };
      }
      case 'QuotaGroupSet':
        return { ...state, groupId: event.data.groupId };
      default:
        return assertNever(event);
    }
  },
};
