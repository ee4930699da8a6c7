import { Query } from 'mingo';
import type { Filter, FindOptions, ReadCollection, ReadDocument, ReadStore, Stored } from '../../ports/read-store.port.ts';

/**
 * Read models held in memory: the default for one process. Not durable: the projection runner
 * rebuilds them by replaying the log at start. Filters are MongoDB-style, evaluated by mingo.
 */
export class MemoryReadStore implements ReadStore {
  readonly durable: boolean = false;
  private readonly collections = new Map<string, MemoryCollection<ReadDocument>>();
  private readonly checkpoints = new Map<string, number>();

  collection<T extends ReadDocument>(name: string): ReadCollection<T> {
    let c = this.collections.get(name);
    if (!c) {
      c = new MemoryCollection(name);
      this.collections.set(name, c);
    }
    return c as unknown as ReadCollection<T>;
  }

  async getCheckpoint(projection: string): Promise<number | undefined> {
    return this.checkpoints.get(projection);
  }

  async setCheckpoint(projection: string, position: number): Promise<void> {
    this.checkpoints.set(projection, position);
  }

  async dropAll(): Promise<void> {
    for (const c of this.collections.values()) c.clear();
    this.checkpoints.clear();
  }

  async close(): Promise<void> {}
}

export class DuplicateKeyError extends Error {
  constructor(collection: string, fields: string[]) {
    super(`duplicate key in ${collection} on (${fields.join(', ')})`);
    this.name = 'DuplicateKeyError';
  }
}

interface UniqueIndex {
  readonly fields: string[];
  /** index key → document id */
  readonly keys: Map<string, string>;
}

class MemoryCollection<T extends ReadDocument> implements ReadCollection<T> {
  private readonly docs = new Map<string, Stored<T>>();
  private readonly unique: UniqueIndex[] = [];

  constructor(private readonly name: string) {}

  clear(): void {
    this.docs.clear();
    for (const index of this.unique) index.keys.clear();
  }

  async get(id: string): Promise<Stored<T> | null> {
    const doc = this.docs.get(id);
    return doc ? copy(doc) : null;
  }

  async find(filter: Filter = {}, options: FindOptions = {}): Promise<Stored<T>[]> {
    return this.query(filter, options).map(copy);
  }

  async findOne(filter: Filter): Promise<Stored<T> | null> {
    const [doc] = this.query(filter, { limit: 1 });
    return doc ? copy(doc) : null;
  }

  async count(filter: Filter = {}): Promise<number> {
    return this.query(filter, {}).length;
  }

  async put(doc: T, position: number): Promise<boolean> {
    const existing = this.docs.get(doc.id);
    if (existing && existing._position >= position) return false;
    this.store(existing, copy(doc), position);
    return true;
  }

  /**
   * The projections' path: `next` sees the stored document itself and its result is stored as it
   * is, without the two deep copies of get + put. Safe because `next` does not mutate (evolve
   * functions build new objects) and stored documents never leave this class uncopied.
   */
  async update(id: string, position: number, next: (current: Stored<T> | null) => T | null | undefined): Promise<boolean> {
    const existing = this.docs.get(id);
    if (existing && existing._position >= position) return false;
    const doc = next(existing ?? null);
    if (doc === undefined) return false;
    if (doc === null) return this.delete(id, position);
    this.store(existing, { ...doc }, position);
    return true;
  }

  /** Stores `stored` (owned by this collection from now on) after checking the unique indexes. */
  private store(existing: Stored<T> | undefined, stored: T, position: number): void {
    const doc = stored as Stored<T> & { _position: number };
    doc._position = position;
    if (this.unique.length > 0) {
      const keys = this.unique.map((index) => indexKey(stored, index.fields));
      this.unique.forEach((index, i) => {
        const holder = index.keys.get(keys[i]!);
        if (holder !== undefined && holder !== doc.id) throw new DuplicateKeyError(this.name, index.fields);
      });
      this.unique.forEach((index, i) => {
        const oldKey = existing ? indexKey(existing, index.fields) : undefined;
        if (oldKey === keys[i]) return;
        if (oldKey !== undefined) index.keys.delete(oldKey);
        index.keys.set(keys[i]!, doc.id);
      });
    }
    this.docs.set(doc.id, doc);
  }

  async delete(id: string, position: number): Promise<boolean> {
    const existing = this.docs.get(id);
    if (!existing || existing._position >= position) return false;
    for (const index of this.unique) index.keys.delete(indexKey(existing, index.fields));
    this.docs.delete(id);
    return true;
  }

  async ensureIndex(fields: Record<string, 1 | -1>, options: { unique?: boolean } = {}): Promise<void> {
    if (!options.unique) return;
    const names = Object.keys(fields);
    if (this.unique.some((index) => index.fields.join() === names.join())) return;
    const index: UniqueIndex = { fields: names, keys: new Map() };
    for (const doc of this.docs.values()) {
      const key = indexKey(doc, names);
      if (index.keys.has(key)) throw new DuplicateKeyError(this.name, names);
      index.keys.set(key, doc.id);
    }
    this.unique.push(index);
  }

  async all(): Promise<Stored<T>[]> {
    return [...this.docs.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map(copy);
  }

  private query(filter: Filter, options: FindOptions): Stored<T>[] {
    const all = [...this.docs.values()];
    let cursor = new Query(filter).find<Stored<T>>(all);
    if (options.sort) cursor = cursor.sort(options.sort);
    if (options.skip) cursor = cursor.skip(options.skip);
    if (options.limit) cursor = cursor.limit(options.limit);
    return cursor.all();
  }
}

function indexKey(doc: object, fields: string[]): string {
  const values = doc as Record<string, unknown>;
  if (fields.length === 1) {
    const value = values[fields[0]!] ?? null;
    return typeof value === 'string' ? `s:${value}` : JSON.stringify(value);
  }
  return JSON.stringify(fields.map((f) => values[f] ?? null));
}

/** Deep copy of a JSON document: faster than structuredClone for the small documents we keep. */
function copy<V>(value: V): V {
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(copy) as V;
  const out: Record<string, unknown> = {};
  const source = value as Record<string, unknown>;
  for (const key of Object.keys(source)) {
    const field = source[key];
    out[key] = field === null || typeof field !== 'object' ? field : copy(field);
  }
  return out as V;
}
