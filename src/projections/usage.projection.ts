import type { InstanceEvent } from '../domain/instance/instance.decider.ts';
import type { NodeEvent } from '../domain/catalog/node.decider.ts';
import type { SpecEvent } from '../domain/catalog/spec.decider.ts';
import { applyUsageChange, type UsageChange, type UsageRecord } from '../domain/usage/metering.ts';
import type { RecordedEvent } from '../ports/event-store.port.ts';
import type { ReadStore } from '../ports/read-store.port.ts';
import type { Projection } from './projection-runner.ts';

export const USAGE = 'usage';
const PRICES = 'usage_prices';
const NODES_UP = 'usage_nodes';

interface Price {
  readonly id: string;
  readonly pricePerHour: number;
}
interface NodeUp {
  readonly id: string;
  readonly up: boolean;
}

/**
 * Billed intervals per instance (kept after deletion: the bill outlives the instance). Node
 * outages and price changes touch every instance on that node or spec.
 */
export const usageProjection: Projection = {
  name: 'usage',
  collections: [USAGE, PRICES, NODES_UP],
  async setup(store) {
    await store.collection(USAGE).ensureIndex({ nodeId: 1 });
    await store.collection(USAGE).ensureIndex({ specId: 1 });
  },
  apply(recorded, store) {
    return USAGE_EVENTS.has(recorded.type) ? applyUsage(recorded, store) : undefined;
  },
};

/** The events that touch a bill; every other event passes without an await. */
const USAGE_EVENTS: ReadonlySet<string> = new Set<(InstanceEvent | NodeEvent | SpecEvent)['type']>([
  'SpecCreated', 'SpecUpdated', 'NodeConnectionChecked', 'InstanceRequested', 'InstancePlaced', 'InstanceStateObserved',
  'InstanceProvisioningFailed', 'InstanceContainerVanished', 'InstanceDeleted', 'InstanceGpuModeChanged',
]);

async function applyUsage(recorded: RecordedEvent, store: ReadStore): Promise<void> {
  const at = recorded.metadata.time;
  const usage = store.collection<UsageRecord>(USAGE);
  const change = async (id: string, patch: UsageChange) => {
    const record = await usage.get(id);
    if (!record || record._position >= recorded.position) return;
    const { _position: _, ...current } = record;
    await usage.put(applyUsageChange(current, at, patch), recorded.position);
  };
  const event = recorded as RecordedEvent & (InstanceEvent | NodeEvent | SpecEvent);
  const streamId = recorded.stream.slice(recorded.stream.indexOf('-') + 1);
  switch (event.type) {
    case 'SpecCreated':
      await store.collection<Price>(PRICES).put({ id: event.data.specId, pricePerHour: event.data.pricePerHour }, recorded.position);
      return;
    case 'SpecUpdated': {
      const { pricePerHour, noGpuPricePerHour } = event.data;
      if (pricePerHour !== undefined) await store.collection<Price>(PRICES).put({ id: streamId, pricePerHour }, recorded.position);
      // Instances in 无卡模式 go by the no-GPU price, the others by the spec's own.
      for (const r of await usage.find({ specId: streamId, deleted: false })) {
        const price = r.gpuMode === 'none' ? noGpuPricePerHour ?? undefined : pricePerHour;
        if (price !== undefined) await change(r.id, { pricePerHour: price });
      }
      return;
    }
    case 'NodeConnectionChecked': {
      const up = event.data.status === 'connected';
      await store.collection<NodeUp>(NODES_UP).put({ id: streamId, up }, recorded.position);
      for (const r of await usage.find({ nodeId: streamId, deleted: false })) await change(r.id, { nodeUp: up });
      return;
    }
    case 'InstanceRequested': {
      const { instanceId, ownerId, ownerName, name, specId, spec } = event.data;
      const price = (await store.collection<Price>(PRICES).get(specId))?.pricePerHour ?? spec.pricePerHour;
      await usage.put({
        id: instanceId, ownerId, ownerName, name, specId, nodeId: '', running: false, nodeUp: true, deleted: false, pricePerHour: price, intervals: [],
      }, recorded.position);
      return;
    }
    case 'InstancePlaced': {
      const node = await store.collection<NodeUp>(NODES_UP).get(event.data.nodeId);
      await change(streamId, { nodeId: event.data.nodeId, nodeUp: node?.up ?? true, gpus: event.data.gpuShare ?? event.data.gpus.length });
      return;
    }
    case 'InstanceGpuModeChanged':
      await change(streamId, { pricePerHour: event.data.pricePerHour, gpus: event.data.gpuShare, gpuMode: event.data.mode });
      return;
    case 'InstanceStateObserved':
      await change(streamId, { running: event.data.status === 'running' });
      return;
    case 'InstanceProvisioningFailed':
    case 'InstanceContainerVanished':
      await change(streamId, { running: false });
      return;
    case 'InstanceDeleted':
      await change(streamId, { running: false, deleted: true });
      return;
    default:
      return;
  }
}

export async function usageRecords(store: ReadStore, ownerId?: string): Promise<UsageRecord[]> {
  return store.collection<UsageRecord>(USAGE).find(ownerId ? { ownerId } : {}, { sort: { ownerName: 1, name: 1 } });
}
