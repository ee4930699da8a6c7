import type { Subscription} from 'rxjs';
import { EMPTY, catchError, filter, from, interval, lastValueFrom, mergeMap, startWith, take, timeout } from 'rxjs';
import { gpuUsage } from '../../commands/instance/instance.routes.ts';
import { nodeDecider, nodeStream } from '../../domain/catalog/node.decider.ts';
import { describeExit, instanceDecider, instanceStream } from '../../domain/instance/instance.decider.ts';
import type { ContainerEvent, ContainerState } from '../../ports/container-runtime.port.ts';
import { NODES, type NodeView } from '../../projections/catalog.projection.ts';
import { INSTANCE_SERIES, INSTANCES, type InstanceView } from '../../projections/instances.projection.ts';
import type { Plugin, PluginContext } from '../plugin-host.ts';
import { addSample, type Series } from '../../domain/usage/series.ts';

const context = { correlationId: 'reconciler' };
/** How long one node may take in a reconcile cycle before it is skipped (it never delays the others). */
const NODE_TIMEOUT_MS = 10_000;
const NODE_CONCURRENCY = 8;
const USAGE_CONCURRENCY = 8;
export const METRICS = 'instance_metrics';

export interface InstanceMetrics {
  readonly id: string;
  readonly at: string;
  readonly cpuPercent: number | null;
  readonly memoryUsageBytes: number | null;
  readonly memoryLimitBytes: number | null;
  /** Per granted card; null values when nvidia-smi could not be read in the container (never 0). */
  readonly gpus: readonly { index: number; memoryUsedBytes: number | null; memoryTotalBytes: number | null; utilizationPercent: number | null }[];
}

/**
 * Keeps instance state true: one Docker `/events` stream per connected node turns state changes,
 * including ones made outside the platform, into `InstanceStateObserved` within a second; a loop
 * every TIANQI_POLL_INTERVAL_MS re-checks node connectivity (events only on change), every
 * instance's container, vanished containers, pending operations of nodes that came back, and GPU
 * memory use.
 */
