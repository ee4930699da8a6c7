import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoClient } from 'mongodb';
import { afterAll, describe, expect, it } from 'vitest';
import { SqliteEventStore } from '../src/adapters/eventstore/sqlite.event-store.ts';
import { MemoryReadStore } from '../src/adapters/readstore/memory.read-store.ts';
import { openMongoReadStore } from '../src/adapters/readstore/mongo.read-store.ts';
import { projections } from '../src/app.ts';
import { createLogger } from '../src/logger.ts';
import type { EventStore } from '../src/ports/event-store.port.ts';
import type { ReadStore } from '../src/ports/read-store.port.ts';
import { ForeignReadModelsError, LOG_IDENTITY, checkLogIdentity } from '../src/projections/log-identity.ts';
import { rebuildReadModels } from '../src/projections/rebuild.ts';
import { describeWithService } from './support/services.ts';

const url = process.env.TIANQI_MONGO_URL ?? '';
const names = projections.map((p) => p.name);
const time = '2026-01-01T00:00:00.000Z';

describe('log identity (memory read models)', () => {
  it('has nothing to check: in-memory read models are rebuilt from the log at every start', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tianqi-identity-'));
    const log = new SqliteEventStore(join(dir, 'events.db'));
    try {
      await log.append('user-1', [{ type: 'Noted', data: {}, metadata: { time } }], 'any');
      expect(await checkLogIdentity(log, new MemoryReadStore(), names, { eventStore: 'log', readStore: 'memory' })).toBe('not-durable');
    } finally {
      await log.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describeWithService('MongoDB', Boolean(url), 'set TIANQI_MONGO_URL (e.g. mongodb://127.0.0.1:27017/)', 'log identity of MongoDB read models', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tianqi-identity-'));
  const databases: string[] = [];
  const opened: (EventStore | ReadStore)[] = [];
  const database = () => {
    const name = `tianqi_test_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    databases.push(name);
    return name;
  };
  const log = async (events = 1) => {
    const store = new SqliteEventStore(join(dir, `${randomUUID()}.db`));
    opened.push(store);
    for (let i = 0; i < events; i++) await store.append(`user-${i}`, [{ type: 'Noted', data: { i }, metadata: { time } }], 'any');
    return store;
  };
  const mongo = async (name: string) => {
    const store = await openMongoReadStore(url, { database: name });
    opened.push(store);
    return store;
  };
  const where = (name: string) => ({ eventStore: `the SQLite event log ${dir}/this.db`, readStore: `MongoDB database "${name}" at ${url}` });

  afterAll(async () => {
    for (const store of opened) await store.close();
    const raw = await MongoClient.connect(url);
    for (const name of databases) await raw.db(name).dropDatabase();
    await raw.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lets an empty database adopt the log, then accepts the same log again', async () => {
    const name = database();
    const events = await log(3);
    const store = await mongo(name);
    expect(await checkLogIdentity(events, store, names, where(name))).toBe('adopted');
    const [first] = await events.readAll({ limit: 1 });
    expect(await store.collection(LOG_IDENTITY).get('event-log')).toMatchObject({ firstEventId: first!.id, firstEventTime: time });
    expect(await checkLogIdentity(events, await mongo(name), names, where(name))).toBe('matches');
  });

  it('waits for the first event when both the log and the database are empty', async () => {
    const name = database();
    const events = await log(0);
    const store = await mongo(name);
    expect(await checkLogIdentity(events, store, names, where(name))).toBe('pending');
    await events.append('user-1', [{ type: 'Noted', data: {}, metadata: { time } }], 'any');
    expect(await checkLogIdentity(events, store, names, where(name))).toBe('adopted');
  });

  it('refuses read models built from another log, saying which, where, and what to do', async () => {
    const name = database();
    const built = await log(2);
    await checkLogIdentity(built, await mongo(name), names, where(name));
    const [theirs] = await built.readAll({ limit: 1 });
    const other = await log(2);
    const [ours] = await other.readAll({ limit: 1 });

    const refused = await checkLogIdentity(other, await mongo(name), names, where(name)).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(ForeignReadModelsError);
    const message = (refused as Error).message;
    expect(message).toContain(`MongoDB database "${name}"`);
    expect(message).toContain(theirs!.id);
    expect(message).toContain(ours!.id);
    expect(message).toContain('the SQLite event log');
    expect(message).toContain('TIANQI_MONGO_URL');
    expect(message).toContain('npm run rebuild');

    // A fresh, empty log pointed at the database is refused too.
    await expect(checkLogIdentity(await log(0), await mongo(name), names, where(name))).rejects.toThrow(/no events yet/);
  });

  it('accepts the other log once `npm run rebuild` replayed it into the database', async () => {
    const name = database();
    await checkLogIdentity(await log(2), await mongo(name), names, where(name));
    const other = await log(4);
    const store = await mongo(name);
    await rebuildReadModels(other, store, projections, createLogger('silent'));
    expect(await checkLogIdentity(other, store, names, where(name))).toBe('matches');
  });

  it('adopts a database from before identities only when its checkpoints fit the log', async () => {
    const name = database();
    const store = await mongo(name);
    await store.setCheckpoint('users', 50);
    await expect(checkLogIdentity(await log(10), store, names, where(name))).rejects.toThrow(/"users" checkpoint is at position 50, beyond the last event of this log \(10\)/);
    expect(await checkLogIdentity(await log(60), store, names, where(name))).toBe('adopted');
  });
});
