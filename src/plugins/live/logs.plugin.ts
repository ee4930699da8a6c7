import type { Subscription } from 'rxjs';
import type { Plugin } from '../plugin-host.ts';
import { actorOf, emitError, guardSockets, onNarrow, recheck, requireToken } from './socket-auth.ts';

/**
 * socket.io `/logs`: `follow {instanceId, tail}` streams demultiplexed `line` events until
 * `unfollow`, or `end` when the container stops.
 */
export const logsPlugin: Plugin = {
  name: 'logs',
  async start(ctx) {
    const logs = ctx.io.of('/logs');
    requireToken(logs, ctx.authenticate);
    const guard = guardSockets(logs, ctx.events$);
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
          const sub = ctx.runtime.logs(target, instance.containerId, { tail: lines, follow: true }).subscribe({
            next: (line) => socket.emit('line', { instanceId, ...line }),
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
