import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ReadStore } from '../../src/ports/read-store.port.ts';

interface Item {
  id: string;
  name: string;
  owner: string;
  size: number;
  tags?: string[];
}

/**
 * One behaviour contract for every ReadStore adapter. `open` returns a store over an empty
 * namespace; `reopen` (for durable stores) a second store over the same data.
 */
export function readStoreContract(
  name: string,
  open: () => Promise<ReadStore>,
  reopen?: (first: ReadStore) => Promise<ReadStore>,
) {
  describe(`ReadStore contract: ${name}`, () => {
    let store: ReadStore;
    beforeAll(async () => {
      store = await open();
    });
    afterAll(async () => {
      await store?.close();
    });
    const items = () => store.collection<Item>(`items_${randomUUID().slice(0, 8)}`);

    it('puts and gets a document with the position it has seen', async () => {
      const c = items();
      expect(await c.put({ id: 'a', name: '甲', owner: 'u1', size: 1 }, 10)).toBe(true);
      expect(await c.get('a')).toEqual({ id: 'a', name: '甲', owner: 'u1', size: 1, _position: 10 });
      expect(await c.get('missing')).toBeNull();
    });

    it('ignores a write from a position the document has already seen', async () => {
      const c = items();
      await c.put({ id: 'a', name: 'new', owner: 'u1', size: 2 }, 20);
      expect(await c.put({ id: 'a', name: 'old', owner: 'u1', size: 1 }, 10)).toBe(false);
      expect(await c.put({ id: 'a', name: 'same', owner: 'u1', size: 1 }, 20)).toBe(false);
      expect((await c.get('a'))!.name).toBe('new');
      expect(await c.put({ id: 'a', name: 'newer', owner: 'u1', size: 3 }, 21)).toBe(true);
      expect((await c.get('a'))!.name).toBe('newer');
    });

    it('deletes only for a newer position', async () => {
      const c = items();
      await c.put({ id: 'a', name: 'x', owner: 'u1', size: 1 }, 5);
      expect(await c.delete('a', 5)).toBe(false);
      expect(await c.get('a')).not.toBeNull();
      expect(await c.delete('a', 6)).toBe(true);
      expect(await c.get('a')).toBeNull();
      expect(await c.delete('a', 7)).toBe(false);
    });

    it('finds with Mongo-style filters, sorts, skips and limits', async () => {
      const c = items();
      await c.put({ id: '1', name: 'gamma', owner: 'u1', size: 30, tags: ['gpu'] }, 1);
      await c.put({ id: '2', name: 'alpha', owner: 'u2', size: 10 }, 2);
      await c.put({ id: '3', name: 'beta', owner: 'u1', size: 20, tags: ['gpu', 'vgpu'] }, 3);
      expect((await c.find({ owner: 'u1' }, { sort: { name: 1 } })).map((d) => d.id)).toEqual(['3', '1']);
      expect((await c.find({ size: { $gte: 20 } }, { sort: { size: -1 } })).map((d) => d.id)).toEqual(['1', '3']);
      expect((await c.find({ name: { $regex: 'ET', $options: 'i' } })).map((d) => d.id)).toEqual(['3']);
      expect((await c.find({ id: { $in: ['1', '2'] } }, { sort: { id: 1 } })).map((d) => d.id)).toEqual(['1', '2']);
      expect((await c.find({ tags: 'vgpu' })).map((d) => d.id)).toEqual(['3']);
      expect((await c.find({}, { sort: { name: 1 }, skip: 1, limit: 1 })).map((d) => d.id)).toEqual(['3']);
      expect(await c.count({ owner: 'u1' })).toBe(2);
      expect(await c.count()).toBe(3);
      expect((await c.findOne({ owner: 'u2' }))!.name).toBe('alpha');
      expect(await c.findOne({ owner: 'nobody' })).toBeNull();
      expect((await c.all()).map((d) => d.id)).toEqual(['1', '2', '3']);
    });

    it('returns copies: changing a returned document does not change the store', async () => {
      const c = items();
      await c.put({ id: 'a', name: 'x', owner: 'u1', size: 1, tags: ['t'] }, 1);
      const got = (await c.get('a'))!;
      (got as { name: string }).name = 'changed';
      got.tags!.push('u');
      expect(await c.get('a')).toMatchObject({ name: 'x', tags: ['t'] });
    });

    it('enforces a unique index', async () => {
      const c = items();
      await c.ensureIndex({ name: 1 }, { unique: true });
      await c.ensureIndex({ name: 1 }, { unique: true });
      await c.put({ id: 'a', name: 'same', owner: 'u1', size: 1 }, 1);
      await expect(c.put({ id: 'b', name: 'same', owner: 'u1', size: 1 }, 2)).rejects.toThrow();
    });

    it('keeps a checkpoint per projection', async () => {
      const p = `proj-${randomUUID()}`;
      expect(await store.getCheckpoint(p)).toBeUndefined();
      await store.setCheckpoint(p, 42);
      await store.setCheckpoint(`${p}-other`, 7);
      expect(await store.getCheckpoint(p)).toBe(42);
      await store.setCheckpoint(p, 43);
      expect(await store.getCheckpoint(p)).toBe(43);
    });

    it('drops every collection and checkpoint', async () => {
      const c = items();
      await c.put({ id: 'a', name: 'x', owner: 'u1', size: 1 }, 1);
      await store.setCheckpoint('dropped', 9);
      await store.dropAll();
      expect(await c.get('a')).toBeNull();
      expect(await store.getCheckpoint('dropped')).toBeUndefined();
    });

    if (reopen) {
      it('keeps documents and checkpoints across a restart', async () => {
        const c = store.collection<Item>('durable_items');
        await c.put({ id: 'a', name: 'kept', owner: 'u1', size: 1 }, 3);
        await store.setCheckpoint('durable', 3);
        const second = await reopen(store);
        try {
          expect((await second.collection<Item>('durable_items').get('a'))!.name).toBe('kept');
          expect(await second.getCheckpoint('durable')).toBe(3);
          expect(second.durable).toBe(true);
        } finally {
          await second.close();
        }
      });
    }
  });
}
