import type { Logger } from 'pino';
import type { Subscription } from 'rxjs';
import type { EventStore, Position } from '../ports/event-store.port.ts';
import { LeaseKeeper, type Leasing } from '../ports/lease.port.ts';
import type { Filter, FindOptions, ReadCollection, ReadDocument, ReadStore, Stored } from '../ports/read-store.port.ts';
import { ProjectionRunner, type Projection } from './projection-runner.ts';

export const PROJECTIONS_LEASE = 'projections';
/** How often a replica that does not project reads the checkpoints while a caller waits. */
const FOLLOW_POLL_MS = 20;
/** How often it reads them otherwise (for the projection lag metric). */
const IDLE_POLL_MS = 1_000;

/**
 * The projections of a lab, run once per group of replicas. In-memory read models belong to their
 * process, so every process projects into its own (a plain ProjectionRunner). Durable ones
 * (MongoDB) are shared, and their writes are not safe to run twice at once: a delete leaves no
 * tombstone that would stop a lagging writer from putting the document back, and FerretDB applies
 * a conditional replace as a read and a write, so a lagging writer can even put an older version
 * back. So one replica holds the `projections` lease and projects; the others follow its progress
 * through the checkpoints it stores, which is what `waitFor` (read-your-writes) waits on there.
 *
 * When the lease is lost the runner's writes are fenced off at once (they become no-ops) and it is
 * stopped; the replica that takes the lease over resumes from the stored checkpoints.
 */
export class LeasedProjectionRunner {
  private runner?: ProjectionRunner;
  private fence?: FencedReadStore;
  private keeper?: LeaseKeeper;
  private following?: Subscription;
  /** Position every projection has processed, as far as this replica knows (never moves back). */
  private known = 0;
  private knownByProjection: ReadonlyMap<string, Position> = new Map();
  private transitions: Promise<void> = Promise.resolve();
  /** Runners fenced off after a lost lease, still to be stopped. */
  private readonly retired: ProjectionRunner[] = [];
  private reading?: Promise<void>;
  private lastRead = 0;
  private idle?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    private readonly events: EventStore,
    private readonly store: ReadStore,
    private readonly projections: readonly Projection[],
    private readonly logger: Logger,
    private readonly leasing: Leasing,
  ) {}

  /** Whether this replica runs the projections now. */
  get leading(): boolean {
    return this.runner !== undefined;
  }

  /** Position every projection has processed. */
  get position(): Position {
    return Math.max(this.known, this.runner?.position ?? 0);
  }

  /** The position each projection has processed, by projection name. */
  get projectionPositions(): ReadonlyMap<string, Position> {
    return this.runner?.projectionPositions ?? this.knownByProjection;
  }

  /** Starts (projecting, or following the replica that does) and resolves once the read models show the log's head. */
  async start(): Promise<void> {
    if (!this.store.durable) {
      this.runner = new ProjectionRunner(this.events, this.store, this.projections, this.logger);
      await this.runner.start();
      return;
    }
    const head = (await this.events.headPosition()) ?? 0;
    const { leases, holder, timing } = this.leasing;
    this.keeper = new LeaseKeeper(leases, PROJECTIONS_LEASE, holder, timing, this.logger);
    // At start a failure to project fails the start, as it does with one replica.
    if (await this.keeper.start()) await this.lead();
    else this.logger.info({ holder: (await leases.holderOf(PROJECTIONS_LEASE))?.holder }, 'another replica runs the projections; following its checkpoints');
    this.following = this.keeper.held$.subscribe((held) => {
      // Fenced at once, not after the changes queued before: a lost lease must stop the writes now.
      if (!held) this.retire();
      this.transitions = this.transitions.then(() => this.settle());
    });
    this.readIdly();
    await this.waitFor(head, Number.POSITIVE_INFINITY);
  }

  /** Resolves when every projection has processed `position` (or after `timeoutMs`, with false). */
  async waitFor(position: Position, timeoutMs = 5_000): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      if (this.position >= position) return true;
      const left = deadline - performance.now();
      if (left <= 0 || this.stopped) return false;
      const runner = this.runner;
      if (runner) {
        // Short slices: the lease may move away while we wait.
        if (await runner.waitFor(position, Math.min(left, 250))) return true;
      } else {
        await this.readCheckpoints();
      }
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.idle);
    this.following?.unsubscribe();
    await this.transitions;
    for (const runner of this.retired.splice(0)) await runner.stop();
    // The checkpoints are saved while the lease is still ours; then it goes to another replica at once.
    await this.runner?.stop();
    this.runner = undefined;
    await this.keeper?.stop();
  }

  /** Starts projecting when the lease is ours, and lets retired runners finish; one change at a time. */
  private async settle(): Promise<void> {
    for (const runner of this.retired.splice(0)) await runner.stop();
    if (this.stopped || !this.keeper?.held || this.runner) return;
    try {
      await this.lead();
    } catch (err) {
      this.logger.error({ err }, 'the projections could not start; trying again');
      this.retire();
      setTimeout(() => (this.transitions = this.transitions.then(() => this.settle())), this.leasing.timing.renewEveryMs).unref();
    }
  }

  private async lead(): Promise<void> {
    // The fence asks the keeper itself, so writes stop the moment the lease is in doubt, even while
    // the first catch-up runs or the runner is being stopped (before or after `held$` is watched).
    const keeper = this.keeper!;
    this.fence = new FencedReadStore(this.store, () => !keeper.held);
    const runner = new ProjectionRunner(this.events, this.fence, this.projections, this.logger);
    this.runner = runner;
    this.logger.info('this replica runs the projections');
    await runner.start();
  }

  /** Fences the running runner off (nothing it does is written from now on) and queues its stop. */
  private retire(): void {
    const runner = this.runner;
    if (!runner) return;
    // Everything it wrote so far is visible to this replica's readers (unless the lease, and so
    // its writes, went first: then the stored checkpoints tell).
    if (!this.fence!.fenced) this.known = Math.max(this.known, runner.position);
    this.fence!.fence();
    this.runner = undefined;
    this.retired.push(runner);
    if (!this.stopped) this.logger.warn('this replica no longer runs the projections; following the checkpoints of the one that does');
  }

  /** Reads the stored checkpoints, at most every FOLLOW_POLL_MS however many callers wait. */
  private readCheckpoints(): Promise<void> {
    this.reading ??= (async () => {
      const wait = this.lastRead + FOLLOW_POLL_MS - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      this.lastRead = performance.now();
      try {
        const positions = new Map<string, Position>();
        for (const p of this.projections) positions.set(p.name, (await this.store.getCheckpoint(p.name)) ?? 0);
        this.knownByProjection = positions;
        this.known = Math.max(this.known, Math.min(...positions.values()));
      } catch (err) {
        this.logger.warn({ err }, 'could not read the projection checkpoints');
      }
    })().finally(() => (this.reading = undefined));
    return this.reading;
  }

  private readIdly(): void {
    this.idle = setTimeout(() => {
      void (this.leading ? Promise.resolve() : this.readCheckpoints()).then(() => {
        if (!this.stopped) this.readIdly();
      });
    }, IDLE_POLL_MS).unref();
  }
}

