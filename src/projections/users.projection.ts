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
      default:
        return undefined;
    }
  },
});
