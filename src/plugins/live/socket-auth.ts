import { filter, type Observable, type Subscription } from 'rxjs';
import type { Namespace, Socket } from 'socket.io';
import type { Actor } from '../../commands/user/accounts.ts';
import { accessEnding, type AccessEndingCode } from '../../domain/instance/access.ts';
import type { RecordedEvent } from '../../ports/event-store.port.ts';

export type Authenticate = (token: string) => Promise<Actor | null>;

/** Every socket.io namespace checks the handshake token before anything else. */
export function requireToken(namespace: Namespace, authenticate: Authenticate): void {
  namespace.use((socket, next) => {
    const token = (socket.handshake.auth as { token?: unknown }).token;
    if (typeof token !== 'string' || token.length === 0) {
      next(new Error('UNAUTHORIZED: sign in first'));
      return;
    }
    authenticate(token).then(
      (actor) => {
        if (!actor) next(new Error('UNAUTHORIZED: the token is invalid or expired, or the account is disabled'));
        else {
          (socket.data as { actor: Actor; token: string }).actor = actor;
          (socket.data as { actor: Actor; token: string }).token = token;
          next();
        }
      },
      () => next(new Error('UNAUTHORIZED')),
    );
  });
}

/** The socket's user as of the last check (a demoted admin's role changes under an open socket). */
export function actorOf(socket: Socket): Actor {
  return (socket.data as { actor: Actor }).actor;
}

interface GuardedData {
  actor: Actor;
  token: string;
  /** What a namespace drops when its user is an admin no more: other users' streams. */
  narrow?: () => void;
}

/**
 * Checks the socket's token again before a request that opens something (`open`, `follow`,
 * `watch-stats`): a socket that outlived its user's disable, deletion, password change or its
 * token's expiry gets `error UNAUTHORIZED` and is disconnected, and nothing opens. Updates the
 * socket's actor (its role) on the way.
 */
export async function recheck(socket: Socket, authenticate: Authenticate, code: 'UNAUTHORIZED' | 'SIGNED_OUT' = 'UNAUTHORIZED'): Promise<Actor | null> {
  const data = socket.data as GuardedData;
  const actor = await authenticate(data.token).catch(() => null);
  if (!actor) {
    emitError(socket, code, code === 'SIGNED_OUT' ? 'The session has ended: you signed out; sign in again.' : 'The session has ended: sign in again.');
    socket.disconnect();
    return null;
  }
  data.actor = actor;
  return actor;
}

/** A namespace's request to be told when an admin is one no more: `narrow` drops the socket's foreign streams. */
export function onNarrow(socket: Socket, narrow: () => void): void {
  (socket.data as GuardedData).narrow = narrow;
}

/** What a socket client reads when the domain's rule ends its session, as a phrase. */
export const ENDING_PHRASES: Readonly<Record<AccessEndingCode, string>> = {
  ACCOUNT_DISABLED: 'the account was disabled',
  ACCOUNT_DELETED: 'the account was deleted',
  PASSWORD_CHANGED: 'the password was changed; sign in again',
  ROLE_CHANGED: 'you are no longer an admin',
  SIGNED_OUT: 'you signed out; sign in again',
  INSTANCE_STOPPED: 'the instance stopped',
  INSTANCE_FAILED: 'the instance failed',
  INSTANCE_DELETED: 'the instance was deleted',
};

/** When the token says it expires, in ms since the epoch (it was verified at the handshake). */
export function tokenExpiry(token: string): number | null {
  try {
    const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof claims.exp === 'number' ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * Keeps a namespace's open sockets to what their user may do now, as the domain's rule says
 * (accessEnding): a disable, deletion or password change disconnects the user's sockets with
 * `error {code}` at once; an admin made a user stays connected with the role of a user, and the
 * namespace's `narrow` drops what belonged to others; a token that expires disconnects at its
 * expiry. With `endOnEvents: false` the namespace ends its sessions itself (the web terminal)
 * and only the expiry is kept here.
 */
export function guardSockets(
  namespace: Namespace,
  events$: Observable<RecordedEvent>,
  options: { endOnEvents: boolean; authenticate?: Authenticate } = { endOnEvents: true },
): Subscription {
  namespace.on('connection', (socket) => {
    const expiresAt = tokenExpiry((socket.data as GuardedData).token);
    if (expiresAt === null) return;
    // setTimeout holds at most 2^31-1 ms (24.8 days); tokens last 12 hours.
    const timer = setTimeout(() => {
      emitError(socket, 'TOKEN_EXPIRED', 'The sign-in has expired: sign in again.');
      socket.disconnect();
    }, Math.min(Math.max(0, expiresAt - Date.now()), 2 ** 31 - 1));
    timer.unref();
    socket.once('disconnect', () => clearTimeout(timer));
  });
  return events$.pipe(filter((event) => event.stream.startsWith('user-'))).subscribe((event) => {
    const ending = accessEnding(event);
    if (!ending) return;
    const userId = event.stream.slice('user-'.length);
    for (const socket of namespace.sockets.values()) {
      const data = socket.data as GuardedData;
      if (data.actor?.id !== userId) continue;
      if (ending.recheck) {
        // 退出登录: only the sockets whose sign-in ended (their token no longer authenticates).
        if (options.endOnEvents && options.authenticate) void recheck(socket, options.authenticate, 'SIGNED_OUT');
      } else if (ending.foreignOnly) {
        data.actor = { ...data.actor, role: 'user' };
        data.narrow?.();
      } else if (options.endOnEvents) {
        emitError(socket, ending.code, `The session has ended: ${ENDING_PHRASES[ending.code]}.`);
        socket.disconnect();
      }
    }
  });
}

/** Sends an `error` event in API.md's shape. */
export function emitError(socket: Socket, code: string, message: string): void {
  socket.emit('error', { code, message });
}
