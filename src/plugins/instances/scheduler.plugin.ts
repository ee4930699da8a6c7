import type { Plugin } from '../plugin-host.ts';
import { TimedStops } from './timed-stops.ts';

/**
 * 定时关机: every tick (TIANQI_SCHEDULER_TICK_MS, 1 s) the instances whose scheduled stop is due
 * by the platform's clock are stopped, soonest first. The schedule is on each instance's stream
 * and in its read model, so a restart finds it and a replica taking the lease over goes on with
 * it; a stop due while no replica ran fires at the first tick after. Firing is a command on the
 * instance's stream that only the schedule of that time passes, so two replicas in a lease
 * hand-over cannot stop an instance twice, and a schedule replaced or cancelled meanwhile does
 * not fire.
 */
export const schedulerPlugin: Plugin = {
  name: 'scheduler',
  singleton: true,
  async start(ctx) {
    const log = ctx.logger.child({ plugin: 'scheduler' });
    const stops = new TimedStops(ctx, log, 'scheduler', ctx.config.schedulerTickMs, async () => {
      const now = new Date(ctx.clock()).toISOString();
      for (const due of await ctx.instances.dueStops(now)) {
        if (stops.ended) return;
        if (!stops.canStop(due.id)) continue;
        try {
          if (!(await ctx.instances.fireScheduledStop(due.id, due.at, { now: new Date(ctx.clock()).toISOString(), correlationId: 'scheduler' }))) continue;
        } catch (err) {
          log.warn({ err, instanceId: due.id }, 'scheduled stop could not be recorded; the next tick tries again');
          continue;
        }
        log.info({ instanceId: due.id, at: due.at, lateMs: ctx.clock() - Date.parse(due.at) }, 'scheduled stop fired');
        stops.run(due.id);
      }
    });
    return { stop: () => stops.stop() };
  },
};
