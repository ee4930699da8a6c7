import type { Logger } from 'pino';
import { BehaviorSubject, filter, firstValueFrom, map, race, timer, type Subscription } from 'rxjs';
import type { EventStore, Position, RecordedEvent } from '../ports/event-store.port.ts';
import type { ReadDocument, ReadStore } from '../ports/read-store.port.ts';

export interface Projection {
  readonly name: string;
  /** Collections the projection writes (compared after a rebuild). */
  readonly collections: readonly string[];
  /** Creates indexes; runs before the first event. */
  setup?(store: ReadStore): Promise<void>;
  /**
   * Folds one event into the read model. An event the projection ignores returns at once
   * (undefined, no promise): most events concern one projection of several, and a replay should
   * not pay an await for each of the others.
   */
  apply(event: RecordedEvent, store: ReadStore): Promise<unknown> | undefined;
}

/**
 * A projection of one document per key: `evolve` folds an event into the current document (or
 * null) and returns the next document, null to delete it, or undefined when nothing changes.
 * Writes are guarded by the event's position, so redelivery after a crash changes nothing.
 */
export function documentProjection<T extends ReadDocument>(spec: {
  name: string;
  collection: string;
  indexes?: { fields: Record<string, 1 | -1>; unique?: boolean }[];
  /** Which document an event belongs to; undefined when the projection ignores the event. */
  idOf(event: RecordedEvent): string | undefined;
  evolve(doc: T | null, event: RecordedEvent): T | null | undefined;
}): Projection {
  return {
    name: spec.name,
    collections: [spec.collection],
    async setup(store) {
      const c = store.collection<T>(spec.collection);
      for (const index of spec.indexes ?? []) await c.ensureIndex(index.fields, { unique: index.unique });
    },
    apply(event, store) {
      const id = spec.idOf(event);
      if (id === undefined) return undefined;
      const c = store.collection<T>(spec.collection);
      if (c.update) return c.update(id, event.position, (current) => spec.evolve(current, event));
      return (async () => {
        const current = await c.get(id);
        if (current && current._position >= event.position) return;
        // The stored `_position` rides along in `current`; `put` overwrites it with the event's.
        const next = spec.evolve(current, event);
        if (next === undefined) return;
        if (next === null) await c.delete(id, event.position);
        else await c.put(next, event.position);
      })();
    },
  };
}

const CHECKPOINT_EVERY = 500;

/**
 * Feeds the log to the projections in order, from their checkpoints. Delivery is at least once;
 * projections make it idempotent. `waitFor(position)` lets a command's answer wait until its
 * events are visible (read-your-writes).
 */
export class ProjectionRunner {
  private readonly processed$ = new BehaviorSubject<Position>(0);
  /** Processed position per projection, in the order of `projections` (the hot path indexes it). */
  private readonly processedBy: Position[];
  private queue: RecordedEvent[] = [];
  private head = 0;
  private draining = false;
  private subscription?: Subscription;
  private sinceCheckpoint = 0;
  /** The stored checkpoints are loaded: before that, `processedBy` holds zeros that must not be saved. */
  private loaded = false;
  failures = 0;

  constructor(
    private readonly events: EventStore,
    private readonly store: ReadStore,
    private readonly projections: readonly Projection[],
    private readonly logger: Logger,
  ) {
    this.processedBy = projections.map(() => 0);
  }

  /** The position each projection has processed, by projection name. */
  get projectionPositions(): ReadonlyMap<string, Position> {
    return new Map(this.projections.map((p, i) => [p.name, this.processedBy[i]!]));
  }

  /** Position every projection has processed. */
  get position(): Position {
    return this.processed$.value;
  }

  /** Starts projecting and resolves once the projections have caught up with the log's head. */
  async start(): Promise<void> {
    let from = Number.MAX_SAFE_INTEGER;
    for (const [i, p] of this.projections.entries()) {
      await p.setup?.(this.store);
      const checkpoint = this.store.durable ? ((await this.store.getCheckpoint(p.name)) ?? 0) : 0;
      this.processedBy[i] = checkpoint;
      from = Math.min(from, checkpoint);
    }
    this.loaded = true;
    if (this.projections.length === 0) from = (await this.events.headPosition()) ?? 0;
    this.processed$.next(from);
    const head = (await this.events.headPosition()) ?? 0;
    this.subscription = this.events.subscribe(from).subscribe({
      next: (event) => {
        this.queue.push(event);
        if (!this.draining) {
          this.drain().catch((err: unknown) => this.logger.error({ err }, 'saving the projection checkpoints failed; they are saved again with the next events'));
        }
      },
      error: (err: unknown) => this.logger.error({ err }, 'event subscription of the projections failed'),
    });
    await this.waitFor(head, Number.POSITIVE_INFINITY);
  }

  /** Resolves when every projection has processed `position` (or after `timeoutMs`, with false). */
  async waitFor(position: Position, timeoutMs = 5_000): Promise<boolean> {
    if (this.processed$.value >= position) return true;
    const reached = this.processed$.pipe(filter((p) => p >= position), map(() => true));
    return firstValueFrom(Number.isFinite(timeoutMs) ? race(reached, timer(timeoutMs).pipe(map(() => false))) : reached);
  }

  async stop(): Promise<void> {
    this.subscription?.unsubscribe();
    while (this.draining) await new Promise((r) => setTimeout(r, 5));
    await this.saveCheckpoints();
  }

  private async drain(): Promise<void> {
    this.draining = true;
    try {
      do {
        while (this.head < this.queue.length) {
          const next = this.queue[this.head++]!;
          for (let i = 0; i < this.projections.length; i++) {
            if (this.processedBy[i]! >= next.position) continue;
            const pending = this.apply(i, next);
            if (pending) await pending;
            this.processedBy[i] = next.position;
          }
          // Waiters are told in batches during a replay and at once when the queue runs dry.
          if (this.head === this.queue.length || this.head % 256 === 0) this.processed$.next(next.position);
          if (++this.sinceCheckpoint >= CHECKPOINT_EVERY) await this.saveCheckpoints();
        }
        // A replay can queue the whole log at once: drop the consumed part instead of shifting.
        this.queue = [];
        this.head = 0;
        if (this.sinceCheckpoint > 0) await this.saveCheckpoints();
      } while (this.queue.length > 0);
    } finally {
      this.draining = false;
    }
  }

  /** One projection, one event; a promise only when the projection has work to wait for. */
  private apply(index: number, event: RecordedEvent): Promise<unknown> | undefined {
    const projection = this.projections[index]!;
    try {
      return projection.apply(event, this.store)?.catch((err: unknown) => this.failed(err, projection, event));
    } catch (err) {
      this.failed(err, projection, event);
      return undefined;
    }
  }

  /** One bad event must not stall every read model; it is logged and counted for metrics. */
  private failed(err: unknown, projection: Projection, event: RecordedEvent): void {
    this.failures += 1;
    this.logger.error({ err, projection: projection.name, eventId: event.id, type: event.type }, 'projection failed');
  }

  private async saveCheckpoints(): Promise<void> {
    this.sinceCheckpoint = 0;
    if (!this.store.durable || !this.loaded) return;
    for (const [i, p] of this.projections.entries()) await this.store.setCheckpoint(p.name, this.processedBy[i]!);
  }
}
