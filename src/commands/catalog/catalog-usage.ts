import type { ReadStore } from '../../ports/read-store.port.ts';

/** The read model of instances (built by the instance slice); deleted instances leave it. */
export const INSTANCES = 'instances';

/** How many live instances use an image, spec or node: deleting one of those is refused. */
export function liveInstancesUsing(store: ReadStore, field: 'imageId' | 'specId' | 'nodeId', id: string): Promise<number> {
  return store.collection<{ id: string }>(INSTANCES).count({ [field]: id });
}
