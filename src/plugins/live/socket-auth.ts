import type { Namespace, Socket } from 'socket.io';
import type { Actor } from '../../commands/user/accounts.ts';

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

export function actorOf(socket: Socket): Actor {
  return (socket.data as { actor: Actor }).actor;
}

/** Sends an `error` event in API.md's shape. */
export function emitError(socket: Socket, code: string, message: string): void {
  socket.emit('error', { code, message });
}
