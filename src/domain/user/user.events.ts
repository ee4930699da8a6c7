import type { DomainEvent } from '../shared/decider.ts';

export type Role = 'user' | 'admin';

export interface SshKey {
  readonly keyId: string;
  readonly name: string;
  readonly publicKey: string;
  readonly keyType: string;
  /** `SHA256:<base64>`, as `ssh-keygen -l` prints it. */
  readonly fingerprint: string;
  readonly addedAt: string;
}

export type UserEvent =
  | DomainEvent<'UserRegistered', {
      userId: string;
      username: string;
      role: Role;
      displayName: string;
      passwordHash: string;
      registeredAt: string;
    }>
  | DomainEvent<'UserPasswordChanged', { passwordHash: string; changedAt: string }>
  | DomainEvent<'UserRoleChanged', { role: Role }>
  | DomainEvent<'UserDisplayNameChanged', { displayName: string }>
  | DomainEvent<'UserDisabled', { disabledAt: string }>
  | DomainEvent<'UserEnabled', { enabledAt: string }>
  | DomainEvent<'UserDeleted', { deletedAt: string }>
  | DomainEvent<'SshKeyAdded', SshKey>
  | DomainEvent<'SshKeyRemoved', { keyId: string }>
  /** 退出登录: the sign-in (bearer token) `sessionId` ends; kept until the token would have expired anyway. */
  | DomainEvent<'UserSessionEnded', { sessionId: string; expiresAt: string }>
  /** 退出所有设备: every sign-in issued until `at` ends (tokens, and the service links opened with them). */
  | DomainEvent<'UserSignedOutEverywhere', { at: string }>;

export type UserEventType = UserEvent['type'];

export const userStream = (userId: string) => `user-${userId}`;
