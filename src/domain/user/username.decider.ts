import type { Command, Decider, DomainEvent } from '../shared/decider.ts';
import { assertNever } from '../shared/decider.ts';
import { ConflictError } from '../shared/errors.ts';

/**
 * Usernames are unique across user streams. Each name has a claim stream, appended with its
 * expected revision, so two concurrent registrations of one name cannot both succeed.
 */
export type UsernameEvent =
  | DomainEvent<'UsernameClaimed', { userId: string }>
  | DomainEvent<'UsernameReleased', { userId: string }>;

export type UsernameCommand =
  | Command<'ClaimUsername', {
      userId: string;
      /**
       * A holder known to have no account: its claim was appended but the account never was (the
       * process died between the two appends), so it must not block the name forever.
       */
      ghostHolder: string | null;
    }>
  | Command<'ReleaseUsername', { userId: string }>;

export type UsernameState = { readonly holder: string | null };

export const usernameStream = (username: string) => `username-${username.toLowerCase()}`;

export const usernameDecider: Decider<UsernameCommand, UsernameState, UsernameEvent> = {
  initialState: () => ({ holder: null }),
  decide(command, state) {
    switch (command.type) {
      case 'ClaimUsername':
        if (state.holder === command.data.userId) return [];
        if (state.holder !== null && state.holder !== command.data.ghostHolder) {
          throw new ConflictError('USERNAME_TAKEN', 'This username is taken.', { username: 'is taken' });
        }
        return [{ type: 'UsernameClaimed', data: { userId: command.data.userId } }];
      case 'ReleaseUsername':
        if (state.holder !== command.data.userId) return [];
        return [{ type: 'UsernameReleased', data: { userId: command.data.userId } }];
      default:
        return assertNever(command);
    }
  },
  evolve(state, event) {
    switch (event.type) {
      case 'UsernameClaimed':
        return { holder: event.data.userId };
      case 'UsernameReleased':
        return { holder: null };
      default:
        return assertNever(event);
    }
  },
};
