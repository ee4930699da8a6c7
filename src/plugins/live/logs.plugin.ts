import type { Subscription } from 'rxjs';
import type { Plugin } from '../plugin-host.ts';
import { actorOf, emitError, requireToken } from './socket-auth.ts';

/**
 * socket.io `/logs`: `follow {instanceId, tail}` streams demultiplexed `line` events until
 * `unfollow`, or `end` when the container stops.
 */
export const logsPlugin: Plugin = {
  name: 'logs',
  async start(ctx) {
    const logs = ctx.io.of('/logs');
    requireToken(logs, ctx.authenticate);
    logs.on('connection', (socket) => {
      const actor = actorOf(socket);
      const following = new Map<string, Subscription>();
      socket.on('follow', async (payload: unknown) => {
        const { instanceId, tail } = (payload ?? {}) as { instanceId?: unknown; tail?: unknown };
        if (typeof instanceId !== 'string' || following.has(instanceId)) return;
        const lines = typeof tail === 'number' && Number.isInteger(tail) && tail >= 0 && tail <= 10_000 ? tail : 200;
        try {
          const instance = await ctx.instances.visible(actor, instanceId);
          if (!instance.containerId) {
            emitError(socket, 'NO_CONTAINER', 'The instance has no container yet.');
            return;
          }
          const target = await ctx.nodes.target(instance.nodeId);
          following.set(instanceId, ctx.runtime.logs(target, instance.containerId, { tail: lines, follow: true }).subscribe({
            next: (line) => socket.emit('line', { instanceId, ...line }),
            error: (err: unknown) => emitError(socket, 'LOGS_FAILED', err instanceof Error ? err.message : 'log stream ended'),
            // Docker ends a follow when the container stops; the client may follow again after a start.
            complete: () => {
              following.delete(instanceId);
              socket.emit('end', { instanceId, reason: 'the container stopped' });
            },
          }));
        } catch {
          emitError(socket, 'NOT_FOUND', 'Instance not found.');
        }
      });
      socket.on('unfollow', (payload: unknown) => {
        const instanceId = (payload as { instanceId?: unknown } | null)?.instanceId;
        if (typeof instanceId !== 'string') return;
        following.get(instanceId)?.unsubscribe();
        following.delete(instanceId);
      });
      socket.on('disconnect', () => {
        for (const sub of following.values()) sub.unsubscribe();
      });
    });
    return {
      async stop() {
        logs.disconnectSockets(true);
      },
    };
  },
};
