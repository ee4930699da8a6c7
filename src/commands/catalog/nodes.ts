import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import {
  DEFAULT_HAMI_CORE_DIR,
  nodeDecider,
  nodeStream,
  type NodeSettings,
  type NodeState,
} from '../../domain/catalog/node.decider.ts';
import { NotFoundError, ValidationError } from '../../domain/shared/errors.ts';
import type { NodeTarget } from '../../ports/container-runtime.port.ts';
import type { DockerConnectionSettings, DockerEngines } from '../../ports/docker.port.ts';
import type { ReadStore } from '../../ports/read-store.port.ts';
import type { SecretBox } from '../../ports/secret-box.port.ts';
import { NODES, type NodeView } from '../../projections/catalog.projection.ts';
import type { CommandBus, CommandContext } from '../command-bus.ts';
import type { GuardRemoval } from '../instance/node-guard.ts';
import type { GpuInventory } from '../../domain/catalog/gpu-inventory.ts';
import type { GpuDiscovery } from './gpu-discovery.ts';
import { instanceDecider, instanceStream } from '../../domain/instance/instance.decider.ts';
import { liveInstancesUsing } from './catalog-usage.ts';
import { tlsMaterialProblems } from './tls-material.ts';

/** The last check of each node's engine (a read-side note, not an event: passes that change nothing are not recorded). */
export const NODE_CHECKS = 'node_checks';
export interface NodeCheck {
  readonly id: string;
  readonly checkedAt: string;
}

/** What the node list needs of a node agent (NodeAgents). */
export interface AgentOperations {
  info(settings: DockerConnectionSettings): Promise<{ version: string } | null>;
  leave(settings: DockerConnectionSettings): Promise<void>;
}

/** A node form as the API takes it: secrets in plaintext, write-only; "" clears a secret. */
export type NodeInput = Omit<NodeSettings, 'tlsKeySealed' | 'sshPasswordSealed'> & { tlsKey?: string; sshPassword?: string };

/** The node use cases: register, change, test the Docker connection, delete. */
export class Nodes {
  constructor(
    private readonly bus: CommandBus,
    private readonly store: ReadStore,
    private readonly engines: DockerEngines,
    private readonly secrets: SecretBox,
    /** Takes the node guard off a deleted node's engine. */
    private readonly retire?: (target: NodeTarget) => Promise<GuardRemoval>,
    private readonly logger?: Logger,
    /** Card discovery through the engine; absent: the form's cards only. */
    private readonly gpus?: GpuDiscovery,
    /** The node agent's own operations (nodes added with the join command). */
    private readonly agents?: AgentOperations,
  ) {}

  /** Drops the cached Docker client of a node whose connection changed. */
  forget(nodeId: string): void {
    this.engines.forget(nodeId);
  }

  async get(nodeId: string): Promise<NodeView> {
    const node = await this.store.collection<NodeView>(NODES).get(nodeId);
    if (!node) throw new NotFoundError('Node');
    return node;
  }

  async register(input: NodeInput, context: CommandContext): Promise<NodeView> {
    this.checkTls(input);
    await this.assertNameFree(input.name);
    const nodeId = randomUUID();
    const { tlsKey, sshPassword, ...settings } = input;
    await this.bus.execute(nodeDecider, nodeStream(nodeId), {
      type: 'RegisterNode',
      data: {
        nodeId,
        ...settings,
        hamiCoreDir: settings.hamiCoreDir || DEFAULT_HAMI_CORE_DIR,
        // A node added with the join command gets its endpoint when its agent joins.
        dockerEndpoint: settings.agentPort ? '' : settings.dockerEndpoint || defaultEndpoint(settings),
        tlsKeySealed: this.seal(tlsKey),
        sshPasswordSealed: this.seal(sshPassword),
      } as NodeSettings & { nodeId: string },
    }, context);
    // A failed test does not undo the registration: the node is saved as `failed` with the reason.
    await this.testConnection(nodeId, context);
    return this.get(nodeId);
  }

  async change(nodeId: string, input: Partial<NodeInput>, context: CommandContext): Promise<NodeView> {
    this.checkTls(input);
    if (input.name !== undefined) await this.assertNameFree(input.name, nodeId);
    const { tlsKey, sshPassword, ...settings } = input;
    const changes: Partial<NodeSettings> = {
      ...settings,
      ...(settings.hamiCoreDir === '' ? { hamiCoreDir: DEFAULT_HAMI_CORE_DIR } : {}),
      ...(tlsKey !== undefined ? { tlsKeySealed: this.seal(tlsKey) } : {}),
      ...(sshPassword !== undefined ? { sshPasswordSealed: this.seal(sshPassword) } : {}),
    };
    const result = await this.bus.execute(nodeDecider, nodeStream(nodeId), { type: 'ChangeNodeSettings', data: changes }, context);
    const changed = result.events.some((e) => (e.data as { connectionChanged?: boolean }).connectionChanged);
    if (changed) {
      this.engines.forget(nodeId);
      await this.testConnection(nodeId, context);
    }
    return this.get(nodeId);
  }

