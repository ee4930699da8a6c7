/**
 * Storage for read models. Documents are plain JSON objects keyed by `id`. Every write carries the
 * global position of the event that caused it and is applied only when that position is newer than
 * the one the document has seen, so a replayed event changes nothing (at-least-once delivery).
 * Every adapter passes test/contract/read-store.contract.ts.
 */
export interface ReadStore {
  collection<T extends ReadDocument>(name: string): ReadCollection<T>;
  getCheckpoint(projection: string): Promise<number | undefined>;
  setCheckpoint(projection: string, position: number): Promise<void>;
  /** Drops every collection and checkpoint (used by `npm run rebuild`). */
  dropAll(): Promise<void>;
  /** True when the store keeps its documents across restarts (then projections resume, not replay). */
  readonly durable: boolean;
  close(): Promise<void>;
}

export interface ReadDocument {
  readonly id: string;
}

/** What a stored document carries besides its own fields. */
export type Stored<T extends ReadDocument> = T & { readonly _position: number };

/** A MongoDB-style query filter (`{ field: value }`, `$in`, `$regex`, `$gte`…). */
export type Filter = Record<string, unknown>;

export interface FindOptions {
  readonly sort?: Record<string, 1 | -1>;
  readonly limit?: number;
  readonly skip?: number;
}

export interface ReadCollection<T extends ReadDocument> {
  get(id: string): Promise<Stored<T> | null>;
  find(filter?: Filter, options?: FindOptions): Promise<Stored<T>[]>;
  findOne(filter: Filter): Promise<Stored<T> | null>;
  count(filter?: Filter): Promise<number>;
  /** Replaces the document unless it has already seen `position`; returns whether it wrote. */
  put(doc: T, position: number): Promise<boolean>;
  /** Deletes the document unless it has already seen `position`; returns whether it deleted. */
  delete(id: string, position: number): Promise<boolean>;
  /**
   * Optional fast path for projections: `next` folds the current document (or null) into the next
   * one (null deletes it, undefined leaves it), unless the document has already seen `position`.
   * `next` must not mutate its argument. A store without it is driven by get + put/delete.
   */
  update?(id: string, position: number, next: (current: Stored<T> | null) => T | null | undefined): Promise<boolean>;
  ensureIndex(fields: Record<string, 1 | -1>, options?: { unique?: boolean }): Promise<void>;
  /** Every document, in id order (for rebuild comparisons and exports). */
  all(): Promise<Stored<T>[]>;
}
