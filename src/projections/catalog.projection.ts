import type { ImageFields } from '../domain/catalog/image.decider.ts';
import type { AgentRecord, ConnectionState, GpuCard, JoinToken, NodeEvent, NodeSettings, Reservation } from '../domain/catalog/node.decider.ts';
import { computeReleased, ledgerCards, nodeCapacity } from '../domain/catalog/node.decider.ts';
import { freeMemory } from '../domain/instance/placement.ts';
import type { SpecFields } from '../domain/catalog/spec.decider.ts';
import type { RecordedEvent } from '../ports/event-store.port.ts';
import { documentProjection } from './projection-runner.ts';

const idAfter = (prefix: string) => (event: RecordedEvent) =>
  event.stream.startsWith(prefix) ? event.stream.slice(prefix.length) : undefined;

export interface ImageView extends ImageFields {
  readonly id: string;
  readonly nameLower: string;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export interface SpecView extends SpecFields {
  readonly id: string;
  readonly nameLower: string;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** A node as admins see it: secrets are reduced to whether they are set. */
export interface NodeView extends Omit<NodeSettings, 'tlsKeySealed' | 'sshPasswordSealed'> {
  readonly id: string;
  readonly nameLower: string;
  readonly hasTlsKey: boolean;
  readonly hasSshPassword: boolean;
  readonly dockerStatus: ConnectionState['status'];
  readonly dockerError: string | null;
  readonly dockerCheckedAt: string | null;
  readonly engine: ConnectionState['facts'];
  /** Placement capacity: from the form or, where empty, from the engine's report. */
  readonly capacity: { cpuCores: number | null; memoryGb: number | null; dataDiskGb: number | null };
  /** What live instances hold on the node. */
  readonly used: { cpuCores: number; memoryGb: number; dataDiskGb: number; publicPorts: number };
  readonly reservations: readonly Reservation[];
  /** Per card: total and free memory (a card a normal GPU instance holds has none free). */
  readonly gpus: readonly GpuCard[];
  /** Nodes reached through the node agent: the agent as it joined, and the join tokens (their hashes stay on the stream). */
  readonly join?: { readonly agent: AgentRecord | null; readonly tokens: readonly Omit<JoinToken, 'hash'>[] };
  readonly createdAt: string;
  readonly updatedAt: string;
}

export const IMAGES = 'images';
export const SPECS = 'specs';
export const NODES = 'nodes';

/**
 * Images and specs share one life: created with all fields, updated with the changed ones, deleted.
 * `kind` is the event-type prefix (`Image`, `Spec`) and the stream prefix in lower case.
 */
function catalogEntryProjection<F extends { name: string }>(kind: 'Image' | 'Spec', collection: string) {
  const idField = `${kind.toLowerCase()}Id`;
  return documentProjection<F & { id: string; nameLower: string; createdAt: string; updatedAt: string }>({
    name: collection,
    collection,
    idOf: idAfter(`${kind.toLowerCase()}-`),
    evolve(doc, event) {
      const at = event.metadata.time;
      switch (event.type) {
        case `${kind}Created`: {
          const { [idField]: id, ...rest } = event.data as F & Record<string, string>;
          const fields = rest as unknown as F;
          return { ...fields, id: id!, nameLower: fields.name.toLowerCase(), createdAt: at, updatedAt: at };
        }
        case `${kind}Updated`: {
          const changes = event.data as Partial<F>;
          return doc && { ...doc, ...changes, nameLower: (changes.name ?? doc.name).toLowerCase(), updatedAt: at };
        }
        case `${kind}Deleted`:
          return null;
        default:
          return undefined;
      }
    },
  });
}

export const imagesProjection = catalogEntryProjection<ImageFields>('Image', IMAGES);
export const specsProjection = catalogEntryProjection<SpecFields>('Spec', SPECS);

function withCapacity(doc: Omit<NodeView, 'capacity' | 'gpus' | 'used'>): NodeView {
  const { gpus, ...capacity } = nodeCapacity(doc, doc.engine);
  const cards = ledgerCards(gpus, doc.reservations);
  const sum = (pick: (r: Reservation) => number) => doc.reservations.reduce((total, r) => total + pick(r), 0);
  return {
    ...doc,
    capacity,
    used: {
      cpuCores: sum((r) => r.cpuCores), memoryGb: sum((r) => r.memoryGb), dataDiskGb: sum((r) => r.dataDiskGb),
      publicPorts: sum((r) => r.hostPorts?.length ?? 0),
    },
    gpus: cards.map((c, i) => ({
      index: c.index, totalMemoryGb: c.totalMemoryGb, freeMemoryGb: freeMemory(c),
      ...(c.model ? { model: c.model } : {}), ...(gpus[i]?.uuid ? { uuid: gpus[i]!.uuid } : {}),
    })),
  };
}

export const nodesProjection = documentProjection<NodeView>({
  name: 'nodes',
  collection: NODES,
  idOf: idAfter('node-'),
  evolve(doc, recorded) {
    const event = recorded as RecordedEvent & NodeEvent;
    const at = recorded.metadata.time;
    switch (event.type) {
      case 'NodeRegistered': {
        const { nodeId, tlsKeySealed, sshPasswordSealed, ...settings } = event.data;
        return withCapacity({
          id: nodeId,
          ...settings,
          nameLower: settings.name.toLowerCase(),
          hasTlsKey: Boolean(tlsKeySealed),
          hasSshPassword: Boolean(sshPasswordSealed),
          dockerStatus: 'unknown',
          dockerError: null,
          dockerCheckedAt: null,
          engine: null,
          reservations: [],
          createdAt: at,
          updatedAt: at,
        });
      }
      case 'NodeSettingsChanged': {
        if (!doc) return undefined;
        const { connectionChanged, tlsKeySealed, sshPasswordSealed, ...changes } = event.data;
        return withCapacity({
          ...doc,
          ...changes,
          nameLower: (changes.name ?? doc.name).toLowerCase(),
          hasTlsKey: tlsKeySealed === undefined ? doc.hasTlsKey : Boolean(tlsKeySealed),
          hasSshPassword: sshPasswordSealed === undefined ? doc.hasSshPassword : Boolean(sshPasswordSealed),
          ...(connectionChanged ? { dockerStatus: 'unknown' as const, dockerError: null, dockerCheckedAt: null } : {}),
          updatedAt: at,
        });
      }
      case 'NodeConnectionChecked': {
        if (!doc) return undefined;
        const { status, error, checkedAt, facts } = event.data;
        return withCapacity({ ...doc, dockerStatus: status, dockerError: error, dockerCheckedAt: checkedAt, engine: facts, updatedAt: at });
      }
      case 'NodeCapacityReserved':
        return doc && withCapacity({ ...doc, reservations: [...doc.reservations.filter((r) => r.instanceId !== event.data.instanceId), event.data], updatedAt: at });
      case 'NodeCapacityReleased':
        return doc && withCapacity({ ...doc, reservations: doc.reservations.filter((r) => r.instanceId !== event.data.instanceId), updatedAt: at });
      case 'NodeComputeReleased':
        return doc && withCapacity({
          ...doc,
          reservations: doc.reservations.map((r) => (r.instanceId === event.data.instanceId ? computeReleased(r) : r)),
          updatedAt: at,
        });
      case 'NodeJoinTokenIssued': {
        if (!doc) return undefined;
        const { hash: _, ...token } = event.data;
        return { ...doc, join: { agent: doc.join?.agent ?? null, tokens: [...(doc.join?.tokens ?? []), { ...token, revokedAt: null, usedAt: null }] }, updatedAt: at };
      }
      case 'NodeJoinTokenRevoked':
        return doc && { ...doc, join: withTokenChange(doc, event.data.tokenId, { revokedAt: event.data.revokedAt }), updatedAt: at };
      case 'NodeJoined': {
        if (!doc) return undefined;
        const { tokenId, agent, tlsKeySealed, ...connection } = event.data;
        return {
          ...doc, ...connection, dockerTls: true, hasTlsKey: Boolean(tlsKeySealed),
          dockerStatus: 'unknown', dockerError: null, dockerCheckedAt: null,
          join: { ...withTokenChange(doc, tokenId, { usedAt: agent.joinedAt }), agent },
          updatedAt: at,
        };
      }
      case 'NodeAgentCertificatesRotated': {
        if (!doc?.join?.agent) return undefined;
        const { tlsCert, tlsKeySealed: _, rotatedAt, ...agent } = event.data;
        return { ...doc, tlsCert, join: { ...doc.join, agent: { ...doc.join.agent, ...agent, rotatedAt } }, updatedAt: at };
      }
      case 'NodeDeleted':
        return null;
      default:
        return undefined;
    }
  },
});

function withTokenChange(doc: NodeView, tokenId: string, change: Partial<Omit<JoinToken, 'hash'>>): NonNullable<NodeView['join']> {
  return {
    agent: doc.join?.agent ?? null,
    tokens: (doc.join?.tokens ?? []).map((t) => (t.tokenId === tokenId ? { ...t, ...change } : t)),
  };
}
