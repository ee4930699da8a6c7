import type { Command, Decider, DomainEvent } from '../shared/decider.ts';
import { assertNever } from '../shared/decider.ts';
import { ConflictError, NotFoundError, ValidationError } from '../shared/errors.ts';
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
}

export const DEFAULT_HAMI_CORE_DIR = '/root/HAMi-core/build';

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
  readonly nvidiaRuntime: boolean;
  readonly runtimes: readonly string[];
}

export type DockerStatus = 'connected' | 'failed' | 'unknown';

export interface ConnectionState {
  readonly status: DockerStatus;
  readonly error: string | null;
  readonly checkedAt: string | null;
  readonly facts: EngineFactsRecord | null;
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
  | DomainEvent<'NodeDeleted', { nodeId: string }>;

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
  | Command<'DeleteNode', { liveInstances: number }>;

export type NodeState =
  | { readonly status: 'none' }
  | {
      readonly status: 'active' | 'deleted';
      readonly nodeId: string;
      readonly settings: NodeSettings;
      readonly connection: ConnectionState;
    };

export const nodeStream = (nodeId: string) => `node-${nodeId}`;

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
  return problems;
}

function assertValid(settings: NodeSettings): void {
  const problems = nodeProblems(settings);
  if (Object.keys(problems).length > 0) throw new ValidationError(problems, 'The node settings break a rule.');
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
        if (onlyOnChange && node.connection.status === status && node.connection.error === error) return [];
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
      default:
        return assertNever(command);
    }
  },
  evolve(state, event) {
    switch (event.type) {
      case 'NodeRegistered': {
        const { nodeId, ...settings } = event.data;
        return { status: 'active', nodeId, settings, connection: UNKNOWN };
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
      default:
        return assertNever(event);
    }
  },
};

export interface GpuCard {
  readonly index: number;
  readonly totalMemoryGb: number;
  readonly freeMemoryGb: number;
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
    gpus: Array.from({ length: settings.gpuCount }, (_, index): GpuCard => ({
      index,
      totalMemoryGb: settings.gpuMemoryGb,
      freeMemoryGb: settings.gpuMemoryGb,
    })),
  };
}