  /** Pings the engine and reads `info` (≤ 5 s), then records `connected` or `failed` with the reason. */
  async testConnection(nodeId: string, context: CommandContext, options: { onlyOnChange?: boolean } = {}): Promise<void> {
    const { state } = await this.bus.load(nodeDecider, nodeStream(nodeId));
    // A node added with the join command has nothing to reach until its agent joined.
    if (state.status === 'active' && state.settings.agentPort && !state.join.agent) return;
    const settings = this.connectionSettings(state);
    const check = await this.engines.check(settings, 5_000);
    let gpuInventory: GpuInventory | undefined;
    let hamiCore: { dir: string; present: boolean } | undefined;
    let agentVersion: string | undefined;
    let diskBytes: number | undefined;
    if (check.ok) {
      gpuInventory = await this.discoverCards(nodeId, state, check.facts.nvidiaRuntime);
      hamiCore = await this.checkHamiCore(nodeId, state, gpuInventory);
      if (state.status === 'active' && state.join.agent && this.agents) agentVersion = (await this.agents.info(settings))?.version;
      // The disk's size seldom changes: read on an explicit test, and on a pass only when not known yet.
      const known = state.status === 'active' ? state.connection.facts?.diskBytes : undefined;
      diskBytes = options.onlyOnChange && known ? known : await this.readDisk(nodeId, settings, check.facts.dockerRootDir) ?? known;
    }
    await this.bus.execute(nodeDecider, nodeStream(nodeId), {
      type: 'RecordConnectionCheck',
      data: check.ok
        ? { ok: true, error: null, facts: { ...check.facts, runtimes: [...check.facts.runtimes], ...(gpuInventory ? { gpuInventory } : {}), ...(hamiCore ? { hamiCore } : {}), ...(agentVersion ? { agentVersion } : {}), ...(diskBytes ? { diskBytes } : {}) }, onlyOnChange: options.onlyOnChange ?? false }
        : { ok: false, error: check.reason, facts: null, onlyOnChange: options.onlyOnChange ?? false },
    }, context);
    if (gpuInventory) await this.tellHoldersOfLostCards(state, gpuInventory, context);
    // When it was last checked, for the console's 检测时间: every pass, not only the ones that
    // changed something (those alone are events).
    const checkedAt = context.now ?? new Date().toISOString();
    await this.store.collection<NodeCheck>(NODE_CHECKS).put({ id: nodeId, checkedAt }, Date.now()).catch(() => undefined);
  }

  /** The instances holding a card that this read no longer sees learn it on their history (their owners see why). */
  private async tellHoldersOfLostCards(before: NodeState, after: GpuInventory, context: CommandContext): Promise<void> {
    if (before.status !== 'active') return;
    const wasAvailable = new Set((before.connection.facts?.gpuInventory?.cards ?? []).filter((c) => c.available).map((c) => c.uuid));
    const lost = after.cards.filter((c) => !c.available && wasAvailable.has(c.uuid));
    if (lost.length === 0) return;
    for (const reservation of Object.values(before.reservations)) {
      const cards = lost.filter((c) => reservation.gpus.some((g) => g.index === c.index));
      if (cards.length === 0) continue;
      await this.bus.execute(instanceDecider, instanceStream(reservation.instanceId), {
        type: 'RecordGpuLost', data: { cards: cards.map((c) => ({ index: c.index, uuid: c.uuid })), reason: after.error },
      }, context).catch((err: unknown) => this.logger?.warn({ err, instanceId: reservation.instanceId }, 'could not record a lost card on the instance'));
    }
  }

  /**
   * Deletes the node, then takes the platform's guard off its engine (see `NodeGuard.remove`). An
   * engine out of reach keeps its guard; the node is deleted all the same and the log says how to
   * remove the guard by hand.
   */
  async delete(nodeId: string, context: CommandContext): Promise<void> {
    const liveInstances = await liveInstancesUsing(this.store, 'nodeId', nodeId);
    const { state } = await this.bus.load(nodeDecider, nodeStream(nodeId));
    const target = state.status === 'active' ? { nodeId, settings: this.connectionSettings(state) } : null;
    await this.bus.execute(nodeDecider, nodeStream(nodeId), { type: 'DeleteNode', data: { liveInstances } }, context);
    if (target && this.retire) {
      try {
        const outcome = await this.retire(target);
        if (!outcome.removed) this.logger?.info({ nodeId, reason: outcome.reason }, 'node deleted; its node guard stays');
      } catch (err) {
        this.logger?.warn({ err, nodeId }, 'node deleted, but its node guard could not be removed: on the node run `docker rm -f $(docker ps -aq -f label=tianqi.role=node-guard)` and `nft delete table inet tianqi`');
      }
    }
    // Last, as the guard's removal goes through it: the agent stops accepting the platform's client and stops.
    if (target && state.status === 'active' && state.join.agent && this.agents) {
      await this.agents.leave(target.settings).catch((err: unknown) => this.logger?.warn({ err, nodeId }, 'node deleted, but its agent could not be told: on the node run `systemctl disable --now tianqi-agent` and `rm -rf /var/lib/tianqi-agent`'));
    }
    this.engines.forget(nodeId);
  }

