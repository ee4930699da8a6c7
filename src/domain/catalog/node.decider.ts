import type { Command, Decider, DomainEvent } from '../shared/decider.ts';
import type { GpuInventory } from './gpu-inventory.ts';
import { assertNever } from '../shared/decider.ts';
import { ConflictError, NotFoundError, UnauthorizedError, ValidationError } from '../shared/errors.ts';
import { freeMemory, type CardLedger, type HostPortLedger, type NodeLedger } from '../instance/placement.ts';
import { assertNotInUse, changedFields } from './image.decider.ts';

/** 算力节点: a Docker host. Secrets arrive here already sealed (AES-256-GCM ciphertext). */
export interface NodeSettings {
  readonly name: string;
  readonly region: string;
  /** Free-text descriptions from the form (型号, 容量…). */
  readonly cpu: string;
  readonly memory: string;
  readonly systemDisk: string;
  readonly dataDisk: string;
  /** Capacity used for placement; null = take it from the engine's own report. */
  readonly cpuCores: number | null;
  readonly memoryGb: number | null;
  readonly dataDiskGb: number | null;
  readonly publicIp: string;
  readonly privateIp: string;
  readonly sshPort: number;
  readonly sshUser: string;
  readonly sshPasswordSealed: string | null;
  readonly gpuModel: string;
  readonly gpuCount: number;
  /** Per card, GB. */
  readonly gpuMemoryGb: number;
  /** HAMi-core build directory on the node, bind-mounted into vGPU containers. */
  readonly hamiCoreDir: string;
  readonly dockerEndpoint: string;
  readonly dockerTls: boolean;
  readonly tlsCa: string;
  readonly tlsCert: string;
  readonly tlsKeySealed: string | null;
  readonly listed: boolean;
  readonly remark: string;
  /**
   * 出站白名单: private addresses or networks (CIDR) the node's tenants may reach despite the
   * node guard (a NAS, a package mirror); absent in older records: none.
   */
  readonly egressAllow?: readonly string[];
  /** The node's ports public service ports are mapped to (公网端口范围); absent in older records: the default. */
  readonly publicPortMin?: number;
  readonly publicPortMax?: number;
  /**
   * Reached through the TianQi node agent (添加节点 with the join command) on this port of the
   * node; absent or null: through the engine's own endpoint as the form gives it.
   */
  readonly agentPort?: number | null;
}

/** The agent's port unless the form names another: not Docker's 2375/2376, nor Swarm's 2377. */
export const DEFAULT_AGENT_PORT = 9376;

/** A single-use join token: only its SHA-256 is kept. */
export interface JoinToken {
  readonly tokenId: string;
  readonly hash: string;
  readonly issuedAt: string;
  readonly expiresAt: string;
  readonly revokedAt: string | null;
  readonly usedAt: string | null;
}

/** The node agent as it joined (and its certificates since). */
export interface AgentRecord {
  readonly joinedAt: string;
  readonly hostname: string;
  readonly version: string;
  readonly arch: string;
  /** The address the platform dials the agent on. */
  readonly address: string;
  /** SHA-256 of the agent's server certificate and of the platform's client certificate for it. */
  readonly serverFingerprint: string;
  readonly clientFingerprint: string;
  readonly certExpiresAt: string;
  readonly rotatedAt: string | null;
}

export interface JoinState {
  readonly tokens: Readonly<Record<string, JoinToken>>;
  readonly agent: AgentRecord | null;
}

/** What the agent's certificates change on the node: its TLS connection settings. */
export interface AgentConnection {
  readonly dockerEndpoint: string;
  readonly tlsCa: string;
  readonly tlsCert: string;
  readonly tlsKeySealed: string;
}

export const DEFAULT_HAMI_CORE_DIR = '/root/HAMi-core/build';
/** Kubernetes' NodePort range: above the well-known ports, below Linux's ephemeral ones (32768–60999). */
export const DEFAULT_PUBLIC_PORT_RANGE = { min: 30_000, max: 32_767 } as const;

export function publicPortRange(settings: Pick<NodeSettings, 'publicPortMin' | 'publicPortMax'>): { min: number; max: number } {
  return { min: settings.publicPortMin ?? DEFAULT_PUBLIC_PORT_RANGE.min, max: settings.publicPortMax ?? DEFAULT_PUBLIC_PORT_RANGE.max };
}

