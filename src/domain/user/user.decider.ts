import type { Command, Decider } from '../shared/decider.ts';
import { assertNever } from '../shared/decider.ts';
import { ConflictError, ForbiddenError, NotFoundError } from '../shared/errors.ts';
import type { Role, SshKey, UserEvent } from './user.events.ts';

export type UserCommand =
  | Command<'RegisterUser', {
      userId: string;
      username: string;
      passwordHash: string;
      role: Role;
      displayName: string;
    }>
  | Command<'ChangePassword', { passwordHash: string }>
  | Command<'UpdateUser', { role?: Role; disabled?: boolean; displayName?: string }>
  | Command<'DeleteUser', Record<string, never>>
  | Command<'AddSshKey', Omit<SshKey, 'addedAt'>>
  | Command<'RemoveSshKey', { keyId: string }>
  | Command<'EndSession', { sessionId: string; expiresAt: string }>
  | Command<'SignOutEverywhere', Record<string, never>>;

export type UserState =
  | { readonly status: 'none' }
  | {
      readonly status: 'active' | 'disabled' | 'deleted';
      readonly userId: string;
      readonly username: string;
      readonly role: Role;
      readonly displayName: string;
      readonly passwordHash: string;
      readonly passwordChangedAt: string;
      readonly sshKeys: readonly SshKey[];
    };

type ExistingUser = Exclude<UserState, { status: 'none' }>;

export const MAX_SSH_KEYS = 20;

function existing(state: UserState): ExistingUser {
  if (state.status === 'none' || state.status === 'deleted') throw new NotFoundError('User');
  return state;
}

export const userDecider: Decider<UserCommand, UserState, UserEvent> = {
  initialState: () => ({ status: 'none' }),

  decide(command, state) {
    const { now, userId: actor } = command.metadata;
    switch (command.type) {
      case 'RegisterUser': {
        if (state.status !== 'none') throw new ConflictError('USER_EXISTS', 'This user already exists.');
        return [{ type: 'UserRegistered', data: { ...command.data, registeredAt: now } }];
      }
      case 'ChangePassword': {
        existing(state);
        return [{ type: 'UserPasswordChanged', data: { passwordHash: command.data.passwordHash, changedAt: now } }];
      }
      case 'UpdateUser': {
        const user = existing(state);
        const { role, disabled, displayName } = command.data;
        const self = actor === user.userId;
        if (self && role === 'user' && user.role === 'admin') {
          throw new ForbiddenError('You cannot take the admin role from your own account.', 'SELF_DEMOTION');
        }
        if (self && disabled === true) {
          throw new ForbiddenError('You cannot disable your own account.', 'SELF_DISABLE');
        }
        const events: UserEvent[] = [];
        if (role !== undefined && role !== user.role) events.push({ type: 'UserRoleChanged', data: { role } });
        if (displayName !== undefined && displayName !== user.displayName) {
          events.push({ type: 'UserDisplayNameChanged', data: { displayName } });
        }
        if (disabled === true && user.status === 'active') events.push({ type: 'UserDisabled', data: { disabledAt: now } });
        if (disabled === false && user.status === 'disabled') events.push({ type: 'UserEnabled', data: { enabledAt: now } });
        return events;
      }
      case 'DeleteUser': {
        const user = existing(state);
        if (actor === user.userId) throw new ForbiddenError('You cannot delete your own account.', 'SELF_DELETE');
        return [{ type: 'UserDeleted', data: { deletedAt: now } }];
      }
      case 'AddSshKey': {
        const user = existing(state);
        if (user.sshKeys.some((k) => k.fingerprint === command.data.fingerprint)) {
          throw new ConflictError('SSH_KEY_EXISTS', 'This public key is already registered.');
        }
        if (user.sshKeys.length >= MAX_SSH_KEYS) {
          throw new ConflictError('TOO_MANY_SSH_KEYS', `At most ${MAX_SSH_KEYS} SSH keys per user.`);
        }
        return [{ type: 'SshKeyAdded', data: { ...command.data, addedAt: now } }];
      }
      case 'RemoveSshKey': {
        const user = existing(state);
        if (!user.sshKeys.some((k) => k.keyId === command.data.keyId)) throw new NotFoundError('SSH key');
        return [{ type: 'SshKeyRemoved', data: { keyId: command.data.keyId } }];
      }
      case 'EndSession':
        existing(state);
        return [{ type: 'UserSessionEnded', data: command.data }];
      case 'SignOutEverywhere':
        existing(state);
        return [{ type: 'UserSignedOutEverywhere', data: { at: now } }];
      default:
        return assertNever(command);
    }
  },

  evolve(state, event) {
    if (event.type === 'UserRegistered') {
      const { userId, username, role, displayName, passwordHash, registeredAt } = event.data;
      return {
        status: 'active',
        userId,
        username,
        role,
        displayName,
        passwordHash,
        passwordChangedAt: registeredAt,
        sshKeys: [],
      };
    }
    if (state.status === 'none') return state;
    switch (event.type) {
      case 'UserPasswordChanged':
        return { ...state, passwordHash: event.data.passwordHash, passwordChangedAt: event.data.changedAt };
      case 'UserRoleChanged':
        return { ...state, role: event.data.role };
      case 'UserDisplayNameChanged':
        return { ...state, displayName: event.data.displayName };
      case 'UserDisabled':
        return { ...state, status: 'disabled' };
      case 'UserEnabled':
        return { ...state, status: 'active' };
      case 'UserDeleted':
        return { ...state, status: 'deleted' };
      case 'SshKeyAdded':
        return { ...state, sshKeys: [...state.sshKeys, event.data] };
      case 'SshKeyRemoved':
        return { ...state, sshKeys: state.sshKeys.filter((k) => k.keyId !== event.data.keyId) };
      case 'UserSessionEnded':
      case 'UserSignedOutEverywhere':
        return state;
      default:
        return assertNever(event);
    }
  },
};