/** A ReadStore whose writes stop at once when `fenced` (they then change nothing); reads go on. */
export class FencedReadStore implements ReadStore {
  private cut = false;
  readonly durable: boolean;

  constructor(
    private readonly inner: ReadStore,
    /** Asked before every write: true once the lease is no longer held, however the news arrives. */
    private readonly leaseLost: () => boolean = () => false,
  ) {
    this.durable = inner.durable;
  }

  /** Whether writes are off: cut for good by `fence()`, or the lease is not held right now. */
  get fenced(): boolean {
    return this.cut || this.leaseLost();
  }

  fence(): void {
    this.cut = true;
  }

  collection<T extends ReadDocument>(name: string): ReadCollection<T> {
    return new FencedCollection(this.inner.collection<T>(name), this);
  }

  getCheckpoint(projection: string): Promise<number | undefined> {
    return this.inner.getCheckpoint(projection);
  }

  async setCheckpoint(projection: string, position: number): Promise<void> {
    if (!this.fenced) await this.inner.setCheckpoint(projection, position);
  }

  async dropAll(): Promise<void> {
    throw new Error('the projections do not drop read models');
  }

  async close(): Promise<void> {}
}

class FencedCollection<T extends ReadDocument> implements ReadCollection<T> {
  /** The projections' fast path, where the store has one: fenced like put and delete. */
  readonly update?: ReadCollection<T>['update'];

  constructor(
    private readonly inner: ReadCollection<T>,
    private readonly fence: FencedReadStore,
  ) {
    const update = inner.update?.bind(inner);
    if (update) this.update = async (id, position, next) => !this.fence.fenced && update(id, position, next);
  }

  get(id: string): Promise<Stored<T> | null> {
    return this.inner.get(id);
  }

  find(filter?: Filter, options?: FindOptions): Promise<Stored<T>[]> {
    return this.inner.find(filter, options);
  }

  findOne(filter: Filter): Promise<Stored<T> | null> {
    return this.inner.findOne(filter);
  }

  count(filter?: Filter): Promise<number> {
    return this.inner.count(filter);
  }

  async put(doc: T, position: number): Promise<boolean> {
    return !this.fence.fenced && this.inner.put(doc, position);
  }

  async delete(id: string, position: number): Promise<boolean> {
    return !this.fence.fenced && this.inner.delete(id, position);
  }

  ensureIndex(fields: Record<string, 1 | -1>, options?: { unique?: boolean }): Promise<void> {
    return this.inner.ensureIndex(fields, options);
  }

  all(): Promise<Stored<T>[]> {
    return this.inner.all();
  }
}
