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
    let passing: Promise<void> = Promise.resolve();
    /** Stops under way: a pass fires every due stop at once and does not wait for the engines. */
    const stopping = new Map<string, Promise<void>>();
    const tick = async () => {
      const now = new Date(ctx.clock()).toISOString();
      for (const due of await ctx.instances.dueStops(now)) {
        if (stopped) return;
        if (stopping.has(due.id)) continue;
        if (stopping.size >= MAX_STOPS_AT_ONCE) break;
        try {
          if (!(await ctx.instances.fireScheduledStop(due.id, due.at, { now: new Date(ctx.clock()).toISOString(), correlationId: 'scheduler' }))) continue;
        } catch (err) {
          log.warn({ err, instanceId: due.id }, 'scheduled stop could not be recorded; the next tick tries again');
          continue;
        }
        log.info({ instanceId: due.id, at: due.at, lateMs: ctx.clock() - Date.parse(due.at) }, 'scheduled stop fired');
        // The stop itself as any stop: one at a time per instance, an unreachable node runs it when back.
        const job = ctx.instances.runPending(due.id, { correlationId: 'scheduler' })
          .catch((err: unknown) => log.warn({ err, instanceId: due.id }, 'scheduled stop requested; the engine did not do it yet'))
          .finally(() => stopping.delete(due.id));
        stopping.set(due.id, job);
      }
    };
    const timer = setInterval(() => {
      // One pass at a time: a slow read must not pile passes up.
      passing = passing.then(() => (stopped ? undefined : tick())).catch((err: unknown) => log.error({ err }, 'scheduler pass failed'));
    }, ctx.config.schedulerTickMs);
    return {
      async stop() {
        stopped = true;
        clearInterval(timer);
        await passing;
        await Promise.allSettled([...stopping.values()]);
      },
    };
  },
};

/** Engine stops the scheduler has under way at most: 500 instances due at 18:00 do not all hit their nodes at once. */
const MAX_STOPS_AT_ONCE = 32;
