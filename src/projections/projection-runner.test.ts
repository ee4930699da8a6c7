import { describe, expect, it } from 'vitest';
import { MemoryReadStore } from '../adapters/readstore/memory.read-store.ts';
import { SqliteEventStore } from '../adapters/eventstore/sqlite.event-store.ts';
import { createLogger } from '../logger.ts';
import { documentProjection, ProjectionRunner } from './projection-runner.ts';

/** Memory read models that claim to be durable and fail to load one checkpoint, as a flaky database would. */
class FlakyDurableStore extends MemoryReadStore {
  override readonly durable = true;
  failOn: string | null = null;
  override async getCheckpoint(projection: string): Promise<number | undefined> {
    if (projection === this.failOn) throw new Error('connection reset');
    return super.getCheckpoint(projection);
  }
}

const counter = (name: string) => documentProjection<{ id: string; n: number }>({
  name, collection: name, idOf: () => 'only', evolve: (doc) => ({ id: 'only', n: (doc?.n ?? 0) + 1 }),
});

describe('ProjectionRunner', () => {
  it('saves no checkpoint from a start that failed before loading them all (no reset to 0)', async () => {
    const events = new SqliteEventStore(':memory:');
    const store = new FlakyDurableStore();
    for (const [name, position] of [['a', 1000], ['b', 900], ['c', 800]] as const) await store.setCheckpoint(name, position);
    store.failOn = 'b';
    const runner = new ProjectionRunner(events, store, [counter('a'), counter('b'), counter('c')], createLogger('silent'));
    await expect(runner.start()).rejects.toThrow(/connection reset/);
    await runner.stop();
    store.failOn = null;
    expect([await store.getCheckpoint('a'), await store.getCheckpoint('b'), await store.getCheckpoint('c')]).toEqual([1000, 900, 800]);
    await events.close();
  });
});
