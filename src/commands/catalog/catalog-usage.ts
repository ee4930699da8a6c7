import type { ReadStore } from '../../ports/read-store.port.ts';
import { INSTANCES } from '../../projections/instances.projection.ts';

/** How many live instances use an image, spec or node: deleting one of those is refused. */
export function liveInstancesUsing(store: ReadStore, field: 'imageId' | 'specId' | 'nodeId', id: string): Promise<number> {
  // Deleted instances leave the read model, so every document here is a live instance.
  return store.collection<{ id: string }>(INSTANCES).count({ [field]: id });
}
