import { describe, expect, it, vi } from 'vitest';
import { MemoryReadStore } from '../src/adapters/readstore/memory.read-store.ts';
import { readStoreContract } from './contract/read-store.contract.ts';

readStoreContract('memory', async () => new MemoryReadStore());

describe('memory read store: the projections’ update path', () => {
  interface Doc { id: string; name: string; tags: string[] }
  const setUp = async () => {
    const c = new MemoryReadStore().collection<Doc>('docs');
    await c.ensureIndex({ name: 1 }, { unique: true });
    await c.put({ id: 'a', name: 'alpha', tags: ['x'] }, 1);
    return c;
  };

  it('folds the stored document into the next one, guarded by position', async () => {
    const c = await setUp();
    expect(await c.update!('a', 2, (doc) => ({ ...doc!, tags: [...doc!.tags, 'y'] }))).toBe(true);
    expect(await c.get('a')).toEqual({ id: 'a', name: 'alpha', tags: ['x', 'y'], _position: 2 });
    const seen = vi.fn(() => ({ id: 'a', name: 'old', tags: [] }));
    expect(await c.update!('a', 2, seen)).toBe(false);
    expect(seen).not.toHaveBeenCalled();
    expect((await c.get('a'))!.name).toBe('alpha');
  });

  it('creates from null, deletes on null, leaves the document on undefined', async () => {
    const c = await setUp();
    expect(await c.update!('b', 2, (doc) => (doc ? undefined : { id: 'b', name: 'beta', tags: [] }))).toBe(true);
    expect(await c.update!('b', 3, () => undefined)).toBe(false);
    expect((await c.get('b'))!._position).toBe(2);
    expect(await c.update!('b', 4, () => null)).toBe(true);
    expect(await c.get('b')).toBeNull();
    // the unique key of a deleted document is free again
    expect(await c.update!('c', 5, () => ({ id: 'c', name: 'beta', tags: [] }))).toBe(true);
  });

  it('enforces unique indexes and keeps the old document when they refuse', async () => {
    const c = await setUp();
    await c.put({ id: 'b', name: 'beta', tags: [] }, 2);
    await expect(c.update!('b', 3, (doc) => ({ ...doc!, name: 'alpha' }))).rejects.toThrow(/duplicate key/);
    expect(await c.get('b')).toMatchObject({ name: 'beta', _position: 2 });
  });

  it('never hands out the stored document: changing what get returns changes nothing', async () => {
    const c = await setUp();
    await c.update!('a', 2, (doc) => ({ ...doc!, name: 'alpha2' }));
    const got = await c.get('a');
    got!.tags.push('mutated');
    expect((await c.get('a'))!.tags).toEqual(['x']);
  });
});
