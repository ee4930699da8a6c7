import type { Logger } from 'pino';
import type { EventStore } from '../ports/event-store.port.ts';
import type { ReadStore } from '../ports/read-store.port.ts';
import { adoptLogIdentity } from './log-identity.ts';
import { ProjectionRunner, type Projection } from './projection-runner.ts';

/** Drops every read model and replays the whole log into them. */
export async function rebuildReadModels(
  events: EventStore,
  store: ReadStore,
  projections: readonly Projection[],
  logger: Logger,
): Promise<{ events: number; ms: number }> {
  const started = performance.now();
  await store.dropAll();
  // The rebuilt read models belong to this log from now on.
  const first = (await events.readAll({ limit: 1 }))[0];
  if (first && store.durable) await adoptLogIdentity(store, first);
  const runner = new ProjectionRunner(events, store, projections, logger);
  await runner.start();
  await runner.stop();
  return { events: runner.position, ms: performance.now() - started };
}

/** Every document of every projection's collections, for comparing two stores. */
export async function snapshotReadModels(store: ReadStore, projections: readonly Projection[]) {
  const snapshot: Record<string, unknown[]> = {};
  for (const name of projections.flatMap((p) => p.collections)) snapshot[name] = await store.collection(name).all();
  return snapshot;
}