export const reconcilerPlugin: Plugin = {
  name: 'reconciler',
  singleton: true,
  async start(ctx) {
    const watches = new Map<string, Subscription>();
    const nodes = () => ctx.readStore.collection<NodeView>(NODES);
    const instances = () => ctx.readStore.collection<InstanceView>(INSTANCES);

    const instanceOf = (event: ContainerEvent) => event.labels['tianqi.instance'];
    const onContainerEvent = async (nodeId: string, event: ContainerEvent) => {
      const instanceId = instanceOf(event);
      if (!instanceId) return;
      const instance = await instances().get(instanceId);
      // While `creating`, provisioning owns the instance: it records the container and then `running`.
      if (!instance || instance.nodeId !== nodeId || instance.pending === 'delete' || instance.status === 'creating') return;
      if (['start', 'restart', 'unpause'].includes(event.action)) {
        await observe(ctx, instanceId, { status: 'running', reason: 'running', exitCode: null, oomKilled: false, source: 'events' });
      } else if (event.action === 'die') {
        // `die` carries the exit code; OOM is only on the container's state, so ask for it.
        const state = await ctx.runtime.inspect(await ctx.nodes.target(nodeId), event.containerId).catch(() => null);
        const oomKilled = state?.oomKilled ?? false;
        const exitCode = event.exitCode ?? state?.exitCode ?? null;
        await observe(ctx, instanceId, { status: 'exited', reason: describeExit(exitCode, oomKilled), exitCode, oomKilled, source: 'events' });
      } else if (event.action === 'destroy') {
        await ctx.bus.execute(instanceDecider, instanceStream(instanceId), { type: 'MarkVanished', data: { reason: 'the container was removed outside the platform', containerId: event.containerId } }, context);
      }
    };

    const watch = async (node: NodeView) => {
      const connected = node.dockerStatus === 'connected';
      if (!connected) {
        watches.get(node.id)?.unsubscribe();
        watches.delete(node.id);
        return;
      }
      if (watches.has(node.id)) return;
      const target = await ctx.nodes.target(node.id);
      const sub = ctx.runtime
        .events(target)
        .pipe(mergeMap((event) => from(onContainerEvent(node.id, event)).pipe(catchError((err: unknown) => {
          ctx.logger.warn({ err, nodeId: node.id }, 'could not record a container event');
          return EMPTY;
        })), 4))
        .subscribe({ error: (err: unknown) => ctx.logger.warn({ err, nodeId: node.id }, 'container event stream ended') });
      watches.set(node.id, sub);
    };
    const rewatch = async (nodeId: string) => {
      watches.get(nodeId)?.unsubscribe();
      watches.delete(nodeId);
      const node = await nodes().get(nodeId);
      if (node) await watch(node);
    };

    const nodeChanges = ctx.events$
      .pipe(
        filter((e) => e.stream.startsWith('node-') && ['NodeConnectionChecked', 'NodeSettingsChanged', 'NodeDeleted', 'NodeRegistered'].includes(e.type)),
        mergeMap(async (e) => {
          const nodeId = e.stream.slice('node-'.length);
          await ctx.waitForProjections(e.position);
          if (e.type === 'NodeConnectionChecked' || e.type === 'NodeSettingsChanged') await rewatch(nodeId);
          if (e.type === 'NodeDeleted') await rewatch(nodeId);
          if (e.type === 'NodeRegistered') await watch((await nodes().get(nodeId))!);
          if (e.type === 'NodeConnectionChecked' && (e.data as { status: string }).status === 'connected') await retryPending(ctx, nodeId);
        }),
      )
      .subscribe({ error: (err: unknown) => ctx.logger.error({ err }, 'node watch failed') });

    for (const node of await nodes().find({})) await watch(node).catch((err: unknown) => ctx.logger.warn({ err, nodeId: node.id }, 'cannot watch node'));

    // The first pass also runs what was accepted and not done before a restart or a failover (a
    // stop answered 202, its process gone within the grace period).
    const cycle = interval(ctx.config.pollIntervalMs)
      .pipe(
        startWith(-1),
        mergeMap((n) => reconcileAll(ctx, { retryPending: n === -1 }), 1),
      )
      .subscribe({ error: (err: unknown) => ctx.logger.error({ err }, 'reconcile loop failed') });

    return {
      async stop() {
        cycle.unsubscribe();
        nodeChanges.unsubscribe();
        for (const sub of watches.values()) sub.unsubscribe();
        watches.clear();
      },
    };
  },
};

async function observe(ctx: PluginContext, instanceId: string, data: {
  status: 'running' | 'exited';
  reason: string;
  exitCode: number | null;
  oomKilled: boolean;
  source: 'events' | 'reconcile';
}) {
  await ctx.bus.execute(instanceDecider, instanceStream(instanceId), { type: 'ObserveState', data }, context);
}

async function retryPending(ctx: PluginContext, nodeId: string): Promise<void> {
  const pending = await ctx.readStore.collection<InstanceView>(INSTANCES).find({ nodeId, pending: { $ne: null } });
  for (const instance of pending) {
    await ctx.instances.runPending(instance.id, context).catch((err: unknown) => ctx.logger.warn({ err, instanceId: instance.id }, 'pending operation failed again'));
  }
}

/** One reconcile cycle over every node, bounded in concurrency and time per node. */
export async function reconcileAll(ctx: PluginContext, options: { retryPending?: boolean } = {}): Promise<{ nodes: number; ms: number }> {
  const started = performance.now();
  const all = await ctx.readStore.collection<NodeView>(NODES).find({});
  await new Promise<void>((resolve) => {
    from(all)
      .pipe(
        mergeMap((node) => from(reconcileNode(ctx, node, options.retryPending ?? false)).pipe(
          timeout(NODE_TIMEOUT_MS),
          catchError((err: unknown) => {
            ctx.logger.warn({ err, nodeId: node.id }, 'reconcile of a node failed or timed out');
            return EMPTY;
          }),
        ), NODE_CONCURRENCY),
      )
      .subscribe({ complete: resolve, error: () => resolve() });
  });
  return { nodes: all.length, ms: performance.now() - started };
}

