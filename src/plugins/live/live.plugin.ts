import type { Subscription} from 'rxjs';
import { concatMap, filter, throttleTime } from 'rxjs';
import { toNodeDto } from '../../commands/catalog/node.routes.ts';
import { gpuUsage, toInstanceDto } from '../../commands/instance/instance.routes.ts';
import { instanceDecider, instanceStream } from '../../domain/instance/instance.decider.ts';
import { NODES, type NodeView } from '../../projections/catalog.projection.ts';
import { INSTANCES, type InstanceView } from '../../projections/instances.projection.ts';
import type { Plugin } from '../plugin-host.ts';
import { actorOf, emitError, guardSockets, onNarrow, recheck, requireToken } from './socket-auth.ts';
import { StatsHub } from './stats-hub.ts';

export const STATS_PUSH_MS = 5_000;

/**
 * socket.io `/live`: pushes `instance` (the read model, whenever it changes) to its owner and to
 * admins, `node` to admins, and `stats` every 5 s to whoever asked with `watch-stats`.
 */
export const livePlugin: Plugin = {
  name: 'live',
  async start(ctx) {
    const live = ctx.io.of('/live');
    requireToken(live, ctx.authenticate);
    const guard = guardSockets(live, ctx.events$, { endOnEvents: true, authenticate: ctx.authenticate });
    const hub = new StatsHub(ctx.runtime);

    live.on('connection', (socket) => {
      const actor = actorOf(socket);
      void socket.join(actor.role === 'admin' ? ['admins', `user:${actor.id}`] : [`user:${actor.id}`]);
      const watching = new Map<string, { sub: Subscription; ownerId: string }>();
      // An admin no more: out of the admins' room, and no stats of other users' instances.
      onNarrow(socket, () => {
        void socket.leave('admins');
        for (const [instanceId, watch] of watching) {
          if (watch.ownerId === actor.id) continue;
          watch.sub.unsubscribe();
          watching.delete(instanceId);
        }
      });

      socket.on('watch-stats', async (payload: unknown) => {
        const instanceId = (payload as { instanceId?: unknown } | null)?.instanceId;
        if (typeof instanceId !== 'string' || watching.has(instanceId)) return;
        const current = await recheck(socket, ctx.authenticate);
        if (!current) return;
        try {
          const instance = await ctx.instances.visible(current, instanceId);
          if (!instance.containerId || instance.status !== 'running') {
            emitError(socket, 'NOT_RUNNING', 'Stats are there while the instance runs.');
            return;
          }
          const target = await ctx.nodes.target(instance.nodeId);
          // Gone while this was looked up, or asked twice meanwhile: nothing is opened.
          if (socket.disconnected || watching.has(instanceId)) return;
          // The first sample at once, then one every 5 s; GPU memory (an exec) only at that rate.
          const sub = hub.watch(target, instance.containerId).pipe(
            throttleTime(STATS_PUSH_MS, undefined, { leading: true, trailing: true }),
            concatMap(async (sample) => ({ instanceId, ...sample, gpus: await gpuUsage(ctx.runtime, target, instance) })),
          ).subscribe({
            next: (stats) => socket.emit('stats', stats),
            // A stopped container ends its stats: a later `watch-stats` (after a start) opens a new watch.
            error: (err: unknown) => {
              watching.delete(instanceId);
              emitError(socket, 'STATS_FAILED', err instanceof Error ? err.message : 'stats stream ended');
            },
            complete: () => watching.delete(instanceId),
          });
          watching.set(instanceId, { sub, ownerId: instance.ownerId });
        } catch {
          emitError(socket, 'NOT_FOUND', 'Instance not found.');
        }
      });
      socket.on('unwatch-stats', (payload: unknown) => {
        const instanceId = (payload as { instanceId?: unknown } | null)?.instanceId;
        if (typeof instanceId !== 'string') return;
        watching.get(instanceId)?.sub.unsubscribe();
        watching.delete(instanceId);
      });
      socket.on('disconnect', () => {
        for (const watch of watching.values()) watch.sub.unsubscribe();
        watching.clear();
      });
    });

    const pushes = ctx.events$
      .pipe(
        filter((e) => e.stream.startsWith('instance-') || e.stream.startsWith('node-')),
        concatMap(async (e) => {
          await ctx.waitForProjections(e.position);
          if (e.stream.startsWith('instance-')) {
            const id = e.stream.slice('instance-'.length);
            const view = await ctx.readStore.collection<InstanceView>(INSTANCES).get(id);
            if (view) live.to(['admins', `user:${view.ownerId}`]).emit('instance', toInstanceDto(view));
            else if (e.type === 'InstanceDeleted') {
              const { state } = await ctx.bus.load(instanceDecider, instanceStream(id));
              const owner = 'ownerId' in state ? [`user:${state.ownerId}`] : [];
              live.to(['admins', ...owner]).emit('instance', { id, deleted: true });
            }
          } else {
            const id = e.stream.slice('node-'.length);
            const view = await ctx.readStore.collection<NodeView>(NODES).get(id);
            live.to('admins').emit('node', view ? toNodeDto(view, (arch) => ctx.helperBuilds.forArch(arch) !== null) : { id, deleted: true });
          }
        }),
      )
      .subscribe({ error: (err: unknown) => ctx.logger.error({ err }, 'live pushes stopped') });

    return {
      async stop() {
        guard.unsubscribe();
        pushes.unsubscribe();
        live.disconnectSockets(true);
      },
    };
  },
};
