import { describe, expect, it } from 'vitest';
import { SqliteEventStore } from '../adapters/eventstore/sqlite.event-store.ts';
import type { Command, Decider, DomainEvent } from '../domain/shared/decider.ts';
import { ConflictError } from '../domain/shared/errors.ts';
import type { AppendResult, EventStore, ExpectedRevision, NewEvent } from '../ports/event-store.port.ts';
import { CommandBus } from './command-bus.ts';

type Add = Command<'Add', { n: number }>;
type Added = DomainEvent<'Added', { n: number }>;
const counter: Decider<Add, { total: number }, Added> = {
  initialState: () => ({ total: 0 }),
  decide: (c) => (c.data.n === 0 ? [] : [{ type: 'Added', data: { n: c.data.n } }]),
  evolve: (s, e) => ({ total: s.total + e.data.n }),
};

describe('command bus', () => {
  it('appends with metadata of who, when and why, and returns the new state', async () => {
    const store = new SqliteEventStore(':memory:');
    const bus = new CommandBus(store);
    const r = await bus.execute(counter, 'c-1', { type: 'Add', data: { n: 2 } }, { userId: 'u1', now: '2026-01-01T00:00:00.000Z', correlationId: 'req-1', clientIp: '10.0.0.1' });
    expect(r.state).toEqual({ total: 2 });
    const [event] = await store.readStream('c-1');
    expect(event!.metadata).toEqual({ time: '2026-01-01T00:00:00.000Z', userId: 'u1', correlationId: 'req-1', clientIp: '10.0.0.1' });
  });

  it('appends nothing when the decider decides nothing', async () => {
    const store = new SqliteEventStore(':memory:');
    const r = await new CommandBus(store).execute(counter, 'c-1', { type: 'Add', data: { n: 0 } });
    expect(r.position).toBeUndefined();
    expect(await store.headPosition()).toBeUndefined();
  });

  it('folds appends made by another writer after its cached state', async () => {
    const store = new SqliteEventStore(':memory:');
    const a = new CommandBus(store);
    const b = new CommandBus(store);
    await a.execute(counter, 'c-1', { type: 'Add', data: { n: 1 } });
    await b.execute(counter, 'c-1', { type: 'Add', data: { n: 10 } });
    const r = await a.execute(counter, 'c-1', { type: 'Add', data: { n: 100 } });
    expect(r.state.total).toBe(111);
  });

  it('retries on a concurrent change and then answers 409 CONCURRENT_CHANGE', async () => {
    const inner = new SqliteEventStore(':memory:');
    let interfere = 2;
    // A store where another writer sneaks in before each of our appends.
    const racing: EventStore = Object.assign(Object.create(inner) as EventStore, {
      async append(stream: string, events: readonly NewEvent[], expected: ExpectedRevision): Promise<AppendResult> {
        if (interfere-- > 0) await inner.append(stream, [{ type: 'Added', data: { n: 1000 }, metadata: { time: 'x' } }], 'any');
        return inner.append(stream, events, expected);
      },
    });
    const bus = new CommandBus(racing, { maxAttempts: 3 });
    const r = await bus.execute(counter, 'c-1', { type: 'Add', data: { n: 1 } });
    expect(r.state.total).toBe(2001);

    interfere = 10;
    await expect(bus.execute(counter, 'c-1', { type: 'Add', data: { n: 1 } })).rejects.toSatisfy(
      (err) => err instanceof ConflictError && err.code === 'CONCURRENT_CHANGE',
    );
  });
});
