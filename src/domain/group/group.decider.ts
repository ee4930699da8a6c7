import type { Command, Decider, DomainEvent } from '../shared/decider.ts';
import { assertNever } from '../shared/decider.ts';
import { ConflictError, NotFoundError } from '../shared/errors.ts';

/** 用户组: users an admin puts together (a research group), who share a group quota. */
export type GroupEvent =
  | DomainEvent<'GroupCreated', { groupId: string; name: string }>
  | DomainEvent<'GroupDeleted', { groupId: string }>;

export type GroupCommand =
  | Command<'CreateGroup', { groupId: string; name: string }>
  /** `members`: how many users are in it now (the caller counts); a group with members stays. */
  | Command<'DeleteGroup', { members: number }>;

export type GroupState = { readonly status: 'none' } | { readonly status: 'active' | 'deleted'; readonly groupId: string; readonly name: string };

export const groupStream = (groupId: string) => `group-${groupId}`;
export const GROUP_NAME = /^[\p{L}\p{N}][\p{L}\p{N} ._-]{0,63}$/u;

export const groupDecider: Decider<GroupCommand, GroupState, GroupEvent> = {
  initialState: () => ({ status: 'none' }),
  decide(command, state) {
    switch (command.type) {
      case 'CreateGroup':
        if (state.status !== 'none') throw new ConflictError('GROUP_EXISTS', 'This group already exists.');
        return [{ type: 'GroupCreated', data: command.data }];
      case 'DeleteGroup':
        if (state.status !== 'active') throw new NotFoundError('Group');
        if (command.data.members > 0) {
          throw new ConflictError('GROUP_IN_USE', `The group has ${command.data.members} member${command.data.members === 1 ? '' : 's'}; move them to another group or none first.`);
        }
        return [{ type: 'GroupDeleted', data: { groupId: state.groupId } }];
      default:
        return assertNever(command);
    }
  },
  evolve(state, event) {
    switch (event.type) {
      case 'GroupCreated':
        return { status: 'active', groupId: event.data.groupId, name: event.data.name };
      case 'GroupDeleted':
        return state.status === 'none' ? state : { ...state, status: 'deleted' };
      default:
        return assertNever(event);
    }
  },
};
