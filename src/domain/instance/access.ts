/**
 * Who may go on working in an instance: the one rule for every live way in (web terminal, SSH
 * shells and commands, SFTP, port forwards). Pure.
 */

/** What a way into an instance does: an audit record says which. */
export type AccessKind = 'shell' | 'command' | 'sftp' | 'forward';

export type AccessEndingCode =
  | 'ACCOUNT_DISABLED'
  | 'ACCOUNT_DELETED'
  | 'PASSWORD_CHANGED'
  | 'ROLE_CHANGED'
  | 'SIGNED_OUT'
  | 'INSTANCE_STOPPED'
  | 'INSTANCE_FAILED'
  | 'INSTANCE_DELETED';

export interface AccessEnding {
  readonly code: AccessEndingCode;
  /** For the audit record. */
  readonly reason: string;
  /** Ends only the sessions in instances the user does not own (an admin who is an admin no more). */
  readonly foreignOnly?: boolean;
  /**
   * Ends only what was opened with a sign-in that no longer counts (退出登录 ends one, 退出所有设备
   * all until then): each bearer-token way in is checked again; SSH keys and passwords are no sign-in.
   */
  readonly recheck?: boolean;
}

/**
 * The event after which the user's sessions (on a `user-` stream) or the instance's sessions (on
 * an `instance-` stream) must end, or null when they may go on.
 */
export function accessEnding(event: { readonly type: string; readonly data: unknown }): AccessEnding | null {
  const data = (event.data ?? {}) as { status?: string; operation?: string; role?: string };
  switch (event.type) {
    case 'UserDisabled':
      return { code: 'ACCOUNT_DISABLED', reason: 'the user was disabled' };
    case 'UserDeleted':
      return { code: 'ACCOUNT_DELETED', reason: 'the user was deleted' };
    case 'UserPasswordChanged':
      return { code: 'PASSWORD_CHANGED', reason: 'the password was changed' };
    case 'UserSessionEnded':
      return { code: 'SIGNED_OUT', reason: 'the user signed out', recheck: true };
    case 'UserSignedOutEverywhere':
      return { code: 'SIGNED_OUT', reason: 'the user signed out everywhere', recheck: true };
    case 'UserRoleChanged':
      return data.role === 'admin' ? null : { code: 'ROLE_CHANGED', reason: 'the user is no longer an admin', foreignOnly: true };
    case 'InstanceStateObserved':
      return data.status === 'exited' ? { code: 'INSTANCE_STOPPED', reason: 'the instance stopped' } : null;
    case 'InstanceProvisioningFailed':
      return { code: 'INSTANCE_FAILED', reason: 'the instance failed' };
    case 'InstanceContainerVanished':
      return { code: 'INSTANCE_FAILED', reason: 'the container is gone' };
    case 'InstanceOperationRequested':
      return data.operation === 'delete' ? { code: 'INSTANCE_DELETED', reason: 'the instance is being deleted' } : null;
    case 'InstanceDeleted':
      return { code: 'INSTANCE_DELETED', reason: 'the instance was deleted' };
    default:
      return null;
  }
}
