import { filter } from 'rxjs';
import { NodeGuard } from '../../commands/instance/node-guard.ts';
import { Provisioning } from '../../commands/instance/provisioning.ts';
import { INSTANCES, type InstanceView } from '../../projections/instances.projection.ts';
import type { Plugin } from '../plugin-host.ts';

/**
 * Reacts to `InstancePlaced` by creating and starting the container. At start it resumes the
 * instances still `creating` (a crash mid-provisioning), which is safe: provisioning is idempotent.
 * One replica runs it (a singleton); after a lost lease, provisioning already under way finishes,
 * which is safe too: a create of the same container by the replica taking over finds this one.
 */
export const provisionerPlugin: Plugin = {
  name: 'provisioner',
  singleton: true,
  async start(ctx) {
    const provisioning = new Provisioning(ctx.bus, ctx.instances, ctx.runtime, (id) => ctx.nodes.target(id), ctx.logger, ctx.config.containerLimits,
      new NodeGuard(ctx.runtime, ctx.helperBuilds, ctx.config.nodeGuard));
    const running = new Set<Promise<void>>();
    const run = (instanceId: string) => {
      const job = provisioning.provision(instanceId).finally(() => running.delete(job));
      running.add(job);
    };
    const subscription = ctx.events$
      .pipe(filter((e) => e.type === 'InstancePlaced'))
      .subscribe((e) => run(e.stream.slice('instance-'.length)));
    for (const instance of await ctx.readStore.collection<InstanceView>(INSTANCES).find({ status: 'creating' })) run(instance.id);
    return {
      async stop() {
        subscription.unsubscribe();
        await Promise.allSettled([...running]);
      },
    };
  },
};
