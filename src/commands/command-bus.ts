import { randomUUID } from 'node:crypto';
import type { Command, Decider, DomainEvent } from '../domain/shared/decider.ts';
import { ConflictError } from '../domain/shared/errors.ts';
import type { EventStore, Position } from '../ports/event-store.port.ts';
import { WrongExpectedRevisionError } from '../ports/event-store.port.ts';

/** Who acts, when, and why: becomes the metadata of every event a command appends. */
export interface CommandContext {
  readonly userId?: string;
  readonly now?: string;
  readonly correlationId?: string;
  readonly causationId?: string;
  readonly clientIp?: string;
}

export interface CommandResult<S> {
  /** State of the stream after the command. */
  readonly state: S;
  /** Global position of the last appended event; undefined when the command changed nothing. */
  readonly position?: Position;
  readonly revision: number;
  readonly events: readonly DomainEvent[];
}

export interface CommandBusOptions {
  readonly maxAttempts?: number;
  /** Resolves once the read models show everything up to the position (read-your-writes). */
  readonly waitForProjections?: (position: Position) => Promise<unknown>;
  /** Observes every command for metrics. */
  readonly onCommand?: (type: string, outcome: 'ok' | 'rejected' | 'conflict' | 'error', seconds: number) => void;
  /** Observes every successful append (event count) for metrics. */
  readonly onAppended?: (events: number) => void;
}

/**
 * Runs a command against one stream: load, fold, decide, append with the expected revision.
 * A concurrent change is retried on fresh state a few times, then answered 409 CONCURRENT_CHANGE.
 */
export class CommandBus {
  private readonly maxAttempts: number;
  /**
   * Folded state per decider and stream, so a command reads only the events appended since it
   * last saw the stream instead of the whole history. Events are immutable, so a cached fold
   * plus the newer events is always the full fold; another writer's appends are simply read.
   */
  private readonly folds = new WeakMap<object, Map<string, { revision: number; state: unknown }>>();
  private static readonly FOLD_CACHE_SIZE = 10_000;

  constructor(
    private readonly store: EventStore,
    private readonly options: CommandBusOptions = {},
  ) {
    this.maxAttempts = options.maxAttempts ?? 5;
  }

  async execute<C extends Command, S, E extends DomainEvent>(
    decider: Decider<C, S, E>,
    stream: string,
    command: { type: C['type']; data: C['data'] },
    context: CommandContext = {},
  ): Promise<CommandResult<S>> {
    const started = performance.now();
    const now = context.now ?? new Date().toISOString();
    const full = { ...command, metadata: { now, ...(context.userId ? { userId: context.userId } : {}) } } as C;
    const metadata = {
      time: now,
      ...(context.userId ? { userId: context.userId } : {}),
      correlationId: context.correlationId ?? randomUUID(),
      ...(context.causationId ? { causationId: context.causationId } : {}),
      ...(context.clientIp ? { clientIp: context.clientIp } : {}),
    };
    const observe = (outcome: 'ok' | 'rejected' | 'conflict' | 'error') =>
      this.options.onCommand?.(command.type, outcome, (performance.now() - started) / 1000);
    try {
      for (let attempt = 1; ; attempt++) {
        const loaded = await this.fold(decider, stream);
        let state = loaded.state;
        const events = decider.decide(full, state);
        const last = loaded.revision < 0 ? undefined : loaded.revision;
        if (events.length === 0) {
          observe('ok');
          return { state, revision: loaded.revision, events };
        }
        try {
          const result = await this.store.append(
            stream,
            events.map((e) => ({ type: e.type, data: e.data, metadata })),
            last === undefined ? 'no-stream' : last,
          );
          this.options.onAppended?.(events.length);
          state = events.reduce(decider.evolve, state);
          this.remember(decider, stream, result.nextExpectedRevision, state);
          await this.options.waitForProjections?.(result.position);
          observe('ok');
          return { state, position: result.position, revision: result.nextExpectedRevision, events };
        } catch (err) {
          if (!(err instanceof WrongExpectedRevisionError)) throw err;
          if (attempt >= this.maxAttempts) {
            throw new ConflictError('CONCURRENT_CHANGE', 'Someone else changed this at the same time. Try again.');
          }
        }
      }
    } catch (err) {
      const status = (err as { status?: number }).status;
      observe(status === 409 ? 'conflict' : status !== undefined && status < 500 ? 'rejected' : 'error');
      throw err;
    }
  }

  /** Reads and folds a stream without deciding anything. */
  async load<S, E extends DomainEvent>(decider: Decider<Command, S, E>, stream: string): Promise<{ state: S; revision: number }> {
    return this.fold(decider, stream);
  }

  private async fold<S, E extends DomainEvent>(decider: Decider<never, S, E>, stream: string): Promise<{ state: S; revision: number }> {
    const cached = this.folds.get(decider)?.get(stream) as { revision: number; state: S } | undefined;
    const newer = await this.store.readStream(stream, cached ? { fromRevision: cached.revision + 1 } : {});
    let state = cached?.state ?? decider.initialState();
    for (const event of newer) state = decider.evolve(state, event as unknown as E);
    const revision = newer.at(-1)?.revision ?? cached?.revision ?? -1;
    if (newer.length > 0) this.remember(decider, stream, revision, state);
    return { state, revision };
  }

  private remember(decider: object, stream: string, revision: number, state: unknown): void {
    let byStream = this.folds.get(decider);
    if (!byStream) this.folds.set(decider, (byStream = new Map()));
    const cached = byStream.get(stream);
    if (cached && cached.revision >= revision) return;
    byStream.delete(stream);
    byStream.set(stream, { revision, state });
    // Map keeps insertion order: the first key is the least recently written stream.
    if (byStream.size > CommandBus.FOLD_CACHE_SIZE) byStream.delete(byStream.keys().next().value!);
  }
}
