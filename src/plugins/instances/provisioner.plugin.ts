import { filter } from 'rxjs';
import { Provisioning } from '../../commands/instance/provisioning.ts';
import { INSTANCES, type InstanceView } from '../../projections/instances.projection.ts';
import type { Plugin } from '../plugin-host.ts';

/**
 * Reacts to `InstancePlaced` (and `InstanceProvisioningRetried`) by creating and starting the container. At start it resumes the
 * instances still `creating` (a crash mid-provisioning), which is safe: provisioning is idempotent.
 * One replica runs it (a singleton); after a lost lease, provisioning already under way finishes,
 * which is safe too: a create of the same container by the replica taking over finds this one.
 */
export const provisionerPlugin: Plugin = {
  name: 'provisioner',
  singleton: true,
  async start(ctx) {
    const guard = ctx.nodeGuard;
    const provisioning = new Provisioning(ctx.bus, ctx.instances, ctx.runtime, (id) => ctx.nodes.target(id), ctx.logger, ctx.config.containerLimits, guard);
    const running = new Set<Promise<void>>();
    const run = (instanceId: string) => {
      const job = provisioning.provision(instanceId).finally(() => running.delete(job));
      running.add(job);
    };
    const subscription = ctx.events$
      .pipe(filter((e) => e.type === 'InstancePlaced' || e.type === 'InstanceProvisioningRetried'))
      .subscribe((e) => run(e.stream.slice('instance-'.length)));
    // A changed egress allow-list reaches the node's guard at once, not with the next instance.
    const allowChanges = ctx.events$
      .pipe(filter((e) => e.type === 'NodeSettingsChanged' && (e.data as { egressAllow?: unknown }).egressAllow !== undefined))
      .subscribe((e) => {
        const nodeId = e.stream.slice('node-'.length);
        const egressAllow = (e.data as { egressAllow: string[] }).egressAllow;
        const job = ctx.nodes.target(nodeId)
          .then((target) => guard.ensure(target, { vgpu: false }, { egressAllow }))
          .catch((err: unknown) => ctx.logger.warn({ err, nodeId }, 'the node guard did not take the new egress allow-list; it will with the next instance there'))
          .finally(() => running.delete(job));
        running.add(job);
      });
    for (const instance of await ctx.readStore.collection<InstanceView>(INSTANCES).find({ status: 'creating' })) run(instance.id);
    return {
      async stop() {
        subscription.unsubscribe();
        allowChanges.unsubscribe();
        await Promise.allSettled([...running]);
      },
    };
  },
};
