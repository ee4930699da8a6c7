import { io, type Socket } from 'socket.io-client';

/** A socket.io client of its own (no shared connection, no reconnects) to `namespace`, signed in with `token`. */
export function newSocket(url: string, namespace: string, token: string): Socket {
  return io(`${url}${namespace}`, { auth: { token }, transports: ['websocket'], reconnection: false, forceNew: true });
}

/** Resolves once the socket is connected; rejects with the server's refusal. */
export function connected(socket: Socket): Promise<Socket> {
  return new Promise((resolve, reject) => {
    if (socket.connected) return resolve(socket);
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}