async function reconcileNode(ctx: PluginContext, node: NodeView, runAccepted: boolean): Promise<void> {
  const before = node.dockerStatus;
  await ctx.nodes.testConnection(node.id, context, { onlyOnChange: true });
  const { state } = await ctx.bus.load(nodeDecider, nodeStream(node.id));
  if (state.status !== 'active' || state.connection.status !== 'connected') return;
  if (before !== 'connected' || runAccepted) await retryPending(ctx, node.id);
  const target = await ctx.nodes.target(node.id);
  const containers = new Map<string, ContainerState>();
  for (const c of await ctx.runtime.listManaged(target)) {
    const instanceId = c.labels['tianqi.instance'];
    if (instanceId) containers.set(instanceId, c);
  }
  const instances = await ctx.readStore.collection<InstanceView>(INSTANCES).find({ nodeId: node.id });
  const runningNow: InstanceView[] = [];
  for (const instance of instances) {
    if (instance.status === 'creating' || instance.pending) continue;
    const container = containers.get(instance.id);
    if (!container) {
      if (instance.containerId) {
        await ctx.bus.execute(instanceDecider, instanceStream(instance.id), { type: 'MarkVanished', data: { reason: 'the container is gone from the node' } }, context);
      }
      continue;
    }
    const running = container.status === 'running' || container.status === 'restarting';
    await observe(ctx, instance.id, {
      status: running ? 'running' : 'exited',
      reason: running ? 'running' : describeExit(container.exitCode, container.oomKilled),
      exitCode: container.exitCode,
      oomKilled: container.oomKilled,
      source: 'reconcile',
    });
    if (running && instance.containerId) runningNow.push(instance);
  }
  await lastValueFrom(from(runningNow).pipe(mergeMap((instance) => recordUsage(ctx, target, instance), USAGE_CONCURRENCY)), { defaultValue: undefined });
}

/** CPU and memory (two stats samples, like `docker stats --no-stream`) and GPU memory per granted card. */
async function recordUsage(ctx: PluginContext, target: Awaited<ReturnType<PluginContext['nodes']['target']>>, instance: InstanceView) {
  const [sample, gpus] = await Promise.all([
    lastValueFrom(ctx.runtime.stats(target, instance.containerId!).pipe(take(2), timeout(5_000))).catch(() => null),
    gpuUsage(ctx.runtime, target, instance),
  ]);
  const metrics: InstanceMetrics = {
    id: instance.id,
    at: new Date(ctx.clock()).toISOString(),
    cpuPercent: sample?.cpuPercent ?? null,
    memoryUsageBytes: sample?.memoryUsageBytes ?? null,
    memoryLimitBytes: sample?.memoryLimitBytes ?? null,
    gpus,
  };
  // Telemetry, not state: kept beside the read models, keyed by time instead of a log position.
  await ctx.readStore.collection<InstanceMetrics>(METRICS).put(metrics, Date.now());
  // The charts' hour and day (bounded: a point a minute, a point per quarter hour).
  const series = ctx.readStore.collection<Series>(INSTANCE_SERIES);
  const used = gpus.map((g) => g.memoryUsedBytes).filter((b): b is number => b !== null);
  await series.put(addSample(await series.get(instance.id), instance.id, {
    at: metrics.at,
    cpuPercent: metrics.cpuPercent,
    memoryBytes: metrics.memoryUsageBytes,
    gpuMemoryBytes: used.length > 0 ? used.reduce((a, b) => a + b, 0) : null,
    rxBytes: sample?.networkRxBytes ?? null,
    txBytes: sample?.networkTxBytes ?? null,
  }), Date.now());
}
