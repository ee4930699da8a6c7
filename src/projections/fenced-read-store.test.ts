import { describe, expect, it } from 'vitest';
import { MemoryReadStore } from '../adapters/readstore/memory.read-store.ts';
import { FencedReadStore } from './leased-projection-runner.ts';

describe('FencedReadStore (the projections of a replica that may lose its lease)', () => {
  interface Doc { id: string; n: number }

  it('writes through until fenced, then every write, the update path included, changes nothing', async () => {
    const inner = new MemoryReadStore();
    const fence = new FencedReadStore(inner);
    const docs = fence.collection<Doc>('docs');
    expect(await docs.put({ id: 'a', n: 1 }, 1)).toBe(true);
    expect(await docs.update!('a', 2, (doc) => ({ ...doc!, n: 2 }))).toBe(true);
    await fence.setCheckpoint('p', 2);

    fence.fence();
    expect(await docs.put({ id: 'a', n: 3 }, 3)).toBe(false);
    expect(await docs.update!('a', 4, (doc) => ({ ...doc!, n: 4 }))).toBe(false);
    expect(await docs.delete('a', 5)).toBe(false);
    await fence.setCheckpoint('p', 5);

    expect(await inner.collection<Doc>('docs').get('a')).toMatchObject({ n: 2, _position: 2 });
    expect(await inner.getCheckpoint('p')).toBe(2);
    // Reads go on.
    expect(await docs.get('a')).toMatchObject({ n: 2 });
  });

  it('stops writing while the lease is not held, without being told', async () => {
    const inner = new MemoryReadStore();
    let held = true;
    const docs = new FencedReadStore(inner, () => !held).collection<Doc>('docs');
    expect(await docs.put({ id: 'a', n: 1 }, 1)).toBe(true);
    held = false;
    expect(await docs.put({ id: 'a', n: 2 }, 2)).toBe(false);
    expect(await inner.collection<Doc>('docs').get('a')).toMatchObject({ n: 1 });
  });
});
