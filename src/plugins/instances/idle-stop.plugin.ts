import { instanceDecider, instanceStream } from '../../domain/instance/instance.decider.ts';
import { idleStep, type IdlePolicy } from '../../domain/instance/idle.ts';
import { SPECS, type SpecView } from '../../projections/catalog.projection.ts';
import { INSTANCES, type InstanceView } from '../../projections/instances.projection.ts';
import type { Plugin } from '../plugin-host.ts';
import { METRICS, type InstanceMetrics } from './reconciler.plugin.ts';
import { TimedStops } from './timed-stops.ts';

/**
 * 空闲自动关机: every tick (TIANQI_IDLE_TICK_MS, 30 s) each running instance whose spec has an
 * idle policy is looked at by the platform's clock: its open sessions, its last use (sessions,
 * service pages, start) and its newest usage sample (the reconciler's CPU and GPU utilisation).
 * What it finds is an event on the instance's stream (idle since, warned, in use again), and the
 * stop is the instance's own command that passes only for the idle period it was decided on, so
 * a restart or a replica taking the lease over goes on from the stream, and a use meanwhile wins.
 */
export const idleStopPlugin: Plugin = {
  name: 'idle-stop',
  singleton: true,
  async start(ctx) {
    const log = ctx.logger.child({ plugin: 'idle-stop' });
    const context = () => ({ now: new Date(ctx.clock()).toISOString(), correlationId: 'idle-stop' });
    const command = (instanceId: string, type: string, data: object) =>
      ctx.bus.execute(instanceDecider, instanceStream(instanceId), { type, data } as never, context());

    const look = async (instance: InstanceView, policy: IdlePolicy | null) => {
      const sample = await ctx.readStore.collection<InstanceMetrics>(METRICS).get(instance.id);
      const now = new Date(ctx.clock()).toISOString();
      const step = idleStep(policy, {
        openSessions: instance.openSessions ?? 0,
        lastActivityAt: instance.lastActivityAt ?? instance.createdAt,
        sample: sample ? { at: sample.at, cpuPercent: sample.cpuPercent, gpuPercents: sample.gpus.map((g) => g.utilizationPercent) } : null,
        hasGpus: instance.gpuCards.length > 0,
        idleSince: instance.idle?.since ?? null,
        warned: Boolean(instance.idle?.stopAt),
        optedOut: instance.idleOptOut ?? false,
      }, now);
      switch (step.kind) {
        case 'none':
          return;
        case 'idle':
          await command(instance.id, 'RecordIdle', { since: step.since });
          return;
        case 'busy':
          await command(instance.id, 'RecordBusy', {});
          return;
        case 'warn':
          await command(instance.id, 'WarnIdle', { stopAt: step.stopAt });
          log.info({ instanceId: instance.id, stopAt: step.stopAt }, 'idle instance warned');
          return;
        case 'stop': {
          if (!stops.canStop(instance.id)) return;
          const { events } = await command(instance.id, 'FireIdleStop', { since: instance.idle!.since, minutes: policy!.minutes });
          if (!events.some((e) => e.type === 'InstanceOperationRequested')) return;
          log.info({ instanceId: instance.id, since: instance.idle!.since }, 'idle instance stopped');
          stops.run(instance.id);
        }
      }
    };

    const stops = new TimedStops(ctx, log, 'idle-stop', ctx.config.idleTickMs, async () => {
      const specs = new Map((await ctx.readStore.collection<SpecView>(SPECS).find({})).map((spec) => [spec.id, spec]));
      for (const instance of await ctx.readStore.collection<InstanceView>(INSTANCES).find({ status: 'running' })) {
        if (stops.ended) return;
        const policy = specs.get(instance.specId)?.idleStop ?? null;
        if (!policy && !instance.idle) continue;
        await look(instance, policy).catch((err: unknown) => log.warn({ err, instanceId: instance.id }, 'idle check failed; the next tick tries again'));
      }
    });
    return { stop: () => stops.stop() };
  },
};
