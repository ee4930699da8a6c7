import { randomUUID } from 'node:crypto';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { databaseFromUrl, openMongoReadStore } from '../src/adapters/readstore/mongo.read-store.ts';
import type { ReadStore } from '../src/ports/read-store.port.ts';
import { readStoreContract } from './contract/read-store.contract.ts';
import { describeWithService } from './support/services.ts';

const url = process.env.TIANQI_MONGO_URL ?? '';
// Every run gets its own database, dropped afterwards, so runs (and parallel files) never meet.
const database = `tianqi_test_${randomUUID().replaceAll('-', '').slice(0, 12)}`;

interface Gpu {
  id: string;
  name: string;
  node?: string;
  memory?: number;
}

describeWithService(
  'MongoDB',
  Boolean(url),
  'set TIANQI_MONGO_URL to a MongoDB or FerretDB server (e.g. mongodb://127.0.0.1:27017/)',
  'MongoReadStore',
  () => {
    let raw: MongoClient;
    beforeAll(async () => {
      raw = await new MongoClient(url, { serverSelectionTimeoutMS: 5_000 }).connect();
    });
    afterAll(async () => {
      await raw?.db(database).dropDatabase();
      await raw?.close();
    });

    readStoreContract(
      'MongoDB',
      () => openMongoReadStore(url, { database }),
      () => openMongoReadStore(url, { database }),
    );

    describe('MongoDB specifics', () => {
      let store: ReadStore;
      beforeAll(async () => {
        store = await openMongoReadStore(url, { database, collectionPrefix: 'spec_' });
      });
      afterAll(async () => {
        await store?.close();
      });
      const name = () => `gpus_${randomUUID().slice(0, 8)}`;

      it('stores _id = id with _position in <prefix><name>, and checkpoints in <prefix>checkpoints', async () => {
        const n = name();
        await store.collection<Gpu>(n).put({ id: 'g1', name: 'A100' }, 7);
        await store.setCheckpoint('gpus', 7);
        const db = raw.db(database);
        expect(await db.collection(`spec_${n}`).find().toArray()).toEqual([{ _id: 'g1', name: 'A100', _position: 7 }]);
        expect(await db.collection<{ _id: string }>('spec_checkpoints').findOne({ _id: 'gpus' })).toEqual({
          _id: 'gpus',
          position: 7,
        });
        expect(() => store.collection('checkpoints')).toThrow(/reserved/);
      });

      it('never exposes _id, maps id in nested filters and sorts, and omits undefined fields', async () => {
        const c = store.collection<Gpu>(name());
        await c.put({ id: 'a', name: 'x', node: undefined }, 1);
        await c.put({ id: 'b', name: 'y', node: 'n1' }, 2);
        await c.put({ id: 'c', name: 'z', node: 'n2' }, 3);
        expect(await c.get('a')).toEqual({ id: 'a', name: 'x', _position: 1 });
        expect(Object.keys((await c.get('a'))!)).not.toContain('_id');
        expect(
          (await c.find({ $or: [{ id: 'a' }, { node: 'n2' }] }, { sort: { id: -1 } })).map((d) => d.id),
        ).toEqual(['c', 'a']);
        expect((await c.find({ id: { $gte: 'b' } }, { sort: { id: -1 }, limit: 1 })).map((d) => d.id)).toEqual(['c']);
        expect(await c.count({ $and: [{ id: { $ne: 'a' } }, { name: { $in: ['x', 'y'] } }] })).toBe(1);
        // A document read back and put again keeps the new position, not the stale `_position` it carries.
        const b = (await c.get('b'))!;
        expect(await c.put({ ...b, name: 'y2' }, 5)).toBe(true);
        expect(await c.get('b')).toEqual({ id: 'b', name: 'y2', node: 'n1', _position: 5 });
      });

      it('ends with the newest of many concurrent puts of one id from two clients', async () => {
        const n = name();
        const other = await openMongoReadStore(url, { database, collectionPrefix: 'spec_' });
        try {
          const stores = [store, other];
          const positions = Array.from({ length: 24 }, (_, i) => i + 1);
          const results = await Promise.all(
            positions.map((p) => stores[p % 2]!.collection<Gpu>(n).put({ id: 'hot', name: `at-${p}` }, p)),
          );
          expect(results[results.length - 1]).toBe(true);
          expect(await store.collection<Gpu>(n).get('hot')).toEqual({ id: 'hot', name: 'at-24', _position: 24 });
          // Replaying them all (again concurrently) changes nothing.
          const replays = await Promise.all(
            positions.map((p) => stores[p % 2]!.collection<Gpu>(n).put({ id: 'hot', name: `replay-${p}` }, p)),
          );
          expect(replays.every((r) => r === false)).toBe(true);
          expect((await store.collection<Gpu>(n).get('hot'))!.name).toBe('at-24');
        } finally {
          await other.close();
        }
      });

      it('throws on a user unique index conflict, but a replay of an already-seen write does not', async () => {
        const c = store.collection<Gpu>(name());
        await c.ensureIndex({ name: 1 }, { unique: true });
        await c.ensureIndex({ id: 1 }); // the _id index: nothing to create
        await c.put({ id: 'a', name: 'A100' }, 1);
        await c.put({ id: 'b', name: 'H100' }, 2);
        // b is older than 3, so this really writes, and the name index refuses it (FerretDB 1.24
        // reports a refused update as an internal "UNIQUE constraint failed", not as E11000).
        await expect(c.put({ id: 'b', name: 'A100' }, 3)).rejects.toThrow(/E11000|duplicate key|UNIQUE constraint/);
        // b has seen 2: replaying that event is a no-op, whatever the document would collide with.
        expect(await c.put({ id: 'b', name: 'A100' }, 2)).toBe(false);
        expect((await c.get('b'))!.name).toBe('H100');
        expect(await c.put({ id: 'a', name: 'A800' }, 4)).toBe(true);
        expect(await c.put({ id: 'b', name: 'A100' }, 5)).toBe(true);
      });

      it('drops only the collections with its own prefix', async () => {
        const mine = store.collection<Gpu>('kept_apart');
        const other = await openMongoReadStore(url, { database, collectionPrefix: 'spec2_' });
        try {
          await mine.put({ id: 'a', name: 'mine' }, 1);
          await other.collection<Gpu>('kept_apart').put({ id: 'a', name: 'theirs' }, 1);
          await other.setCheckpoint('p', 1);
          await other.dropAll();
          expect((await mine.get('a'))!.name).toBe('mine');
          expect(await other.collection<Gpu>('kept_apart').get('a')).toBeNull();
          expect(await other.getCheckpoint('p')).toBeUndefined();
        } finally {
          await other.close();
        }
      });
    });
  },
);

describe('MongoReadStore without a server', () => {
  it('fails fast with a clear error when nothing answers', async () => {
    const started = Date.now();
    await expect(
      openMongoReadStore('mongodb://someone:secret@127.0.0.1:1/x', { serverSelectionTimeoutMS: 300 }),
    ).rejects.toThrow(/cannot reach MongoDB read store at mongodb:\/\/someone:\*\*\*@127\.0\.0\.1:1\/x/);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('rejects a URL that is not a MongoDB URL', async () => {
    await expect(openMongoReadStore('http://127.0.0.1:27017/')).rejects.toThrow(/invalid MongoDB URL/);
  });

  it('takes the database from the URL', () => {
    expect(databaseFromUrl('mongodb://127.0.0.1:27017/')).toBe('');
    expect(databaseFromUrl('mongodb://127.0.0.1:27017')).toBe('');
    expect(databaseFromUrl('mongodb://u:p%2Fq@h1:1,h2:2/gpu%20db?replicaSet=rs0')).toBe('gpu db');
    expect(databaseFromUrl('mongodb+srv://cluster.example.com/tq')).toBe('tq');
  });
});