/** Settings that change how the platform reaches the engine: changing one re-tests the connection. */
export const CONNECTION_FIELDS = ['dockerEndpoint', 'dockerTls', 'tlsCa', 'tlsCert', 'tlsKeySealed'] as const;

export interface EngineFactsRecord {
  readonly serverVersion: string;
  readonly cpus: number;
  readonly memoryBytes: number;
  readonly operatingSystem: string;
  readonly kernelVersion: string;
  readonly architecture: string;
  readonly storageDriver: string;
  /** Where the engine keeps images, containers and volumes (absent in older records). */
  readonly dockerRootDir?: string;
  readonly nvidiaRuntime: boolean;
  readonly runtimes: readonly string[];
  /** The cards as nvidia-smi reads them through the engine (card discovery); absent: not read (no GPU, or an older record). */
  readonly gpuInventory?: GpuInventory;
  /** Whether HAMi-core's libvgpu.so is in the node's HAMi-core directory (checked on GPU nodes); absent: not checked. */
  readonly hamiCore?: { readonly dir: string; readonly present: boolean };
  /** The size of the disk holding the engine's data directory, in bytes (what the form's data disk is held against); absent: not read. */
  readonly diskBytes?: number;
  /** Nodes reached through the node agent: the agent's build (SHA-256 of its binary, 16 hex digits). */
  readonly agentVersion?: string;
}

export type DockerStatus = 'connected' | 'failed' | 'unknown';

export interface ConnectionState {
  readonly status: DockerStatus;
  readonly error: string | null;
  readonly checkedAt: string | null;
  readonly facts: EngineFactsRecord | null;
}

/** What one instance holds on a node: explicit card indices, never "the first N". */
export interface Reservation {
  readonly instanceId: string;
  readonly gpus: readonly { index: number; memoryGb: number }[];
  /** vGPU slices share cards; normal GPU instances take whole cards. */
  readonly vgpu: boolean;
  readonly cpuCores: number;
  readonly memoryGb: number;
  readonly dataDiskGb: number;
  /** The instance is stopped and gave its cards, CPU and memory back; its data disk stays held. */
  readonly computeReleased?: boolean;
  /** Host ports mapped to the instance's public service ports; absent when none. */
  readonly hostPorts?: readonly { port: number; hostPort: number }[];
}

export type NodeEvent =
  | DomainEvent<'NodeRegistered', NodeSettings & { nodeId: string }>
  | DomainEvent<'NodeSettingsChanged', Partial<NodeSettings> & { connectionChanged: boolean }>
  | DomainEvent<'NodeConnectionChecked', {
      status: 'connected' | 'failed';
      error: string | null;
      checkedAt: string;
      facts: EngineFactsRecord | null;
    }>
  | DomainEvent<'NodeDeleted', { nodeId: string }>
  | DomainEvent<'NodeCapacityReserved', Reservation>
  | DomainEvent<'NodeCapacityReleased', { instanceId: string }>
  | DomainEvent<'NodeComputeReleased', { instanceId: string }>
  | DomainEvent<'NodeJoinTokenIssued', { tokenId: string; hash: string; issuedAt: string; expiresAt: string }>
  | DomainEvent<'NodeJoinTokenRevoked', { tokenId: string; revokedAt: string }>
  | DomainEvent<'NodeJoined', AgentConnection & { tokenId: string; agent: AgentRecord }>
  | DomainEvent<'NodeAgentCertificatesRotated', Pick<AgentConnection, 'tlsCert' | 'tlsKeySealed'> & {
      serverFingerprint: string; clientFingerprint: string; certExpiresAt: string; rotatedAt: string;
    }>;

export type NodeCommand =
  | Command<'RegisterNode', NodeSettings & { nodeId: string }>
  | Command<'ChangeNodeSettings', Partial<NodeSettings>>
  | Command<'RecordConnectionCheck', {
      ok: boolean;
      error: string | null;
      facts: EngineFactsRecord | null;
      /** The reconcile loop records only changes; an explicit test always records. */
      onlyOnChange: boolean;
    }>
  | Command<'DeleteNode', { liveInstances: number }>
  | Command<'ReserveCapacity', Reservation>
  | Command<'ReleaseCapacity', { instanceId: string }>
  /** A stopped instance gives back its cards, CPU and memory; a start takes them again with ReserveCapacity. */
  | Command<'ReleaseCompute', { instanceId: string }>
  | Command<'IssueJoinToken', { tokenId: string; hash: string; expiresAt: string }>
  | Command<'RevokeJoinToken', { tokenId: string }>
  /** The agent joined with a live token (single use: a second join with it is refused). */
  | Command<'CompleteJoin', AgentConnection & { hash: string; agent: Omit<AgentRecord, 'joinedAt' | 'rotatedAt'> }>
  | Command<'RecordAgentRotation', Pick<AgentConnection, 'tlsCert' | 'tlsKeySealed'> & {
      serverFingerprint: string; clientFingerprint: string; certExpiresAt: string;
    }>;

