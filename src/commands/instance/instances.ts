import { randomUUID } from 'node:crypto';
import { isIPv6 } from 'node:net';
import type { Logger } from 'pino';
import { DEFAULT_STOP_GRACE_SECONDS, imageCanRun } from '../../domain/catalog/spec.decider.ts';
import { hostPortLedger, ledgerCards, ledgerOf, nodeCapacity, nodeDecider, nodeStream } from '../../domain/catalog/node.decider.ts';
import { groupQuotaStream, quotaDecider, quotaStream, roundGpus } from '../../domain/quota/quota.decider.ts';
import { GROUPS, type GroupView } from '../../projections/groups.projection.ts';
import { QUOTAS, type QuotaView } from '../../projections/quotas.projection.ts';
import { gpuHoursThisMonth as gpuHoursUsed } from '../../domain/usage/metering.ts';
import { usageRecords } from '../../projections/usage.projection.ts';
import {
  containerName,
  describeExit,
  instanceDecider,
  instanceStream,
  type GpuMode,
  type LiveInstance,
  type Operation,
} from '../../domain/instance/instance.decider.ts';
import { candidates, place, type NodeLedger, type PlacementPolicy, type ResourceRequest } from '../../domain/instance/placement.ts';
import { publicPortsProblem, servicePortsOf, type PublishedPort, type ServicePort } from '../../domain/instance/service-ports.ts';
import { ConflictError, DomainError, NotFoundError, ValidationError } from '../../domain/shared/errors.ts';
import type { Actor } from '../user/accounts.ts';
import { EngineRejectedError, EngineUnavailableError, type ContainerLimits, type ContainerRuntime, type NodeTarget } from '../../ports/container-runtime.port.ts';
import type { EventStore, RecordedEvent } from '../../ports/event-store.port.ts';
import type { ReadStore } from '../../ports/read-store.port.ts';
import { IMAGES, NODES, SPECS, type ImageView, type NodeView, type SpecView } from '../../projections/catalog.projection.ts';
import { INSTANCES, type InstanceView } from '../../projections/instances.projection.ts';
import { buildContainerPlan, DEFAULT_CONTAINER_LIMITS, tenantNetwork } from './container-plan.ts';
import type { CommandBus, CommandContext } from '../command-bus.ts';
import { claimName, releaseName } from '../name-claims.ts';

export class EngineUnavailableAnswer extends DomainError {
  readonly status = 503;
  constructor(reason: string) {
    super('NODE_UNREACHABLE', `The node's Docker engine cannot be reached (${reason}). The request is kept and will run when the node is back.`);
  }
}

export class EngineRejectedAnswer extends DomainError {
  readonly status = 502;
  constructor(reason: string) {
    super('ENGINE_REJECTED', `The node's Docker engine refused: ${reason}`);
  }
}

export interface NewInstance {
  readonly name: string;
  readonly imageId: string;
  readonly specId: string;
  readonly nodeId?: string;
  readonly remark?: string;
  readonly policy?: PlacementPolicy;
  /** Service ports of its own, beside the image's. */
  readonly servicePorts?: readonly ServicePort[];
  /** Service ports (the image's or its own) to map to host ports of the node, where the spec allows it. */
  readonly publicPorts?: readonly number[];
}

// Not `instance-…`: every consumer reads that prefix as an instance's own stream.
const instanceNameStream = (ownerId: string, name: string) => `instancename-${ownerId}-${name.toLowerCase()}`;
const MAX_PLACEMENT_ATTEMPTS = 5;
/** How often a service's use is recorded for the idle auto-stop, per instance and replica. */
const SERVICE_USE_EVERY_MS = 60_000;

/**
 * What an instance counts against a GPU quota: a whole card as 1, a vGPU slice as its memory
 * over its card's (20 GB of an 80 GB card: 0.25); a card of unknown size counts whole.
 */
export function gpuShare(vgpu: boolean, gpus: readonly { index: number; memoryGb: number }[], cards: readonly { index: number; totalMemoryGb: number }[]): number {
  let share = 0;
  for (const g of gpus) {
    const total = cards.find((c) => c.index === g.index)?.totalMemoryGb ?? 0;
    share += vgpu && total > 0 ? Math.min(1, g.memoryGb / total) : 1;
  }
  return roundGpus(share);
}

/** Turns a node's read model into the ledger placement works on. */
export function ledgerFromView(node: NodeView): NodeLedger {
  return {
    nodeId: node.id,
    name: node.name,
    listed: node.listed,
    connected: node.dockerStatus === 'connected',
    gpuModel: node.gpuModel,
    cards: ledgerCards(node.gpus, node.reservations),
    cpuCores: node.capacity.cpuCores,
    memoryGb: node.capacity.memoryGb,
    dataDiskGb: node.capacity.dataDiskGb,
    usedCpuCores: node.used.cpuCores,
    usedMemoryGb: node.used.memoryGb,
    usedDataDiskGb: node.used.dataDiskGb,
    hostPorts: hostPortLedger(node, node.reservations),
    vgpuReady: node.engine?.hamiCore?.present !== false,
  };
}