  /**
   * Card discovery on every check of a node that has or had cards (the NVIDIA runtime, cards in
   * its form, or cards read before); a read that fails keeps the cards known, unavailable.
   */
  private async discoverCards(nodeId: string, state: NodeState, nvidiaRuntime: boolean): Promise<GpuInventory | undefined> {
    if (!this.gpus || state.status !== 'active') return undefined;
    const previous = state.connection.facts?.gpuInventory;
    if (!nvidiaRuntime && state.settings.gpuCount === 0 && !previous) return undefined;
    try {
      return await this.gpus.read({ nodeId, settings: this.connectionSettings(state) }, previous);
    } catch (err) {
      this.logger?.warn({ err, nodeId }, 'card discovery failed; the node keeps its cards as they were');
      return previous;
    }
  }

  /** The size of the disk under the engine's data directory; undefined where it cannot be read (logged). */
  private async readDisk(nodeId: string, settings: DockerConnectionSettings, dockerRootDir: string): Promise<number | undefined> {
    if (!this.gpus || !dockerRootDir) return undefined;
    try {
      return await this.gpus.diskSize({ nodeId, settings }, dockerRootDir);
    } catch (err) {
      this.logger?.warn({ err, nodeId }, 'could not read the size of the node\'s disk');
      return undefined;
    }
  }

  /** On a GPU node: whether HAMi-core's library is in its HAMi-core directory (vGPU specs are placed only where it is). */
  private async checkHamiCore(nodeId: string, state: NodeState, inventory: GpuInventory | undefined): Promise<{ dir: string; present: boolean } | undefined> {
    if (!this.gpus || state.status !== 'active') return undefined;
    if (!inventory?.cards.length && state.settings.gpuCount === 0) return undefined;
    const dir = state.settings.hamiCoreDir;
    try {
      return { dir, present: await this.gpus.hamiCorePresent({ nodeId, settings: this.connectionSettings(state) }, dir) };
    } catch (err) {
      this.logger?.warn({ err, nodeId }, 'could not look for HAMi-core on the node');
      return state.connection.facts?.hamiCore;
    }
  }

  /** The engine of a node, as the container runtime reaches it. */
  async target(nodeId: string): Promise<NodeTarget> {
    const { state } = await this.bus.load(nodeDecider, nodeStream(nodeId));
    return { nodeId, settings: this.connectionSettings(state) };
  }

  /** How to reach a node's engine, with its client key decrypted for the Docker client only. */
  connectionSettings(state: NodeState): DockerConnectionSettings {
    if (state.status !== 'active') throw new NotFoundError('Node');
    const s = state.settings;
    const tls = s.dockerEndpoint.startsWith('tcp://') && s.dockerTls;
    return {
      endpoint: s.dockerEndpoint,
      tls,
      ...(tls && s.tlsCa ? { ca: s.tlsCa } : {}),
      ...(tls && s.tlsCert ? { cert: s.tlsCert } : {}),
      ...(tls && s.tlsKeySealed ? { key: this.secrets.open(s.tlsKeySealed) } : {}),
    };
  }

  private seal(secret: string | undefined): string | null {
    return secret ? this.secrets.seal(secret) : null;
  }

  private checkTls(input: { tlsCa?: string; tlsCert?: string; tlsKey?: string }): void {
    const problems = tlsMaterialProblems(input);
    if (Object.keys(problems).length > 0) throw new ValidationError(problems, 'The TLS material is not valid.');
  }

  private async assertNameFree(name: string, self?: string): Promise<void> {
    const holder = await this.store.collection<NodeView>(NODES).findOne({ nameLower: name.toLowerCase() });
    if (holder && holder.id !== self) throw new ValidationError({ name: 'is taken by another node' }, 'A node with this name exists.');
  }
}

/** Docker's conventional ports: 2376 with TLS, 2375 without, on the node's private address. */
function defaultEndpoint(settings: Pick<NodeSettings, 'privateIp' | 'dockerTls'>): string {
  const host = settings.privateIp.includes(':') ? `[${settings.privateIp}]` : settings.privateIp;
  return `tcp://${host}:${settings.dockerTls ? 2376 : 2375}`;
}