export type NodeState =
  | { readonly status: 'none' }
  | {
      readonly status: 'active' | 'deleted';
      readonly nodeId: string;
      readonly settings: NodeSettings;
      readonly connection: ConnectionState;
      /** The capacity ledger: reservations by instance id. */
      readonly reservations: Readonly<Record<string, Reservation>>;
      /** Join tokens and the agent, for nodes reached through the node agent. */
      readonly join: JoinState;
    };

export const nodeStream = (nodeId: string) => `node-${nodeId}`;

const NO_JOIN: JoinState = { tokens: {}, agent: null };

function withToken<S extends Exclude<NodeState, { status: 'none' }>>(state: S, token: JoinToken): S {
  return { ...state, join: { ...state.join, tokens: { ...state.join.tokens, [token.tokenId]: token } } };
}

const UNKNOWN: ConnectionState = { status: 'unknown', error: null, checkedAt: null, facts: null };

/** Rules over a whole node's settings (on register and on the merged result of a change). */
export function nodeProblems(s: NodeSettings): Record<string, string> {
  const problems: Record<string, string> = {};
  if (s.gpuCount > 0) {
    if (s.gpuModel.trim() === '') problems.gpuModel = 'is required when gpuCount is above 0';
    if (s.gpuMemoryGb <= 0) problems.gpuMemoryGb = 'must be above 0 when gpuCount is above 0';
  }
  const tcp = s.dockerEndpoint.startsWith('tcp://');
  if (tcp && s.dockerTls) {
    if (!s.tlsCa) problems.tlsCa = 'is required when dockerTls is on';
    if (!s.tlsCert) problems.tlsCert = 'is required when dockerTls is on';
    if (!s.tlsKeySealed) problems.tlsKey = 'is required when dockerTls is on';
  }
  const ports = publicPortRange(s);
  if (ports.min > ports.max) problems.publicPortMax = 'must be at least publicPortMin';
  else if (s.sshPort >= ports.min && s.sshPort <= ports.max) problems.publicPortMin = `the range must leave out the node's SSH port ${s.sshPort}`;
  return problems;
}

function assertValid(settings: NodeSettings): void {
  const problems = nodeProblems(settings);
  if (Object.keys(problems).length > 0) throw new ValidationError(problems, 'The node settings break a rule.');
}

/**
 * The live token with this hash, or why it cannot be used: unknown, revoked, used or expired. Pure;
 * the install script and the helper download check it without spending it, a join spends it.
 */
export function liveJoinToken(state: NodeState, hash: string, now: string): JoinToken {
  const token = state.status === 'active' ? Object.values(state.join.tokens).find((t) => t.hash === hash) : undefined;
  if (!token) throw new UnauthorizedError('This join token is not known: copy the command from the node\'s page again.', 'JOIN_TOKEN_INVALID');
  if (token.revokedAt) throw new UnauthorizedError('This join token was revoked: issue a new command on the node\'s page.', 'JOIN_TOKEN_REVOKED');
  if (token.usedAt) throw new UnauthorizedError(`This join token was used at ${token.usedAt} and works once: issue a new command on the node's page.`, 'JOIN_TOKEN_USED');
  if (token.expiresAt <= now) throw new UnauthorizedError(`This join token expired at ${token.expiresAt}: issue a new command on the node's page.`, 'JOIN_TOKEN_EXPIRED');
  return token;
}

function active(state: NodeState) {
  if (state.status !== 'active') throw new NotFoundError('Node');
  return state;
}

