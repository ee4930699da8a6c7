import type { Role, UserEvent } from '../domain/user/user.events.ts';
import type { RecordedEvent } from '../ports/event-store.port.ts';
import { documentProjection } from './projection-runner.ts';

export interface SshKeyView {
  readonly id: string;
  readonly name: string;
  readonly publicKey: string;
  readonly keyType: string;
  readonly fingerprint: string;
  readonly addedAt: string;
}

/** An account as the API shows it. Password hashes stay in the event log, never in a read model. */
export interface UserView {
  readonly id: string;
  readonly username: string;
  readonly usernameLower: string;
  readonly role: Role;
  readonly disabled: boolean;
  readonly displayName: string;
  readonly createdAt: string;
  readonly updatedAt: string;
  /** Tokens issued before this time are no longer accepted. */
  readonly passwordChangedAt: string;
  /** Sign-ins ended one by one (退出登录) and not yet expired. */
  readonly endedSessions?: readonly { readonly sessionId: string; readonly expiresAt: string }[];
  /** 退出所有设备: sign-ins issued until then no longer count. */
  readonly signedOutEverywhereAt?: string | null;
  readonly sshKeys: readonly SshKeyView[];
}

export const USERS = 'users';

export const usersProjection = documentProjection<UserView>({
  name: 'users',
  collection: USERS,
  indexes: [{ fields: { usernameLower: 1 }, unique: true }],
  idOf: (event) => (event.stream.startsWith('user-') ? event.stream.slice('user-'.length) : undefined),
  evolve(doc, recorded) {
    const event = recorded as RecordedEvent & UserEvent;
    const updatedAt = recorded.metadata.time;
    if (event.type === 'UserRegistered') {
      const { userId, username, role, displayName, registeredAt } = event.data;
      return {
        id: userId,
        username,
        usernameLower: username.toLowerCase(),
        role,
        disabled: false,
        displayName,
        createdAt: registeredAt,
        updatedAt,
        passwordChangedAt: registeredAt,
        sshKeys: [],
      };
    }
    if (!doc) return undefined;
    switch (event.type) {
      case 'UserPasswordChanged':
        return { ...doc, passwordChangedAt: event.data.changedAt, updatedAt };
      case 'UserRoleChanged':
        return { ...doc, role: event.data.role, updatedAt };
      case 'UserDisplayNameChanged':
        return { ...doc, displayName: event.data.displayName, updatedAt };
      case 'UserDisabled':
        return { ...doc, disabled: true, updatedAt };
      case 'UserEnabled':
        return { ...doc, disabled: false, updatedAt };
      case 'UserDeleted':
        return null;
      case 'SshKeyAdded': {
        const { keyId, name, publicKey, keyType, fingerprint, addedAt } = event.data;
        return { ...doc, sshKeys: [...doc.sshKeys, { id: keyId, name, publicKey, keyType, fingerprint, addedAt }], updatedAt };
      }
      case 'SshKeyRemoved':
        return { ...doc, sshKeys: doc.sshKeys.filter((k) => k.id !== event.data.keyId), updatedAt };
      case 'UserSessionEnded': {
        // Only those that could still be used: a token past its expiry is refused anyway.
        const ended = (doc.endedSessions ?? []).filter((e) => e.expiresAt > updatedAt);
        return { ...doc, endedSessions: [...ended, { sessionId: event.data.sessionId, expiresAt: event.data.expiresAt }] };
      }
      case 'UserSignedOutEverywhere':
        return { ...doc, signedOutEverywhereAt: event.data.at, endedSessions: [] };
      default:
        return undefined;
    }
  },
});
