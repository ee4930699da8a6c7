import { BehaviorSubject, type Subscription } from 'rxjs';
import type { Socket } from 'socket.io';
import type { Plugin } from '../plugin-host.ts';
import { actorOf, emitError, guardSockets, onNarrow, recheck, requireToken } from './socket-auth.ts';

/**
 * Lines a follow may have waiting in its socket (not yet written to the network) before it stops
 * reading the engine's log; with 64 KiB at most per line, memory per slow client stays bounded.
 */
export const MAX_UNSENT_LINES = 256;

/**
 * Packets engine.io holds for a socket until the network takes them: its write buffer, which
 * grows while the transport waits for the client (engine.io keeps the field out of its types).
 */
function unsentPackets(socket: Socket): number {
  return (socket.conn as unknown as { writeBuffer?: unknown[] }).writeBuffer?.length ?? 0;
}

/**
 * socket.io `/logs`: `follow {instanceId, tail}` streams demultiplexed `line` events until
 * `unfollow`, or `end` when the container stops.
 */
export const logsPlugin: Plugin = {
  name: 'logs',
  async start(ctx) {
    const logs = ctx.io.of('/logs');
    requireToken(logs, ctx.authenticate);
    const guard = guardSockets(logs, ctx.events$, { endOnEvents: true, authenticate: ctx.authenticate });
    logs.on('connection', (socket) => {
      const actor = actorOf(socket);
      const following = new Map<string, { sub: Subscription; ownerId: string }>();
      // An admin no more: other users' logs end.
      onNarrow(socket, () => {
        for (const [instanceId, follow] of following) {
          if (follow.ownerId === actor.id) continue;
          follow.sub.unsubscribe();
          following.delete(instanceId);
          socket.emit('end', { instanceId, reason: 'you are no longer an admin' });
        }
      });
      socket.on('follow', async (payload: unknown) => {
        const { instanceId, tail } = (payload ?? {}) as { instanceId?: unknown; tail?: unknown };
        if (typeof instanceId !== 'string' || following.has(instanceId)) return;
        const lines = typeof tail === 'number' && Number.isInteger(tail) && tail >= 0 && tail <= 10_000 ? tail : 200;
        const current = await recheck(socket, ctx.authenticate);
        if (!current) return;
        try {
          const instance = await ctx.instances.visible(current, instanceId);
          if (!instance.containerId) {
            emitError(socket, 'NO_CONTAINER', 'The instance has no container yet.');
            return;
          }
          const target = await ctx.nodes.target(instance.nodeId);
          // Gone while this was looked up, or asked twice meanwhile: nothing is opened.
          if (socket.disconnected || following.has(instanceId)) return;
          const paused$ = new BehaviorSubject(false);
          const sub = ctx.runtime.logs(target, instance.containerId, { tail: lines, follow: true, paused$ }).subscribe({
            next: (line) => {
              socket.emit('line', { instanceId, ...line });
              // A client that does not read: its socket's unsent packets pile up, and the engine is paused until they drain.
              if (!paused$.value && unsentPackets(socket) >= MAX_UNSENT_LINES) {
                paused$.next(true);
                socket.conn.once('drain', () => paused$.next(false));
              }
            },
            error: (err: unknown) => emitError(socket, 'LOGS_FAILED', err instanceof Error ? err.message : 'log stream ended'),
            // Docker ends a follow when the container stops; the client may follow again after a start.
            complete: () => {
              following.delete(instanceId);
              socket.emit('end', { instanceId, reason: 'the container stopped' });
            },
          });
          following.set(instanceId, { sub, ownerId: instance.ownerId });
        } catch {
          emitError(socket, 'NOT_FOUND', 'Instance not found.');
        }
      });
      socket.on('unfollow', (payload: unknown) => {
        const instanceId = (payload as { instanceId?: unknown } | null)?.instanceId;
        if (typeof instanceId !== 'string') return;
        following.get(instanceId)?.sub.unsubscribe();
        following.delete(instanceId);
      });
      socket.on('disconnect', () => {
        for (const follow of following.values()) follow.sub.unsubscribe();
      });
    });
    return {
      async stop() {
        guard.unsubscribe();
        logs.disconnectSockets(true);
      },
    };
  },
};