export const nodeDecider: Decider<NodeCommand, NodeState, NodeEvent> = {
  initialState: () => ({ status: 'none' }),
  decide(command, state) {
    switch (command.type) {
      case 'RegisterNode': {
        if (state.status !== 'none') throw new ConflictError('NODE_EXISTS', 'This node already exists.');
        const { nodeId: _, ...settings } = command.data;
        assertValid(settings);
        return [{ type: 'NodeRegistered', data: command.data }];
      }
      case 'ChangeNodeSettings': {
        const node = active(state);
        // Sealed secrets differ on every seal, so a supplied secret always counts as a change.
        const { tlsKeySealed, sshPasswordSealed, ...plain } = command.data;
        const changes: Partial<NodeSettings> = {
          ...changedFields(node.settings, plain),
          ...(tlsKeySealed !== undefined ? { tlsKeySealed } : {}),
          ...(sshPasswordSealed !== undefined ? { sshPasswordSealed } : {}),
        };
        if (Object.keys(changes).length === 0) return [];
        assertValid({ ...node.settings, ...changes });
        const connectionChanged = CONNECTION_FIELDS.some((f) => f in changes);
        return [{ type: 'NodeSettingsChanged', data: { ...changes, connectionChanged } }];
      }
      case 'RecordConnectionCheck': {
        const node = active(state);
        const { ok, error, facts, onlyOnChange } = command.data;
        const status = ok ? 'connected' : 'failed';
        const cardFacts = (f: EngineFactsRecord | null | undefined) => JSON.stringify([f?.gpuInventory ?? null, f?.hamiCore ?? null, f?.agentVersion ?? null, f?.diskBytes ?? null]);
        const inventoryChanged = ok && cardFacts(facts) !== cardFacts(node.connection.facts);
        if (onlyOnChange && node.connection.status === status && node.connection.error === error && !inventoryChanged) return [];
        return [{
          type: 'NodeConnectionChecked',
          data: { status, error: ok ? null : error, checkedAt: command.metadata.now, facts: ok ? facts : node.connection.facts },
        }];
      }
      case 'DeleteNode': {
        const node = active(state);
        assertNotInUse('node', command.data.liveInstances);
        return [{ type: 'NodeDeleted', data: { nodeId: node.nodeId } }];
      }
      case 'ReserveCapacity': {
        const node = active(state);
        const held = node.reservations[command.data.instanceId];
        if (held && !held.computeReleased) return [];
        // Taking back what a stop gave back: the same cards, checked against everybody else's.
        const { [command.data.instanceId]: _, ...others } = node.reservations;
        const why = reservationProblem(ledgerOf({ ...node, reservations: others }), command.data);
        if (why) throw new ConflictError('NO_CAPACITY', `Node ${node.settings.name} cannot take this instance: ${why}.`);
        return [{ type: 'NodeCapacityReserved', data: command.data }];
      }
      case 'ReleaseCapacity': {
        if (state.status === 'none' || !state.reservations[command.data.instanceId]) return [];
        return [{ type: 'NodeCapacityReleased', data: { instanceId: command.data.instanceId } }];
      }
      case 'ReleaseCompute': {
        const held = state.status === 'none' ? undefined : state.reservations[command.data.instanceId];
        if (!held || held.computeReleased) return [];
        return [{ type: 'NodeComputeReleased', data: { instanceId: command.data.instanceId } }];
      }
      case 'IssueJoinToken': {
        const node = active(state);
        if (!node.settings.agentPort) throw new ConflictError('NOT_AN_AGENT_NODE', `Node ${node.settings.name} is reached through its engine's own endpoint, not the node agent: join commands are for nodes added with the agent.`);
        return [{ type: 'NodeJoinTokenIssued', data: { ...command.data, issuedAt: command.metadata.now } }];
      }
      case 'RevokeJoinToken': {
        const node = active(state);
        const token = node.join.tokens[command.data.tokenId];
        if (!token) throw new NotFoundError('Join token');
        if (token.revokedAt || token.usedAt) return [];
        return [{ type: 'NodeJoinTokenRevoked', data: { tokenId: token.tokenId, revokedAt: command.metadata.now } }];
      }
      case 'CompleteJoin': {
        active(state);
        const { hash, agent, ...connection } = command.data;
        const token = liveJoinToken(state, hash, command.metadata.now);
        return [{ type: 'NodeJoined', data: { tokenId: token.tokenId, ...connection, agent: { ...agent, joinedAt: command.metadata.now, rotatedAt: null } } }];
      }
      case 'RecordAgentRotation': {
        const node = active(state);
        if (!node.join.agent) throw new ConflictError('AGENT_NOT_JOINED', `No agent has joined node ${node.settings.name} yet.`);
        return [{ type: 'NodeAgentCertificatesRotated', data: { ...command.data, rotatedAt: command.metadata.now } }];
      }
      default:
        return assertNever(command);
    }
  },
  evolve(state, event) {
    switch (event.type) {
      case 'NodeRegistered': {
        const { nodeId, ...settings } = event.data;
        return { status: 'active', nodeId, settings, connection: UNKNOWN, reservations: {}, join: NO_JOIN };
      }
      case 'NodeSettingsChanged': {
        if (state.status === 'none') return state;
        const { connectionChanged, ...changes } = event.data;
        return {
          ...state,
          settings: { ...state.settings, ...changes },
          connection: connectionChanged ? { ...UNKNOWN, facts: state.connection.facts } : state.connection,
        };
      }
      case 'NodeConnectionChecked':
        return state.status === 'none' ? state : { ...state, connection: { ...event.data } };
      case 'NodeDeleted':
        return state.status === 'none' ? state : { ...state, status: 'deleted' };
      case 'NodeCapacityReserved':
        return state.status === 'none' ? state : { ...state, reservations: { ...state.reservations, [event.data.instanceId]: event.data } };
      case 'NodeCapacityReleased': {
        if (state.status === 'none') return state;
        const { [event.data.instanceId]: _, ...rest } = state.reservations;
        return { ...state, reservations: rest };
      }
      case 'NodeComputeReleased': {
        const held = state.status === 'none' ? undefined : state.reservations[event.data.instanceId];
        if (state.status === 'none' || !held) return state;
        return { ...state, reservations: { ...state.reservations, [event.data.instanceId]: computeReleased(held) } };
      }
      case 'NodeJoinTokenIssued': {
        if (state.status === 'none') return state;
        const { hash, tokenId, issuedAt, expiresAt } = event.data;
        return withToken(state, { tokenId, hash, issuedAt, expiresAt, revokedAt: null, usedAt: null });
      }
      case 'NodeJoinTokenRevoked': {
        const token = state.status === 'none' ? undefined : state.join.tokens[event.data.tokenId];
        return state.status === 'none' || !token ? state : withToken(state, { ...token, revokedAt: event.data.revokedAt });
      }
      case 'NodeJoined': {
        if (state.status === 'none') return state;
        const { tokenId, agent, ...connection } = event.data;
        const token = state.join.tokens[tokenId];
        const spent = token ? withToken(state, { ...token, usedAt: agent.joinedAt }) : state;
        return {
          ...spent,
          settings: { ...spent.settings, ...connection, dockerTls: true },
          connection: { ...UNKNOWN, facts: spent.connection.facts },
          join: { ...spent.join, agent },
        };
      }
      case 'NodeAgentCertificatesRotated': {
        if (state.status === 'none' || !state.join.agent) return state;
        const { tlsCert, tlsKeySealed, rotatedAt, ...agent } = event.data;
        return {
          ...state,
          settings: { ...state.settings, tlsCert, tlsKeySealed },
          join: { ...state.join, agent: { ...state.join.agent, ...agent, rotatedAt } },
        };
      }
      default:
        return assertNever(event);
    }
  },
};

