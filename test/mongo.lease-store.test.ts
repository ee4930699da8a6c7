import { randomUUID } from 'node:crypto';
import { MongoClient } from 'mongodb';
import { afterAll, describe, expect, it } from 'vitest';
import { openMongoLeaseStore } from '../src/adapters/leases/mongo.lease-store.ts';
import { LeaseKeeper, type LeaseStore } from '../src/ports/lease.port.ts';
import { leaseStoreContract } from './contract/lease-store.contract.ts';
import { describeWithService } from './support/services.ts';

const url = process.env.TIANQI_MONGO_URL ?? '';
// Every run gets its own database, dropped afterwards, so runs (and parallel files) never meet.
const database = `tianqi_test_${randomUUID().replaceAll('-', '').slice(0, 12)}`;

describeWithService(
  'MongoDB',
  Boolean(url),
  'set TIANQI_MONGO_URL to a MongoDB or FerretDB server (e.g. mongodb://127.0.0.1:27017/)',
  'MongoLeaseStore',
  () => {
    afterAll(async () => {
      const raw = await new MongoClient(url, { serverSelectionTimeoutMS: 5_000 }).connect();
      await raw.db(database).dropDatabase();
      await raw.close();
    });

    // Two clients, so that the races run over two connections, as between two replicas.
    leaseStoreContract('MongoDB', (clock) =>
      Promise.all([openMongoLeaseStore(url, { database, now: clock.now }), openMongoLeaseStore(url, { database, now: clock.now })]),
    );

    describe('MongoDB specifics', () => {
      it('keeps one document per lease in `leases`: the current term', async () => {
        const store = await openMongoLeaseStore(url, { database });
        const raw = await new MongoClient(url).connect();
        try {
          const name = `terms-${randomUUID().slice(0, 8)}`;
          expect(await store.acquire(name, 'one', 1_000)).toBe(true);
          await store.release(name, 'one');
          expect(await store.acquire(name, 'two', 1_000)).toBe(true);
          const docs = await raw.db(database).collection('leases').find({ name }).toArray();
          expect(docs).toEqual([expect.objectContaining({ _id: `${name}#2`, name, term: 2, holder: 'two' })]);
        } finally {
          await raw.close();
          await store.close();
        }
      });

      it('lets exactly one of several keepers on separate connections work at any moment, and hands over on stop', async () => {
        const stores: LeaseStore[] = await Promise.all([1, 2, 3].map(() => openMongoLeaseStore(url, { database })));
        const name = `keepers-${randomUUID().slice(0, 8)}`;
        const timing = { ttlMs: 2_000, renewEveryMs: 100 };
        const keepers = stores.map((s, i) => new LeaseKeeper(s, name, `replica-${i}`, timing));
        const holding = new Set<number>();
        let overlaps = 0;
        const subs = keepers.map((k, i) =>
          k.held$.subscribe((held) => {
            if (held) holding.add(i);
            else holding.delete(i);
            if (holding.size > 1) overlaps += 1;
          }),
        );
        try {
          await Promise.all(keepers.map((k) => k.start()));
          await new Promise((r) => setTimeout(r, 1_500));
          expect(holding.size).toBe(1);
          // The holder stops (and releases): another takes over long before the lease would have run out.
          const first = [...holding][0]!;
          const stoppedAt = performance.now();
          await keepers[first]!.stop();
          for (let i = 0; holding.size === 0 && i < 200; i++) await new Promise((r) => setTimeout(r, 10));
          expect(holding.size).toBe(1);
          expect(performance.now() - stoppedAt).toBeLessThan(timing.ttlMs / 2);
          expect(holding.has(first)).toBe(false);
          expect(overlaps).toBe(0);
        } finally {
          subs.forEach((s) => s.unsubscribe());
          await Promise.all(keepers.map((k) => k.stop()));
          await Promise.all(stores.map((s) => s.close()));
        }
      });
    });
  },
);
