import type { Plugin } from '../plugin-host.ts';

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
    let stopped = false;
    let running: Promise<void> = Promise.resolve();
    const tick = async () => {
      const now = new Date(ctx.clock()).toISOString();
      for (const due of await ctx.instances.dueStops(now)) {
        if (stopped) return;
        await ctx.instances.fireScheduledStop(due.id, due.at, { now: new Date(ctx.clock()).toISOString() }).then(
          () => log.info({ instanceId: due.id, at: due.at, lateMs: ctx.clock() - Date.parse(due.at) }, 'scheduled stop fired'),
          (err: unknown) => log.warn({ err, instanceId: due.id }, 'scheduled stop failed; the instance keeps it and the next tick tries again'),
        );
      }
    };
    const timer = setInterval(() => {
      // One pass at a time: a slow engine must not pile passes up.
      running = running.then(() => (stopped ? undefined : tick())).catch((err: unknown) => log.error({ err }, 'scheduler pass failed'));
    }, ctx.config.schedulerTickMs);
    return {
      async stop() {
        stopped = true;
        clearInterval(timer);
        await running;
      },
    };
  },
};
