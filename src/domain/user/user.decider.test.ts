import { describe, expect, it } from 'vitest';
import { ConflictError, ForbiddenError, NotFoundError } from '../shared/errors.ts';
import type { UserCommand, UserState } from './user.decider.ts';
import { userDecider } from './user.decider.ts';
import type { UserEvent } from './user.events.ts';
import { nameClaimDecider } from '../shared/name-claim.decider.ts';

const now = '2026-11-26T10:00:00.000Z';
const registered: UserEvent = {
  type: 'UserRegistered',
  data: { userId: 'u1', username: 'alice', role: 'admin', displayName: 'Alice', passwordHash: 'h1', registeredAt: now },
};
const given = (...events: UserEvent[]): UserState => events.reduce(userDecider.evolve, userDecider.initialState());
const cmd = <C extends UserCommand>(type: C['type'], data: C['data'], userId = 'admin'): UserCommand =>
  ({ type, data, metadata: { now, userId } }) as UserCommand;

describe('user decider', () => {
  it('registers a user once', () => {
    const command = cmd('RegisterUser', { userId: 'u1', username: 'alice', passwordHash: 'h1', role: 'admin', displayName: 'Alice' });
    expect(userDecider.decide(command, given())).toEqual([registered]);
    expect(() => userDecider.decide(command, given(registered))).toThrow(ConflictError);
  });

  it('records only the fields that change', () => {
    const events = userDecider.decide(cmd('UpdateUser', { role: 'admin', displayName: 'Alice Z', disabled: false }), given(registered));
    expect(events).toEqual([{ type: 'UserDisplayNameChanged', data: { displayName: 'Alice Z' } }]);
  });

  it('disables and enables', () => {
    const disabled = userDecider.decide(cmd('UpdateUser', { disabled: true }), given(registered));
    expect(disabled).toEqual([{ type: 'UserDisabled', data: { disabledAt: now } }]);
    const state = given(registered, ...disabled);
    expect(state.status).toBe('disabled');
    expect(userDecider.decide(cmd('UpdateUser', { disabled: false }), state)[0]!.type).toBe('UserEnabled');
  });

  it('refuses to let an admin demote, disable or delete their own account', () => {
    expect(() => userDecider.decide(cmd('UpdateUser', { role: 'user' }, 'u1'), given(registered))).toThrow(ForbiddenError);
    expect(() => userDecider.decide(cmd('UpdateUser', { disabled: true }, 'u1'), given(registered))).toThrow(ForbiddenError);
    expect(() => userDecider.decide(cmd('DeleteUser', {}, 'u1'), given(registered))).toThrow(ForbiddenError);
  });

  it('treats a deleted user as not found', () => {
    const state = given(registered, { type: 'UserDeleted', data: { deletedAt: now } });
    expect(() => userDecider.decide(cmd('ChangePassword', { passwordHash: 'h2' }), state)).toThrow(NotFoundError);
  });

  it('rejects a second key with the same fingerprint and removes keys by id', () => {
    const key = { keyId: 'k1', name: 'laptop', publicKey: 'ssh-ed25519 AAAA', keyType: 'ssh-ed25519', fingerprint: 'SHA256:x' };
    const added = userDecider.decide(cmd('AddSshKey', key), given(registered));
    const state = given(registered, ...added);
    expect(() => userDecider.decide(cmd('AddSshKey', { ...key, keyId: 'k2' }), state)).toThrow(ConflictError);
    expect(userDecider.decide(cmd('RemoveSshKey', { keyId: 'k1' }), state)).toEqual([
      { type: 'SshKeyRemoved', data: { keyId: 'k1' } },
    ]);
    expect(() => userDecider.decide(cmd('RemoveSshKey', { keyId: 'nope' }), state)).toThrow(NotFoundError);
  });
});

describe('name claims', () => {
  const taken = { code: 'USERNAME_TAKEN', message: 'taken', field: 'username' };
  const claim = (holderId: string, ghostHolder: string | null = null) =>
    ({ type: 'ClaimName', data: { holderId, ghostHolder, taken }, metadata: { now } }) as const;

  it('gives a free name to the first claimant and refuses a second, naming the field', () => {
    const events = nameClaimDecider.decide(claim('u1'), nameClaimDecider.initialState());
    const state = events.reduce(nameClaimDecider.evolve, nameClaimDecider.initialState());
    expect(state.holder).toBe('u1');
    expect(() => nameClaimDecider.decide(claim('u2'), state)).toThrow(ConflictError);
    try {
      nameClaimDecider.decide(claim('u2'), state);
    } catch (err) {
      expect((err as ConflictError).fields).toEqual({ username: 'is taken' });
    }
    expect(nameClaimDecider.decide(claim('u1'), state)).toEqual([]);
  });

  it('lets a name whose holder was never written be claimed again', () => {
    const state = { holder: 'ghost' };
    expect(nameClaimDecider.decide(claim('u2', 'ghost'), state)).toEqual([{ type: 'NameClaimed', data: { holderId: 'u2' } }]);
    // a concurrent claimant that won in between is not a ghost
    expect(() => nameClaimDecider.decide(claim('u3', 'ghost'), { holder: 'u2' })).toThrow(ConflictError);
  });
});