/** The read-model shape of an instance folded from its stream (time travel, replay). */
export function viewOf(state: LiveInstance, updatedAt: string): InstanceView & { deleted: boolean } {
  return {
    id: state.instanceId,
    name: state.name,
    ownerId: state.ownerId,
    ownerName: state.ownerName,
    imageId: state.imageId,
    imageAddress: state.imageAddress,
    specId: state.specId,
    spec: state.spec,
    nodeId: state.nodeId,
    nodeName: state.nodeName,
    containerId: state.containerId,
    containerName: state.containerName,
    dataVolume: state.dataVolume,
    status: state.status,
    statusReason: state.statusReason,
    pending: state.pending,
    gpuCards: state.gpus,
    remark: state.remark,
    ...(state.servicePorts ? { servicePorts: state.servicePorts } : {}),
    ...(state.publicPorts ? { publicPorts: state.publicPorts } : {}),
    createdAt: state.requestedAt,
    updatedAt,
    deleted: state.deleted,
  };
}

/** The instance use cases: create (placement + reservation), operations, reads. */
export class Instances {
  constructor(
    private readonly bus: CommandBus,
    private readonly store: ReadStore,
    private readonly runtime: ContainerRuntime,
    private readonly targetOf: (nodeId: string) => Promise<NodeTarget>,
    /** Waits until the read models show everything appended so far. */
    private readonly syncReadModels: () => Promise<unknown>,
    private readonly events: EventStore,
    /** The platform's clock: what "in 2 hours" counts from (tests move it). */
    private readonly clock: () => number = Date.now,
    /** TIANQI_KEEP_GPUS_WHEN_STOPPED: a stop keeps the cards, CPU and memory reserved. */
    private readonly keepGpusWhenStopped = false,
    /** Whether this owner may hold another running instance (the prepaid balance); throws why not. */
    private readonly admit: (ownerId: string) => Promise<void> = async () => undefined,
    /** The platform's container limits (TIANQI_CONTAINER_*): a container made again (无卡模式) gets them too. */
    private readonly containerLimits: ContainerLimits = DEFAULT_CONTAINER_LIMITS,
    /** Where an operation that runs after its answer (a stop, a restart) reports a fault no event records. */
    private readonly logger?: Logger,
  ) {}

  /** The instance if the actor may see it (owner or admin); otherwise 404, never 403. */
  async visible(actor: Actor, instanceId: string): Promise<InstanceView> {
    const instance = await this.store.collection<InstanceView>(INSTANCES).get(instanceId);
    if (!instance || (actor.role !== 'admin' && instance.ownerId !== actor.id)) throw new NotFoundError('Instance');
    return instance;
  }

