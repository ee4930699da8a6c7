import type { Command, Decider, DomainEvent } from './decider.ts';
import { assertNever } from './decider.ts';
import { ConflictError } from './errors.ts';

/**
 * A unique name across streams (usernames, an owner's instance names). Each name has a claim
 * stream, appended with its expected revision, so two concurrent claims cannot both succeed.
 */
export type NameClaimEvent =
  | DomainEvent<'NameClaimed', { holderId: string }>
  | DomainEvent<'NameReleased', { holderId: string }>;

export type NameClaimCommand =
  | Command<'ClaimName', {
      holderId: string;
      /**
       * A holder known not to exist: its claim was appended but its own stream never was (the
       * process died between the two appends), so it must not block the name forever.
       */
      ghostHolder: string | null;
      /** What to answer when the name is taken. */
      taken: { code: string; message: string; field: string };
    }>
  | Command<'ReleaseName', { holderId: string }>;

export type NameClaimState = { readonly holder: string | null };

export const nameClaimDecider: Decider<NameClaimCommand, NameClaimState, NameClaimEvent> = {
  initialState: () => ({ holder: null }),
  decide(command, state) {
    switch (command.type) {
      case 'ClaimName': {
        const { holderId, ghostHolder, taken } = command.data;
        if (state.holder === holderId) return [];
        if (state.holder !== null && state.holder !== ghostHolder) {
          throw new ConflictError(taken.code, taken.message, { [taken.field]: 'is taken' });
        }
        return [{ type: 'NameClaimed', data: { holderId } }];
      }
      case 'ReleaseName':
        if (state.holder !== command.data.holderId) return [];
        return [{ type: 'NameReleased', data: { holderId: command.data.holderId } }];
      default:
        return assertNever(command);
    }
  },
  evolve(_state, event) {
    switch (event.type) {
      case 'NameClaimed':
        return { holder: event.data.holderId };
      case 'NameReleased':
        return { holder: null };
      default:
        return assertNever(event);
    }
  },
};