export interface GpuCard {
  readonly index: number;
  readonly totalMemoryGb: number;
  readonly freeMemoryGb: number;
  /** Discovered cards: the card's own model and UUID (a mixed node has several models). */
  readonly model?: string;
  readonly uuid?: string;
}

/** Capacity a node offers for placement: the form's values, or the engine's report where empty. */
export function nodeCapacity(
  settings: Pick<NodeSettings, 'cpuCores' | 'memoryGb' | 'dataDiskGb' | 'gpuCount' | 'gpuMemoryGb'>,
  facts: EngineFactsRecord | null,
) {
  const gib = 1024 ** 3;
  return {
    cpuCores: settings.cpuCores ?? facts?.cpus ?? null,
    memoryGb: settings.memoryGb ?? (facts ? Math.floor(facts.memoryBytes / gib) : null),
    // The engine reports no disk capacity; without a value from the form, disk is not limited.
    dataDiskGb: settings.dataDiskGb,
    // Discovered cards where the engine could be asked (only those seen on the last read); the
    // form's count and memory where it could not.
    gpus: facts?.gpuInventory?.noDeviceDriver ? [] : facts?.gpuInventory && facts.gpuInventory.cards.length > 0
      ? facts.gpuInventory.cards.filter((c) => c.available).map((c): GpuCard => ({
        index: c.index, totalMemoryGb: c.memoryGb, freeMemoryGb: c.memoryGb, model: c.model, uuid: c.uuid,
      }))
      : Array.from({ length: settings.gpuCount }, (_, index): GpuCard => ({
        index,
        totalMemoryGb: settings.gpuMemoryGb,
        freeMemoryGb: settings.gpuMemoryGb,
      })),
  };
}

