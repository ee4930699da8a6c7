import { describe, expect, it } from 'vitest';
import { accessEnding } from './access.ts';

const event = (type: string, data: unknown = {}) => ({ type, data });

describe('accessEnding: which events end live ways into an instance', () => {
  it('ends the user\'s sessions when the account is disabled, deleted or its password changes', () => {
    expect(accessEnding(event('UserDisabled'))?.code).toBe('ACCOUNT_DISABLED');
    expect(accessEnding(event('UserDeleted'))?.code).toBe('ACCOUNT_DELETED');
    expect(accessEnding(event('UserPasswordChanged'))?.code).toBe('PASSWORD_CHANGED');
  });

  it('has a sign-out checked again, way by way: only what its sign-in opened ends, and SSH is no sign-in', () => {
    expect(accessEnding(event('UserSessionEnded', { sessionId: 's1' }))).toMatchObject({ code: 'SIGNED_OUT', recheck: true });
    expect(accessEnding(event('UserSignedOutEverywhere', { at: 'x' }))).toMatchObject({ code: 'SIGNED_OUT', recheck: true });
  });

  it('narrows an admin made a user to their own instances, and leaves a promotion alone', () => {
    expect(accessEnding(event('UserRoleChanged', { role: 'user' }))).toMatchObject({ code: 'ROLE_CHANGED', foreignOnly: true });
    expect(accessEnding(event('UserRoleChanged', { role: 'admin' }))).toBeNull();
  });

  it('ends the instance\'s sessions when it stops, fails, loses its container or is being deleted', () => {
    expect(accessEnding(event('InstanceStateObserved', { status: 'exited' }))?.code).toBe('INSTANCE_STOPPED');
    expect(accessEnding(event('InstanceProvisioningFailed'))?.code).toBe('INSTANCE_FAILED');
    expect(accessEnding(event('InstanceContainerVanished'))?.code).toBe('INSTANCE_FAILED');
    expect(accessEnding(event('InstanceOperationRequested', { operation: 'delete' }))?.code).toBe('INSTANCE_DELETED');
    expect(accessEnding(event('InstanceDeleted'))?.code).toBe('INSTANCE_DELETED');
  });

  it('lets everything else go on', () => {
    for (const e of [
      event('InstanceStateObserved', { status: 'running' }),
      event('InstanceOperationRequested', { operation: 'stop' }),
      event('TerminalSessionOpened'),
      event('UserDisplayNameChanged'),
      event('SshKeyAdded'),
    ]) expect(accessEnding(e)).toBeNull();
  });
});
