import { instanceDecider, instanceStream } from '../../domain/instance/instance.decider.ts';
import { BALANCES, type BalanceView } from '../../projections/balances.projection.ts';
import { INSTANCES, type InstanceView } from '../../projections/instances.projection.ts';
import type { Plugin } from '../plugin-host.ts';
import { TimedStops } from './timed-stops.ts';

/**
 * 欠费停机 (TIANQI_PREPAID=1): every tick (TIANQI_BILLING_TICK_MS, 30 s) each opened account is
 * checked against the meter by the platform's clock. Falling below the low-balance line and being
 * used up are events on the account's stream (decided once, until a credit: webhooks and bots tell
 * the owner); while it is used up, every running instance of the owner gets the instance's own
 * arrears stop (`InstanceArrearsStopFired`, on its history), run as any stop is. A restart or a
 * replica taking the lease over goes on from the streams.
 */
export const arrearsPlugin: Plugin = {
  name: 'arrears',
  singleton: true,
  async start(ctx) {
    if (!ctx.config.prepaid.enabled) return { stop: async () => undefined };
    const log = ctx.logger.child({ plugin: 'arrears' });
    const context = () => ({ now: new Date(ctx.clock()).toISOString(), correlationId: 'arrears' });
    const stops = new TimedStops(ctx, log, 'arrears', ctx.config.prepaid.tickMs, async () => {
      for (const account of await ctx.readStore.collection<BalanceView>(BALANCES).find({})) {
        if (stops.ended) return;
        if (account.openedAt === null) continue;
        try {
          const { state, balance } = await ctx.balances.check(account.id, context());
          if (!state.exhausted) continue;
          for (const instance of await ctx.readStore.collection<InstanceView>(INSTANCES).find({ ownerId: account.id, status: 'running' })) {
            if (instance.pending || !stops.canStop(instance.id)) continue;
            const { events } = await ctx.bus.execute(instanceDecider, instanceStream(instance.id), { type: 'FireArrearsStop', data: { balance } }, context());
            if (!events.some((e) => e.type === 'InstanceOperationRequested')) continue;
            log.info({ instanceId: instance.id, userId: account.id, balance }, 'balance used up: instance stopped');
            stops.run(instance.id);
          }
        } catch (err) {
          log.warn({ err, userId: account.id }, 'balance check failed; the next tick tries again');
        }
      }
    });
    return { stop: () => stops.stop() };
  },
};