/** The node's capacity and what its reservations take, as placement sees it. */
export function ledgerOf(node: Exclude<NodeState, { status: 'none' }>): NodeLedger {
  const capacity = nodeCapacity(node.settings, node.connection.facts);
  const reservations = Object.values(node.reservations);
  const cards = ledgerCards(capacity.gpus, reservations);
  return {
    nodeId: node.nodeId,
    name: node.settings.name,
    listed: node.settings.listed,
    connected: node.connection.status === 'connected',
    gpuModel: node.settings.gpuModel,
    cards,
    cpuCores: capacity.cpuCores,
    memoryGb: capacity.memoryGb,
    dataDiskGb: capacity.dataDiskGb,
    usedCpuCores: reservations.reduce((sum, r) => sum + r.cpuCores, 0),
    usedMemoryGb: reservations.reduce((sum, r) => sum + r.memoryGb, 0),
    usedDataDiskGb: reservations.reduce((sum, r) => sum + r.dataDiskGb, 0),
    hostPorts: hostPortLedger(node.settings, reservations),
    vgpuReady: node.connection.facts?.hamiCore?.present !== false,
  };
}

/** The node's public port range and the host ports its reservations hold. */
export function hostPortLedger(settings: Pick<NodeSettings, 'publicPortMin' | 'publicPortMax'>, reservations: readonly Reservation[]): HostPortLedger {
  const taken = new Set<number>();
  for (const r of reservations) for (const p of r.hostPorts ?? []) taken.add(p.hostPort);
  return { ...publicPortRange(settings), taken };
}

/** Each card with what reservations take on it: vGPU slices add up, a normal instance takes it whole. */
export function ledgerCards(gpus: readonly { index: number; totalMemoryGb: number; model?: string }[], reservations: readonly Reservation[]): CardLedger[] {
  return gpus.map((card) => {
    let slicedMemoryGb = 0;
    let whole = false;
    for (const r of reservations) {
      for (const g of r.gpus) {
        if (g.index !== card.index) continue;
        if (r.vgpu) slicedMemoryGb += g.memoryGb;
        else whole = true;
      }
    }
    return { index: card.index, totalMemoryGb: card.totalMemoryGb, slicedMemoryGb, whole, ...(card.model ? { model: card.model } : {}) };
  });
}

/** What a stopped instance keeps of its reservation: its data disk. */
export function computeReleased(r: Reservation): Reservation {
  return { ...r, gpus: [], cpuCores: 0, memoryGb: 0, computeReleased: true };
}

/** Why a reservation no longer fits the ledger (someone else took the capacity), or null. */
export function reservationProblem(ledger: NodeLedger, r: Reservation): string | null {
  const seen = new Set<number>();
  for (const g of r.gpus) {
    const card = ledger.cards.find((c) => c.index === g.index);
    if (!card) return `it has no GPU ${g.index}`;
    if (seen.has(g.index)) return `GPU ${g.index} is asked for twice`;
    seen.add(g.index);
    if (r.vgpu ? freeMemory(card) < g.memoryGb : card.whole || card.slicedMemoryGb > 0) return `GPU ${g.index} is taken`;
  }
  const over = (capacity: number | null, used: number, wanted: number) => capacity !== null && used + wanted > capacity;
  if (over(ledger.cpuCores, ledger.usedCpuCores, r.cpuCores)) return 'not enough free CPU cores';
  if (over(ledger.memoryGb, ledger.usedMemoryGb, r.memoryGb)) return 'not enough free memory';
  if (over(ledger.dataDiskGb, ledger.usedDataDiskGb, r.dataDiskGb)) return 'not enough free data disk';
  const hostPorts = new Set<number>();
  for (const { hostPort } of r.hostPorts ?? []) {
    if (hostPorts.has(hostPort)) return `host port ${hostPort} is asked for twice`;
    hostPorts.add(hostPort);
    if (hostPort < ledger.hostPorts.min || hostPort > ledger.hostPorts.max) {
      return `host port ${hostPort} is outside its public port range ${ledger.hostPorts.min}–${ledger.hostPorts.max}`;
    }
    if (ledger.hostPorts.taken.has(hostPort)) return `host port ${hostPort} is taken`;
  }
  return null;
}