  async list(actor: Actor, filter: { status?: string; q?: string; nodeId?: string; ownerId?: string } = {}): Promise<InstanceView[]> {
    const query: Record<string, unknown> = actor.role === 'admin' ? {} : { ownerId: actor.id };
    if (actor.role === 'admin' && filter.ownerId) query.ownerId = filter.ownerId;
    if (filter.status) query.status = filter.status;
    if (filter.nodeId) query.nodeId = filter.nodeId;
    if (filter.q) query.name = { $regex: filter.q.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), $options: 'i' };
    return this.store.collection<InstanceView>(INSTANCES).find(query, { sort: { createdAt: -1 } });
  }

  /** What an image + spec needs, checking both are listed (for users) and compatible. */
  async requestFor(actor: Actor, imageId: string, specId: string): Promise<{ image: ImageView; spec: SpecView; request: ResourceRequest }> {
    const image = await this.store.collection<ImageView>(IMAGES).get(imageId);
    const spec = await this.store.collection<SpecView>(SPECS).get(specId);
    const fields: Record<string, string> = {};
    if (!image || (!image.listed && actor.role !== 'admin')) fields.imageId = 'no such image';
    if (!spec || (!spec.listed && actor.role !== 'admin')) fields.specId = 'no such spec';
    if (image && !image.listed) fields.imageId = 'is not listed';
    if (spec && !spec.listed) fields.specId = 'is not listed';
    if (image && spec && !imageCanRun(image, spec)) fields.specId = 'needs vGPU support, which this image does not have';
    if (Object.keys(fields).length > 0) throw new ValidationError(fields, 'The image or spec cannot be used.');
    return {
      image: image!,
      spec: spec!,
      request: {
        gpuCount: spec!.gpuCount,
        gpuMemoryGb: spec!.gpuMemoryGb,
        vgpu: spec!.vgpuSupported && spec!.gpuCount > 0,
        gpuModel: spec!.gpuModel,
        cpuCores: spec!.cpuCores,
        memoryGb: spec!.memoryGb,
        dataDiskGb: spec!.dataDiskGb,
      },
    };
  }

  async ledgers(request: ResourceRequest, nodeId?: string): Promise<NodeLedger[]> {
    const query: Record<string, unknown> = { listed: true, dockerStatus: 'connected' };
    if (nodeId) query.id = nodeId;
    return (await this.store.collection<NodeView>(NODES).find(query)).map(ledgerFromView).filter((n) => request.gpuCount === 0 || n.cards.length > 0);
  }

  async placements(actor: Actor, imageId: string, specId: string) {
    const { request } = await this.requestFor(actor, imageId, specId);
    return candidates(request, await this.ledgers(request));
  }

  /**
   * Places the instance and reserves explicit cards, CPU, memory and disk on the node's stream
   * with its expected revision; a node taken in the meantime is placed again. 409 NO_CAPACITY
   * when nothing fits, with nothing appended.
   */
  async create(actor: Actor, input: NewInstance, context: CommandContext): Promise<InstanceView> {
    const { image, spec, request } = await this.requestFor(actor, input.imageId, input.specId);
    if (input.nodeId && !(await this.store.collection<NodeView>(NODES).get(input.nodeId))) {
      throw new ValidationError({ nodeId: 'no such node' });
    }
    const clash = (input.servicePorts ?? []).find((p) => (image.ports ?? []).some((q) => q.port === p.port));
    if (clash) throw new ValidationError({ servicePorts: `port ${clash.port} is declared by the image already` });
    const servicePorts = servicePortsOf(image.ports ?? [], input.servicePorts ?? []);
    const publicPorts = input.publicPorts ?? [];
    const publishing = publicPortsProblem(servicePorts, publicPorts, spec.publicPorts ?? 0);
    if (publishing) throw new ValidationError({ publicPorts: publishing });
    const instanceId = randomUUID();
    const requestedAt = context.now ?? new Date().toISOString();
    const nameStream = instanceNameStream(actor.id, input.name);
    if (await this.store.collection<InstanceView>(INSTANCES).findOne({ ownerId: actor.id, name: input.name })) {
      throw new ConflictError('NAME_TAKEN', 'You already have an instance with this name.', { name: 'is taken' });
    }
    await this.admit(actor.id);
    const reserved = await this.reserve(instanceId, { ...request, publicPorts: publicPorts.length }, input, context);
    const published = publicPorts.map((port, i): PublishedPort => ({ port, hostPort: reserved.hostPorts[i]! }));
    const placedOn = await this.store.collection<NodeView>(NODES).get(reserved.nodeId);
    const share = gpuShare(request.vgpu, reserved.gpus, placedOn?.gpus ?? []);
    try {
      await this.claimQuota(actor.id, instanceId, input.name, share, context);
    } catch (err) {
      await this.release(reserved.nodeId, instanceId, context);
      throw err;
    }
    try {
      await claimName(this.bus, nameStream, instanceId, (holder) => this.exists(holder), {
        code: 'NAME_TAKEN', message: 'You already have an instance with this name.', field: 'name',
      }, context);
    } catch (err) {
      await this.releaseQuota(actor.id, instanceId, context);
      await this.release(reserved.nodeId, instanceId, context);
      throw err;
    }
    const node = placedOn;
    const name = containerName(input.name, instanceId, requestedAt);
    await this.bus.execute(instanceDecider, instanceStream(instanceId), {
      type: 'RequestInstance',
      data: {
        request: {
          instanceId,
          ownerId: actor.id,
          ownerName: actor.username,
          name: input.name,
          imageId: image.id,
          imageAddress: image.address,
          specId: spec.id,
          spec: {
            name: spec.name, gpuModel: spec.gpuModel, gpuCount: spec.gpuCount, gpuMemoryGb: spec.gpuMemoryGb, vgpu: request.vgpu,
            cpuCores: spec.cpuCores, memoryGb: spec.memoryGb, systemDiskGb: spec.systemDiskGb, dataDiskGb: spec.dataDiskGb,
            pricePerHour: spec.pricePerHour,
            ...(spec.containerOverrides ? { containerOverrides: spec.containerOverrides } : {}),
            ...(spec.internet === false ? { internet: false } : {}),
          },
          remark: input.remark ?? '',
          requestedAt,
          servicePorts,
        },
        placement: {
          nodeId: reserved.nodeId,
          nodeName: node?.name ?? '',
          gpus: reserved.gpus,
          containerName: name,
          dataVolume: `${name}-data`,
          gpuShare: share,
          ...(published.length > 0 ? { publicPorts: published } : {}),
        },
      },
    }, { ...context, now: requestedAt });
    return (await this.store.collection<InstanceView>(INSTANCES).get(instanceId))!;
  }

  private async reserve(instanceId: string, request: ResourceRequest, input: NewInstance, context: CommandContext) {
    for (let attempt = 1; attempt <= MAX_PLACEMENT_ATTEMPTS; attempt++) {
      const chosen = place(request, await this.ledgers(request, input.nodeId), input.policy ?? 'binpack');
      if (!chosen) break;
      const hostPorts = (input.publicPorts ?? []).map((port, i) => ({ port, hostPort: chosen.hostPorts[i]! }));
      try {
        await this.bus.execute(nodeDecider, nodeStream(chosen.nodeId), {
          type: 'ReserveCapacity',
          data: {
            instanceId, gpus: chosen.gpus, vgpu: request.vgpu, cpuCores: request.cpuCores, memoryGb: request.memoryGb, dataDiskGb: request.dataDiskGb,
            ...(hostPorts.length > 0 ? { hostPorts } : {}),
          },
        }, context);
        return chosen;
      } catch (err) {
        // Another create took the capacity between our read and our append: place again on fresh ledgers.
        if (!(err instanceof ConflictError) || (err.code !== 'NO_CAPACITY' && err.code !== 'CONCURRENT_CHANGE')) throw err;
        await this.syncReadModels();
      }
    }
    const ports = request.publicPorts ? ` and ${request.publicPorts} public port${request.publicPorts === 1 ? '' : 's'}` : '';
    if (request.gpuCount > 0) {
      const query: Record<string, unknown> = { listed: true, dockerStatus: 'connected', ...(input.nodeId ? { id: input.nodeId } : {}) };
      const driverless = (await this.store.collection<NodeView>(NODES).find(query)).filter((n) => n.engine?.gpuInventory?.noDeviceDriver).map((n) => n.name);
      if (driverless.length > 0) {
        throw new ConflictError('NO_CAPACITY', `No node can take this GPU spec now: the Docker engine of ${driverless.join(', ')} has no NVIDIA device driver, so no container there can be given a card (an administrator installs the NVIDIA container toolkit on the node).`);
      }
    }
    if (request.vgpu && request.gpuCount > 0) {
      const unready = (await this.ledgers(request, input.nodeId)).filter((n) => n.vgpuReady === false).map((n) => n.name);
      if (unready.length > 0) {
        throw new ConflictError('NO_CAPACITY', `No node can take this vGPU spec now. vGPU slices need HAMi-core (libvgpu.so) in the node's HAMi-core directory, and ${unready.join(', ')} ${unready.length === 1 ? 'has' : 'have'} none there: an administrator installs it (or sets the directory in the node form).`);
      }
    }
    throw new ConflictError('NO_CAPACITY', input.nodeId
      ? `The chosen node has no room for this spec${ports} right now.`
      : `No node has room for this spec${ports} right now. Try a smaller spec or later.`);
  }

  /**
   * A failed instance gave its capacity back, a stopped one its cards, CPU and memory. Starting
   * it again takes the same cards and host ports again (its container was created with those
   * device IDs and port bindings), or answers 409 NO_CAPACITY saying which card somebody else
   * holds now.
   */
  private async ensureReserved(instance: LiveInstance, context: CommandContext): Promise<void> {
    const { state: node } = await this.bus.load(nodeDecider, nodeStream(instance.nodeId));
    const held = node.status === 'active' ? node.reservations[instance.instanceId] : undefined;
    if (node.status !== 'active' || (held && !held.computeReleased)) return;
    const { spec } = instance;
    // The owner's quota first: a refusal there leaves the node's ledger untouched.
    const cards = nodeCapacity(node.settings, node.connection.facts).gpus;
    await this.claimQuota(instance.ownerId, instance.instanceId, instance.name, instance.gpuShare ?? gpuShare(spec.vgpu, instance.gpus, cards), context);
    try {
      await this.bus.execute(nodeDecider, nodeStream(instance.nodeId), {
        type: 'ReserveCapacity',
        data: {
          instanceId: instance.instanceId, gpus: instance.gpus, vgpu: spec.vgpu, cpuCores: spec.cpuCores, memoryGb: spec.memoryGb, dataDiskGb: spec.dataDiskGb,
          ...(instance.publicPorts?.length ? { hostPorts: instance.publicPorts } : {}),
        },
      }, context);
    } catch (err) {
      if (err instanceof ConflictError && err.code === 'NO_CAPACITY') {
        await this.releaseQuota(instance.ownerId, instance.instanceId, context);
        const indices = instance.gpus.map((g) => g.index).join(', ');
        throw new ConflictError('NO_CAPACITY', `${err.message.replace(/\.$/, '')}. The instance was stopped and gave its ${indices ? `GPU ${indices}` : 'CPU and memory'} back; it starts again once ${indices ? 'that card is' : 'they are'} free on node ${instance.nodeName} (its container and data are kept there).`);
      }
      await this.releaseQuota(instance.ownerId, instance.instanceId, context);
      throw err;
    }
  }

  /** Takes a place in the owner's quota (409 QUOTA_EXCEEDED naming the quota); held already is fine. */
  private async claimQuota(ownerId: string, instanceId: string, instanceName: string, gpus: number, context: CommandContext): Promise<void> {
    const now = new Date(this.clock()).toISOString();
    // The month's GPU-hours from the meter, only where they can matter (a GPU instance).
    const hoursOf = async (userIds: readonly string[]) =>
      gpus > 0 ? gpuHoursUsed((await Promise.all(userIds.map((id) => usageRecords(this.store, id)))).flat(), now) : 0;
    const { state } = await this.bus.load(quotaDecider, quotaStream(ownerId));
    const groupId = state.groupId ?? null;
    const group = groupId ? await this.store.collection<GroupView>(GROUPS).get(groupId) : null;
    await this.bus.execute(quotaDecider, quotaStream(ownerId), {
      type: 'ClaimQuota', data: { instanceId, instanceName, gpus, gpuHoursThisMonth: await hoursOf([ownerId]), ...(group ? { groupId: group.id } : {}) },
    }, context);
    if (!group) return;
    // Then the group's, on its own stream: a refusal there gives the user's place back.
    try {
      const members = (await this.store.collection<QuotaView>(QUOTAS).find({ groupId: group.id })).map((m) => m.id);
      await this.bus.execute(quotaDecider, groupQuotaStream(group.id), {
        type: 'ClaimQuota', data: { instanceId, instanceName, gpus, gpuHoursThisMonth: await hoursOf(members), group: group.name },
      }, context);
    } catch (err) {
      await this.bus.execute(quotaDecider, quotaStream(ownerId), { type: 'ReleaseQuota', data: { instanceId } }, context);
      throw err;
    }
  }

  /** Gives the instance's place back in its owner's quota, and in the group's it was counted in. */
  async releaseQuota(ownerId: string, instanceId: string, context: CommandContext): Promise<void> {
    const { state } = await this.bus.load(quotaDecider, quotaStream(ownerId));
    const groupId = state.holdings[instanceId]?.groupId;
    await this.bus.execute(quotaDecider, quotaStream(ownerId), { type: 'ReleaseQuota', data: { instanceId } }, context);
    if (groupId) await this.bus.execute(quotaDecider, groupQuotaStream(groupId), { type: 'ReleaseQuota', data: { instanceId } }, context);
  }

  private async release(nodeId: string, instanceId: string, context: CommandContext): Promise<void> {
    await this.bus.execute(nodeDecider, nodeStream(nodeId), { type: 'ReleaseCapacity', data: { instanceId } }, context);
  }

  private async exists(instanceId: string): Promise<boolean> {
    const { state } = await this.bus.load(instanceDecider, instanceStream(instanceId));
    return state.status !== 'none' && !('deleted' in state && state.deleted);
  }

  async load(instanceId: string): Promise<LiveInstance> {
    const { state } = await this.bus.load(instanceDecider, instanceStream(instanceId));
    if (state.status === 'none' || state.status === 'requested' || state.deleted) throw new NotFoundError('Instance');
    return state;
  }

  /**
   * Start, stop, restart or delete. The request is recorded first; when the engine cannot be
   * reached the answer is 503 and the request stays pending, to run when the node is back.
   */
  /**
   * `background`: the operation is recorded and the answer comes at once (the instance `pending`);
   * the engine's work, the grace period of a stop included, runs after, and its outcome is on the
   * instance's stream (and so pushed live) like any other.
   */
  async operate(actor: Actor, instanceId: string, operation: Operation, context: CommandContext, options: { gpuMode?: GpuMode; background?: boolean } = {}): Promise<InstanceView | null> {
    const view = await this.visible(actor, instanceId);
    if (operation === 'start' || operation === 'restart') {
      await this.admit(view.ownerId);
      // 无卡模式 on or off: only a start changes it (a plain start of a no-GPU instance takes its cards again).
      const mode = options.gpuMode ?? (operation === 'start' ? 'gpu' : undefined);
      if (mode && (view.gpuMode ?? 'gpu') !== mode) await this.switchGpuMode(instanceId, mode, context);
      await this.ensureReserved(await this.load(instanceId), context);
    }
    await this.bus.execute(instanceDecider, instanceStream(instanceId), { type: 'RequestOperation', data: { operation, byUsername: actor.username } }, context);
    if (options.background) {
      // Engine refusals and an unreachable node are recorded on the instance (FailOperation); anything else is logged.
      this.runPending(instanceId, context).catch((err: unknown) => {
        if (!(err instanceof DomainError)) this.logger?.error({ err, instanceId, operation }, 'an accepted operation failed');
      });
    } else {
      await this.runPending(instanceId, context);
    }
    return this.store.collection<InstanceView>(INSTANCES).get(instanceId);
  }

  /**
   * 重试创建: a failed instance is provisioned again on its node: its cards, CPU and memory taken
   * again (409 NO_CAPACITY naming what is taken, nothing changed) and its quota place, the
   * container it left removed (its data volume kept); the provisioner does the rest.
   */
  async retry(actor: Actor, instanceId: string, context: CommandContext): Promise<InstanceView | null> {
    const view = await this.visible(actor, instanceId);
    await this.admit(view.ownerId);
    await this.inTurn(instanceId, async () => {
      const instance = await this.load(instanceId);
      if (instance.status !== 'failed' || instance.pending) {
        throw new ConflictError('NOT_FAILED', 'Only a failed instance is created again; start or restart this one instead.');
      }
      const { state: node } = await this.bus.load(nodeDecider, nodeStream(instance.nodeId));
      const heldBefore = node.status === 'active' && node.reservations[instanceId] && !node.reservations[instanceId].computeReleased;
      await this.ensureReserved(instance, context);
      try {
        await this.runtime.remove(await this.targetOf(instance.nodeId), { containerId: instance.containerId, name: instance.containerName, volumes: [], keepVolumes: true });
        await this.bus.execute(instanceDecider, instanceStream(instanceId), { type: 'RetryProvisioning', data: { byUsername: actor.username } }, context);
      } catch (err) {
        // What this retry took goes back; what the instance held before stays.
        if (!heldBefore) {
          await this.release(instance.nodeId, instanceId, context);
          await this.releaseQuota(instance.ownerId, instanceId, context);
        }
        if (err instanceof EngineUnavailableError) throw new EngineUnavailableAnswer(err.message);
        throw err;
      }
    });
    return this.store.collection<InstanceView>(INSTANCES).get(instanceId);
  }

  private readonly running = new Map<string, Promise<void>>();

  /**
   * Runs an instance's pending operation against the engine (also used by the retry on
   * reconnect). One at a time per instance: a request and a reconnect retry never race each other.
   */
  async runPending(instanceId: string, context: CommandContext): Promise<void> {
    await this.inTurn(instanceId, () => this.runPendingNow(instanceId, context));
  }

  /** Runs `work` after whatever runs for this instance now: one engine operation per instance at a time. */
  private async inTurn<T>(instanceId: string, work: () => Promise<T>): Promise<T> {
    const previous = this.running.get(instanceId);
    const run = (previous ?? Promise.resolve()).catch(() => undefined).then(work);
    const settled = run.then(() => undefined, () => undefined);
    this.running.set(instanceId, settled);
    try {
      return await run;
    } finally {
      if (this.running.get(instanceId) === settled) this.running.delete(instanceId);
    }
  }

  /**
   * 无卡模式: a stopped GPU instance goes without its cards (`none`) or takes cards again (`gpu`),
   * in its turn. The container is made again from its own files (kept as an image) with the same
   * data volume. Going without, the cards go back to the node at once; going back, free cards of
   * the same node are taken first (409 NO_CAPACITY naming who holds them, nothing changed).
   */
  private async switchGpuMode(instanceId: string, mode: GpuMode, context: CommandContext): Promise<void> {
    await this.inTurn(instanceId, async () => {
      const instance = await this.load(instanceId);
      if ((instance.gpuMode ?? 'gpu') === mode) return;
      if (instance.spec.gpuCount === 0) throw new ConflictError('NO_GPU_MODE_UNAVAILABLE', 'This instance has no GPUs to leave out.');
      const spec = await this.store.collection<SpecView>(SPECS).get(instance.specId);
      const noGpuPrice = spec?.noGpuPricePerHour ?? null;
      if (mode === 'none' && noGpuPrice === null) {
        throw new ConflictError('NO_GPU_MODE_UNAVAILABLE', `The spec ${instance.spec.name} does not offer 无卡模式 (no-GPU mode): an administrator gives it a no-GPU price to offer it.`);
      }
      if (instance.status !== 'exited' || instance.pending) {
        throw new ConflictError('NOT_STOPPED', 'Stop the instance first: its cards change only while it is stopped.');
      }
      const { state: node } = await this.bus.load(nodeDecider, nodeStream(instance.nodeId));
      if (node.status !== 'active') throw new ConflictError('NODE_GONE', 'The instance\'s node was deleted.');
      const held = node.reservations[instanceId];
      const { spec: s } = instance;
      const cards = nodeCapacity(node.settings, node.connection.facts).gpus;
      let gpus: readonly { index: number; memoryGb: number }[] = [];
      let share = 0;
      if (mode === 'none') {
        // Its cards go back now (a stop keeps them with TIANQI_KEEP_GPUS_WHEN_STOPPED); the start takes CPU and memory.
        if (held && !held.computeReleased) {
          await this.bus.execute(nodeDecider, nodeStream(instance.nodeId), { type: 'ReleaseCompute', data: { instanceId } }, context);
          await this.releaseQuota(instance.ownerId, instanceId, context);
        }
      } else {
        const { [instanceId]: _own, ...others } = node.reservations;
        const request: ResourceRequest = { gpuCount: s.gpuCount, gpuMemoryGb: s.gpuMemoryGb, vgpu: s.vgpu, gpuModel: s.gpuModel, cpuCores: s.cpuCores, memoryGb: s.memoryGb, dataDiskGb: s.dataDiskGb };
        const chosen = place(request, [{ ...ledgerOf({ ...node, reservations: others }), listed: true, connected: true }]);
        if (!chosen) {
          const holders = Object.values(others).filter((r) => r.gpus.length > 0 && !r.computeReleased).length;
          throw new ConflictError('NO_CAPACITY', `Node ${node.settings.name} has no free ${s.gpuModel} card for this instance now (${holders} other instance${holders === 1 ? '' : 's'} hold its cards). It stays in 无卡模式 (no-GPU mode); start it without GPUs, or again once a card is free.`);
        }
        gpus = chosen.gpus;
        share = gpuShare(s.vgpu, gpus, cards);
        await this.claimQuota(instance.ownerId, instanceId, instance.name, share, context);
        try {
          await this.bus.execute(nodeDecider, nodeStream(instance.nodeId), {
            type: 'ReserveCapacity',
            data: { instanceId, gpus, vgpu: s.vgpu, cpuCores: s.cpuCores, memoryGb: s.memoryGb, dataDiskGb: s.dataDiskGb, ...(instance.publicPorts?.length ? { hostPorts: instance.publicPorts } : {}) },
          }, context);
        } catch (err) {
          await this.releaseQuota(instance.ownerId, instanceId, context);
          throw err;
        }
      }
      const giveBack = async () => {
        if (mode !== 'gpu') return;
        await this.bus.execute(nodeDecider, nodeStream(instance.nodeId), { type: 'ReleaseCompute', data: { instanceId } }, context);
        await this.releaseQuota(instance.ownerId, instanceId, context);
      };
      let containerId: string;
      try {
        const target = await this.targetOf(instance.nodeId);
        const plan = buildContainerPlan({ ...instance, gpus }, { hamiCoreDir: node.settings.hamiCoreDir, gpuMemoryGb: node.settings.gpuMemoryGb, cards }, this.containerLimits);
        containerId = (await this.runtime.recreate(target, instance.containerId!, plan)).containerId;
      } catch (err) {
        await giveBack();
        if (err instanceof EngineUnavailableError) throw new EngineUnavailableAnswer(err.message);
        if (err instanceof EngineRejectedError) throw new EngineRejectedAnswer(err.message);
        throw err;
      }
      const price = mode === 'none' ? noGpuPrice! : spec?.pricePerHour ?? s.pricePerHour;
      // Recorded before the old container goes, so that its removal is not taken for the instance's container vanishing.
      await this.bus.execute(instanceDecider, instanceStream(instanceId), {
        type: 'ChangeGpuMode', data: { mode, gpus, gpuShare: share, containerId, pricePerHour: price },
      }, context);
      // The instance runs on the new container from here on; an old one left behind (the engine went
      // away just now) is stopped and harmless, and its kept files go when the instance is deleted.
      await this.runtime.replace(await this.targetOf(instance.nodeId), instance.containerId!, containerId, instance.containerName).catch(() => undefined);
    });
  }

  private async runPendingNow(instanceId: string, context: CommandContext): Promise<void> {
    const { state } = await this.bus.load(instanceDecider, instanceStream(instanceId));
    if (state.status === 'none' || state.status === 'requested' || state.deleted) return;
    const instance = state;
    const operation = instance.pending;
    if (!operation) return;
    const record = (type: 'CompleteOperation' | 'FailOperation', data: object) =>
      this.bus.execute(instanceDecider, instanceStream(instanceId), { type, data } as never, context);
    try {
      const target = await this.targetOf(instance.nodeId);
      if (operation === 'delete') {
        const result = await this.runtime.remove(target, {
          containerId: instance.containerId,
          name: instance.containerName,
          volumes: instance.dataVolume ? [instance.dataVolume] : [],
        });
        await this.bus.execute(instanceDecider, instanceStream(instanceId), {
          type: 'RecordDeleted', data: { removed: result.removed, notRemoved: result.failed },
        }, context);
        await this.release(instance.nodeId, instanceId, context);
        await this.releaseQuota(instance.ownerId, instanceId, context);
        await releaseName(this.bus, instanceNameStream(instance.ownerId, instance.name), instanceId, context);
        // The owner's network on that node goes with their last instance there; the first next one makes it again.
        await this.runtime.removeNetworkIfUnused(target, tenantNetwork(instance.ownerId, instance.spec.internet !== false).name).catch(() => false);
        return;
      }
      const containerId = instance.containerId!;
      // A stop that ran just before gave the cards back: take them again, in this instance's turn.
      if (operation === 'start' || operation === 'restart') {
        try {
          await this.ensureReserved(instance, context);
        } catch (err) {
          if (err instanceof ConflictError) await record('FailOperation', { operation, reason: err.message, willRetry: false });
          throw err;
        }
      }
      if (operation === 'start') await this.runtime.start(target, containerId);
      if (operation === 'stop') await this.runtime.stop(target, containerId, await this.stopGrace(instance.specId));
      if (operation === 'restart') await this.runtime.restart(target, containerId, await this.stopGrace(instance.specId));
      await this.observe(instanceId, target, containerId, context);
      await record('CompleteOperation', { operation });
      if (operation === 'stop' && !this.keepGpusWhenStopped) {
        await this.bus.execute(nodeDecider, nodeStream(instance.nodeId), { type: 'ReleaseCompute', data: { instanceId } }, context);
        await this.releaseQuota(instance.ownerId, instanceId, context);
      }
    } catch (err) {
      if (err instanceof EngineUnavailableError) {
        await record('FailOperation', { operation, reason: err.message, willRetry: true });
        throw new EngineUnavailableAnswer(err.message);
      }
      if (err instanceof EngineRejectedError && err.statusCode === 404 && operation !== 'delete' && await this.vanished(instance.nodeId, instance.containerId!)) {
        // The container went away behind the read model (removed by hand, or the node was wiped):
        // the instance's state, not an engine fault.
        await record('FailOperation', { operation, reason: 'the container is gone from the node', willRetry: false });
        await this.bus.execute(instanceDecider, instanceStream(instanceId), { type: 'MarkVanished', data: { reason: 'the container is gone from the node' } }, context);
        throw new ConflictError('CONTAINER_GONE', 'The container is no longer on its node; delete the instance and create a new one.');
      }
      if (err instanceof EngineRejectedError) {
        await record('FailOperation', { operation, reason: err.message, willRetry: false });
        throw new EngineRejectedAnswer(err.message);
      }
      throw err;
    }
  }

  /** The spec's grace period before SIGKILL, as it is now (an admin's change reaches running instances). */
  private async stopGrace(specId: string): Promise<number> {
    const spec = await this.store.collection<SpecView>(SPECS).get(specId).catch(() => null);
    return spec?.stopGraceSeconds ?? DEFAULT_STOP_GRACE_SECONDS;
  }

  /**
   * Whether the engine no longer has the container: its 404 for an operation may also be about
   * something else (a network the container needs), so ask.
   */
  private async vanished(nodeId: string, containerId: string): Promise<boolean> {
    const state = await this.runtime.inspect(await this.targetOf(nodeId), containerId).catch(() => undefined);
    return state === null;
  }

  /** Records the container's state as the engine reports it right now. */
  async observe(instanceId: string, target: NodeTarget, containerId: string, context: CommandContext, source: 'operation' | 'reconcile' = 'operation') {
    const state = await this.runtime.inspect(target, containerId);
    if (!state) {
      await this.bus.execute(instanceDecider, instanceStream(instanceId), { type: 'MarkVanished', data: { reason: 'the container is gone from the node' } }, context);
      return;
    }
    const running = state.status === 'running' || state.status === 'restarting';
    await this.bus.execute(instanceDecider, instanceStream(instanceId), {
      type: 'ObserveState',
      data: {
        status: running ? 'running' : 'exited',
        reason: running ? 'running' : describeExit(state.exitCode, state.oomKilled),
        exitCode: state.exitCode,
        oomKilled: state.oomKilled,
        source,
      },
    }, context);
  }

  /**
   * Time travel: the instance as it was at `at`, folded from its stream. Owners see their own
   * instances, deleted ones included; others get 404.
   */
  async at(actor: Actor, instanceId: string, at: string): Promise<InstanceView & { deleted: boolean }> {
    const until = new Date(at).toISOString();
    const events = (await this.events.readStream(instanceStream(instanceId))).filter((e) => e.metadata.time <= until);
    const state = events.reduce((s, e) => instanceDecider.evolve(s, e as never), instanceDecider.initialState());
    if (state.status === 'none' || state.status === 'requested') throw new NotFoundError('Instance');
    if (actor.role !== 'admin' && state.ownerId !== actor.id) throw new NotFoundError('Instance');
    return viewOf(state, events.at(-1)!.metadata.time);
  }

  /**
   * 定时关机: the owner (or an admin) sets when the running instance stops, at a time or after
   * some hours; a new one replaces the old. Kept on the instance's stream, so a restart or another
   * replica finds it.
   */
  async scheduleStop(actor: Actor, instanceId: string, when: { at?: string; afterHours?: number }, context: CommandContext): Promise<InstanceView> {
    await this.visible(actor, instanceId);
    const now = this.clock();
    const at = when.at !== undefined ? new Date(when.at).toISOString() : new Date(now + when.afterHours! * 3600_000).toISOString();
    await this.bus.execute(instanceDecider, instanceStream(instanceId), {
      type: 'ScheduleStop', data: { at, byUserId: actor.id, byUsername: actor.username },
    }, { ...context, now: new Date(now).toISOString() });
    return (await this.store.collection<InstanceView>(INSTANCES).get(instanceId))!;
  }

  async unscheduleStop(actor: Actor, instanceId: string, context: CommandContext): Promise<void> {
    await this.visible(actor, instanceId);
    await this.bus.execute(instanceDecider, instanceStream(instanceId), {
      type: 'UnscheduleStop', data: { byUserId: actor.id, byUsername: actor.username },
    }, context);
  }

  /** Instances whose scheduled stop is due at `now` (an ISO time), soonest first. */
  async dueStops(now: string): Promise<{ id: string; at: string }[]> {
    const due = await this.store.collection<InstanceView>(INSTANCES).find({ scheduledStopAt: { $ne: null, $lte: now } }, { sort: { scheduledStopAt: 1 }, limit: 100 });
    return due.map((i) => ({ id: i.id, at: i.scheduledStopAt! }));
  }

  /**
   * The scheduler's turn: the stop of that time, if it still stands, is requested (at the
   * scheduler's clock). True when a stop was requested; the caller runs it (`runPending`).
   */
  async fireScheduledStop(instanceId: string, at: string, context: CommandContext): Promise<boolean> {
    const { events } = await this.bus.execute(instanceDecider, instanceStream(instanceId), { type: 'FireScheduledStop', data: { at } }, context);
    return events.some((e) => e.type === 'InstanceOperationRequested');
  }

  /**
   * The owner (or an admin) switches the idle auto-stop off or on for the instance; off only
   * where the spec's policy allows it (409 IDLE_STOP_REQUIRED).
   */
  async setIdleOptOut(actor: Actor, instanceId: string, optOut: boolean, context: CommandContext): Promise<InstanceView> {
    const instance = await this.visible(actor, instanceId);
    const spec = await this.store.collection<SpecView>(SPECS).get(instance.specId);
    const allowed = spec?.idleStop?.optOutAllowed ?? true;
    await this.bus.execute(instanceDecider, instanceStream(instanceId), {
      type: 'SetIdleOptOut', data: { optOut, allowed, byUsername: actor.username },
    }, context);
    return (await this.store.collection<InstanceView>(INSTANCES).get(instanceId))!;
  }

  private readonly serviceUses = new Map<string, number>();

  /**
   * A service page of the instance was used (a proxied request or WebSocket message): activity
   * for the idle auto-stop, recorded at most once a minute per instance and replica.
   */
  noteServiceUse(instanceId: string): void {
    const now = this.clock();
    if (now - (this.serviceUses.get(instanceId) ?? 0) < SERVICE_USE_EVERY_MS) return;
    this.serviceUses.set(instanceId, now);
    if (this.serviceUses.size > 10_000) this.serviceUses.delete(this.serviceUses.keys().next().value!);
    void this.bus.execute(instanceDecider, instanceStream(instanceId), { type: 'RecordServiceUse', data: {} }, { now: new Date(now).toISOString(), correlationId: 'service-proxy' })
      .catch(() => this.serviceUses.delete(instanceId));
  }

  /** Declares a service port of the instance's own (owner or admin). */
  async addServicePort(actor: Actor, instanceId: string, port: ServicePort, context: CommandContext): Promise<InstanceView> {
    await this.visible(actor, instanceId);
    await this.bus.execute(instanceDecider, instanceStream(instanceId), { type: 'AddServicePort', data: port }, context);
    return (await this.store.collection<InstanceView>(INSTANCES).get(instanceId))!;
  }

  async removeServicePort(actor: Actor, instanceId: string, port: number, context: CommandContext): Promise<void> {
    await this.visible(actor, instanceId);
    await this.bus.execute(instanceDecider, instanceStream(instanceId), { type: 'RemoveServicePort', data: { port } }, context);
  }

  /** Where each published port of the instance is reached: `<node public IP>:<host port>`, by container port. */
  async publicAddresses(instance: InstanceView): Promise<Map<number, string>> {
    const published = instance.publicPorts ?? [];
    if (published.length === 0) return new Map();
    const node = await this.store.collection<NodeView>(NODES).get(instance.nodeId);
    if (!node) return new Map();
    const host = isIPv6(node.publicIp) ? `[${node.publicIp}]` : node.publicIp;
    return new Map(published.map((p) => [p.port, `${host}:${p.hostPort}`]));
  }

  async history(instanceId: string): Promise<RecordedEvent[]> {
    return this.events.readStream(instanceStream(instanceId));
  }
}
