import type { Logger } from 'pino';
import { nodeCapacity, nodeDecider, nodeStream } from '../../domain/catalog/node.decider.ts';
import { instanceDecider, instanceStream } from '../../domain/instance/instance.decider.ts';
import { EngineRejectedError, EngineUnavailableError, type ContainerLimits, type ContainerRuntime, type NodeTarget } from '../../ports/container-runtime.port.ts';
import type { CommandBus, CommandContext } from '../command-bus.ts';
import { DEFAULT_CONTAINER_LIMITS, buildContainerPlan, tenantNetwork } from './container-plan.ts';
import type { NodeGuard } from './node-guard.ts';
import type { Instances } from './instances.ts';

const PROGRESS_EVERY_MS = 2_000;

/**
 * The process manager behind `InstancePlaced`: pull the image if the node lacks it, create and
 * start the container. Idempotent (a retry finds the container by its deterministic name), so it
 * is safe to run again after a crash. Any failure leaves the instance `failed` with Docker's
 * message, and frees its reservation.
 */
export class Provisioning {
  private readonly inFlight = new Set<string>();
  private static readonly context: CommandContext = { correlationId: 'provisioning' };

  constructor(
    private readonly bus: CommandBus,
    private readonly instances: Instances,
    private readonly runtime: ContainerRuntime,
    private readonly targetOf: (nodeId: string) => Promise<NodeTarget>,
    private readonly logger: Logger,
    private readonly limits: ContainerLimits = DEFAULT_CONTAINER_LIMITS,
    private readonly guard?: NodeGuard,
  ) {}

  /** Provisions unless it is already running for this instance; resolves when done. */
  async provision(instanceId: string): Promise<void> {
    if (this.inFlight.has(instanceId)) return;
    this.inFlight.add(instanceId);
    try {
      await this.run(instanceId);
    } catch (err) {
      this.logger.error({ err, instanceId }, 'provisioning failed unexpectedly');
    } finally {
      this.inFlight.delete(instanceId);
    }
  }

  get busy(): number {
    return this.inFlight.size;
  }

  private async run(instanceId: string): Promise<void> {
    const instance = await this.instances.load(instanceId);
    if (instance.status !== 'creating' || instance.pending === 'delete') return;
    const context = { ...Provisioning.context, causationId: instanceId };
    const record = (command: Parameters<CommandBus['execute']>[2]) =>
      this.bus.execute(instanceDecider, instanceStream(instanceId), command as never, context);
    let target: NodeTarget | undefined;
    try {
      target = await this.targetOf(instance.nodeId);
      const { state: node } = await this.bus.load(nodeDecider, nodeStream(instance.nodeId));
      if (node.status !== 'active') throw new EngineRejectedError(404, 'the node was deleted');
      let lastProgress = 0;
      await this.runtime.ensureImage(target, instance.imageAddress, (status) => {
        if (Date.now() - lastProgress < PROGRESS_EVERY_MS) return;
        lastProgress = Date.now();
        void record({ type: 'RecordProgress', data: { reason: status } }).catch(() => undefined);
      });
      await record({ type: 'RecordProgress', data: { reason: 'creating the container' } });
      // Tenants go on a node only while its guard keeps them off the node's own ports.
      await this.guard?.ensure(target, { vgpu: instance.spec.vgpu && instance.gpus.length > 0 }, { egressAllow: node.settings.egressAllow ?? [] });
      await this.runtime.ensureNetwork(target, tenantNetwork(instance.ownerId, instance.spec.internet !== false));
      const plan = buildContainerPlan(instance, { hamiCoreDir: node.settings.hamiCoreDir, gpuMemoryGb: node.settings.gpuMemoryGb, cards: nodeCapacity(node.settings, node.connection.facts).gpus }, this.limits);
      const { containerId, storageOptApplied } = await this.runtime.createAndStart(target, plan);
      await record({ type: 'RecordContainerCreated', data: { containerId, storageOptApplied } });
      await record({ type: 'ObserveState', data: { status: 'running', reason: 'running', exitCode: null, oomKilled: false, source: 'provisioning' } });
    } catch (err) {
      const reason = err instanceof EngineRejectedError || err instanceof EngineUnavailableError ? err.message : String(err);
      // A container that was created but would not start stays for inspection; the instance records it.
      if (target) {
        const left = await this.runtime.inspect(target, instance.containerName).catch(() => null);
        if (left) await record({ type: 'RecordContainerCreated', data: { containerId: left.id, storageOptApplied: false } });
      }
      await record({ type: 'FailProvisioning', data: { reason } });
      await this.bus.execute(nodeDecider, nodeStream(instance.nodeId), { type: 'ReleaseCapacity', data: { instanceId } }, context);
      // A failed instance holds nothing, in its owner's (and group's) quota either; a start takes both again.
      await this.instances.releaseQuota(instance.ownerId, instanceId, context);
      this.logger.warn({ instanceId, reason }, 'instance failed to start');
    }
  }
}
