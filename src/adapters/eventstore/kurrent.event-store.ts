/**
 * The EventStore port over KurrentDB / EventStoreDB (gRPC client `@kurrent/kurrentdb-client` 1.3).
 *
 * Positions. A port position is the commit position of an event in `$all` (`Number(commit)`).
 * Every event appended through the gRPC API is its own implicitly committed record, so its commit
 * and prepare positions are the same log offset, unique per event and increasing in `$all` order;
 * `{ commit: p, prepare: p }` is therefore the exact `$all` position of the event at port position
 * `p`. Reads start from that full position (`$all` reads are inclusive there) and then drop events
 * at or before `p`, so they are exclusive as the port requires. Log offsets are byte offsets; they
 * stay below 2^53 (8 PiB of log), and a larger one fails loudly rather than losing precision.
 * Events from explicit multi-record transactions of the legacy TCP API share one commit position;
 * the port cannot tell them apart, and a page boundary inside such a transaction would skip the
 * rest of it. Nothing this project writes creates such events.
 *
 * System events (types starting with `$`: stream metadata, projections' links, statistics, ...) are
 * filtered out by the server on every `$all` read and subscription.
 *
 * Bounded failure. The client has no deadline on some calls (the server-features probe that
 * precedes the first append waits forever on a host that accepts TCP but never answers), so every
 * operation here races `operationTimeoutMs` and fails with a `KurrentEventStoreError` naming the
 * server. An append that times out may still have been written: its outcome is unknown.
 */
import { Observable } from 'rxjs';
import {
  ANY,
  BACKWARDS,
  END,
  ErrorType,
  FORWARDS,
  KurrentDBClient,
  NO_STREAM,
  START,
  excludeSystemEvents,
  jsonEvent,
} from '@kurrent/kurrentdb-client';
import type {
  AllStreamResolvedEvent,
  AllStreamSubscription,
  EventData,
  JSONType,
  Position as KurrentPosition,
  ReadPosition,
  ResolvedEvent,
  StreamState,
} from '@kurrent/kurrentdb-client';
import type {
  AppendResult,
  EventMetadata,
  EventStore,
  ExpectedRevision,
  NewEvent,
  Position,
  RecordedEvent,
} from '../../ports/event-store.port.ts';
import { WrongExpectedRevisionError } from '../../ports/event-store.port.ts';
import { newEventId } from './event-id.ts';

export interface KurrentEventStoreOptions {
  /**
   * Longest wait for one append or read (default 30 000 ms); then it fails with a
   * `KurrentEventStoreError`. A timed-out append may still have been written. 0 or Infinity: no limit.
   */
  readonly operationTimeoutMs?: number;
  /** First wait before resubscribing after a subscription dropped (default 250 ms); doubles per failure. */
  readonly resubscribeInitialDelayMs?: number;
  /** Cap on the wait between resubscriptions (default 30 000 ms). */
  readonly resubscribeMaxDelayMs?: number;
  /**
   * A subscription the server has not confirmed (nor sent an event on) within this time is treated
   * as dropped and retried (default: `operationTimeoutMs`; 0 or Infinity: wait for ever).
   */
  readonly subscriptionConfirmTimeoutMs?: number;
  /** Told of every dropped subscription before it is retried; by default a `console.warn`. */
  readonly onSubscriptionDrop?: (error: unknown, info: { after: Position | undefined; retryInMs: number }) => void;
}

/** A KurrentDB operation failed or timed out; `cause` holds the client's error when there is one. */
export class KurrentEventStoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KurrentEventStoreError';
  }
}

/**
 * Opens a store on `connectionString`, in any form the client accepts: `kurrentdb://`, `esdb://`
 * (deprecated by the client, which warns), `kurrent://`, `kdb://` and their `+discover` forms, e.g.
 * `kurrentdb://localhost:2113?tls=false`. Nothing is sent until the first operation, which fails
 * (within `operationTimeoutMs`) when the server cannot be reached.
 */
export async function openKurrentEventStore(
  connectionString: string,
  options: KurrentEventStoreOptions = {},
): Promise<EventStore> {
  let client: KurrentDBClient;
  try {
    client = KurrentDBClient.connectionString(connectionString);
  } catch (error) {
    throw new KurrentEventStoreError(
      `invalid KurrentDB connection string (${describeTarget(connectionString)}): ${describeError(error)}`,
      { cause: error },
    );
  }
  return new KurrentEventStore(client, describeTarget(connectionString), options);
}

const DEFAULT_OPERATION_TIMEOUT_MS = 30_000;
const DEFAULT_RESUBSCRIBE_INITIAL_DELAY_MS = 250;
const DEFAULT_RESUBSCRIBE_MAX_DELAY_MS = 30_000;

/** The adapter over a client; `openKurrentEventStore` is the way in (tests hand it a fake client). */
export class KurrentEventStore implements EventStore {
  private closed = false;
  /** Whether a gRPC call was made (appends and subscriptions; reads go through the client's native bridge). */
  private grpcUsed = false;
  /** Ends the live subscriptions on close, so none of them retries against a disposed client. */
  private readonly subscriptions = new Set<() => void>();
  private readonly operationTimeoutMs: number;
  private readonly resubscribeInitialDelayMs: number;
  private readonly resubscribeMaxDelayMs: number;
  private readonly confirmTimeoutMs: number;
  private readonly onSubscriptionDrop: NonNullable<KurrentEventStoreOptions['onSubscriptionDrop']>;

  constructor(
    private readonly client: KurrentDBClient,
    private readonly target: string,
    options: KurrentEventStoreOptions,
  ) {
    this.operationTimeoutMs = options.operationTimeoutMs ?? DEFAULT_OPERATION_TIMEOUT_MS;
    this.resubscribeInitialDelayMs = options.resubscribeInitialDelayMs ?? DEFAULT_RESUBSCRIBE_INITIAL_DELAY_MS;
    this.resubscribeMaxDelayMs = options.resubscribeMaxDelayMs ?? DEFAULT_RESUBSCRIBE_MAX_DELAY_MS;
    this.confirmTimeoutMs = options.subscriptionConfirmTimeoutMs ?? this.operationTimeoutMs;
    this.onSubscriptionDrop =
      options.onSubscriptionDrop ??
      ((error, { after, retryInMs }) =>
        console.warn(
          `[kurrentdb] $all subscription to ${target} dropped (${describeError(error)}); ` +
            `resubscribing after position ${after ?? 'start'} in ${retryInMs} ms`,
        ));
  }

  async append(stream: string, events: readonly NewEvent[], expected: ExpectedRevision): Promise<AppendResult> {
    if (events.length === 0) throw new Error('append needs at least one event');
    const streamState = toStreamState(expected);
    const data = events.map(toEventData);
    this.grpcUsed = true;
    return this.run(
      `append to ${stream}`,
      async () => {
        const result = await this.client.appendToStream(stream, data, { streamState });
        // Only with `throwOnAppendFailure=false` in the connection string does a conflict resolve
        // instead of throwing; the client's actual revision is unreliable then (batch appends).
        if (!result.success) {
          throw new WrongExpectedRevisionError(stream, expected, toPortActual(result.nextExpectedRevision));
        }
        const nextExpectedRevision = toSafeNumber(result.nextExpectedRevision, 'revision');
        const commit = result.position?.commit ?? (await this.positionOfRevision(stream, result.nextExpectedRevision));
        return { nextExpectedRevision, position: toSafeNumber(commit, 'position') };
      },
      (error) => translateAppendError(error, stream, expected),
    );
  }

  /** Fallback for a success without a position (servers that omit it): the last event's own one. */
  private async positionOfRevision(stream: string, revision: bigint): Promise<bigint> {
    for await (const resolved of this.client.readStream(stream, { fromRevision: revision, maxCount: 1 })) {
      const commit = commitPositionOf(resolved);
      if (commit !== undefined) return commit;
    }
    throw new KurrentEventStoreError(`KurrentDB returned no position for the append to ${stream}`);
  }

  async readStream(stream: string, options: { fromRevision?: number } = {}): Promise<RecordedEvent[]> {
    const from = options.fromRevision ?? 0;
    if (!Number.isSafeInteger(from) || from < 0) throw new RangeError(`fromRevision must be a non-negative integer: ${from}`);
    return this.run(`readStream(${stream})`, async (signal) => {
      const events: RecordedEvent[] = [];
      try {
        const read = this.client.readStream(stream, {
          fromRevision: from === 0 ? START : BigInt(from),
          direction: FORWARDS,
        });
        for await (const resolved of read) {
          if (signal.aborted) break;
          const event = toRecordedEvent(resolved);
          if (event) events.push(event);
        }
      } catch (error) {
        if (isStreamNotFound(error)) return [];
        throw error;
      }
      return events;
    });
  }

  async readAll(options: { after?: Position; limit: number }): Promise<RecordedEvent[]> {
    const { after, limit } = options;
    if (!Number.isSafeInteger(limit) || limit < 0) throw new RangeError(`limit must be a non-negative integer: ${limit}`);
    if (limit === 0) return [];
    const fromPosition: ReadPosition = after === undefined ? START : toKurrentPosition(after);
    return this.run('readAll', async (signal) => {
      const events: RecordedEvent[] = [];
      // The read is inclusive of `after` itself: one more than the page, dropped again below.
      const read = this.client.readAll({
        fromPosition,
        direction: FORWARDS,
        maxCount: limit + 1,
        resolveLinkTos: false,
        filter: excludeSystemEvents(),
      });
      for await (const resolved of read) {
        if (signal.aborted) break;
        const event = toRecordedEvent(resolved);
        if (!event || (after !== undefined && event.position <= after)) continue;
        events.push(event);
        if (events.length >= limit) break;
      }
      return events;
    });
  }

  subscribe(after?: Position): Observable<RecordedEvent> {
    if (after !== undefined) toKurrentPosition(after); // validates it before anything starts
    return new Observable<RecordedEvent>((subscriber) => {
      if (this.closed) {
        subscriber.error(new KurrentEventStoreError('KurrentDB event store is closed'));
        return;
      }
      /** Last delivered position: resubscriptions start there, and nothing at or before it is delivered. */
      let last = after;
      let lastFull: KurrentPosition | undefined = after === undefined ? undefined : toKurrentPosition(after);
      let stopped = false;
      let attempt = 0;
      let retryTimer: NodeJS.Timeout | undefined;
      let current: { sub: AllStreamSubscription; end: () => void } | undefined;

      const start = () => {
        retryTimer = undefined;
        if (stopped) return;
        let sub: AllStreamSubscription;
        this.grpcUsed = true;
        try {
          sub = this.client.subscribeToAll({
            fromPosition: lastFull ?? START,
            resolveLinkTos: false,
            filter: excludeSystemEvents(),
          });
        } catch (error) {
          scheduleRetry(error);
          return;
        }
        let ended = false;
        const confirmMs = timerDelay(this.confirmTimeoutMs);
        const confirmTimer =
          confirmMs === undefined
            ? undefined
            : setTimeout(
                () => drop(new KurrentEventStoreError(`no subscription confirmation from ${this.target} within ${confirmMs} ms`)),
                confirmMs,
              );
        const confirmed = () => {
          clearTimeout(confirmTimer);
          attempt = 0;
        };
        const end = () => {
          if (ended) return;
          ended = true;
          clearTimeout(confirmTimer);
          if (current?.sub === sub) current = undefined;
          sub.removeAllListeners('data');
          // An 'error' without a listener would crash the process: keep one on the dead stream.
          sub.removeAllListeners('error');
          sub.on('error', () => {});
          sub.unsubscribe().then(
            () => sub.destroy(),
            () => sub.destroy(),
          );
        };
        const drop = (error: unknown) => {
          if (ended) return;
          end();
          if (!stopped) scheduleRetry(error);
        };
        current = { sub, end };
        sub.on('confirmation', confirmed);
        sub.on('caughtUp', confirmed);
        sub.on('data', (resolved: AllStreamResolvedEvent) => {
          if (stopped || ended) return;
          confirmed();
          let event: RecordedEvent | undefined;
          try {
            event = toRecordedEvent(resolved);
          } catch (error) {
            // A malformed event fails the same way on every retry: fail the subscriber.
            end();
            subscriber.error(error);
            return;
          }
          if (!event || (last !== undefined && event.position <= last)) return;
          last = event.position;
          lastFull = resolved.event?.position ?? toKurrentPosition(event.position);
          subscriber.next(event);
        });
        sub.on('error', (error: unknown) => drop(error));
        sub.on('end', () => drop(new KurrentEventStoreError(`${this.target} ended the $all subscription`)));
        sub.on('close', () => drop(new KurrentEventStoreError(`the $all subscription to ${this.target} closed`)));
      };

      const scheduleRetry = (error: unknown) => {
        if (stopped) return;
        const retryInMs = resubscribeDelay(attempt++, this.resubscribeInitialDelayMs, this.resubscribeMaxDelayMs);
        try {
          this.onSubscriptionDrop(error, { after: last, retryInMs });
        } catch {
          // a failing observer must not stop the retries
        }
        retryTimer = setTimeout(start, retryInMs);
      };

      const stop = () => {
        if (stopped) return;
        stopped = true;
        if (retryTimer) clearTimeout(retryTimer);
        current?.end();
        current = undefined;
      };
      const complete = () => {
        stop();
        subscriber.complete();
      };
      this.subscriptions.add(complete);
      start();
      return () => {
        this.subscriptions.delete(complete);
        stop();
      };
    });
  }

  async headPosition(): Promise<Position | undefined> {
    return this.run('headPosition', async () => {
      const read = this.client.readAll({
        fromPosition: END,
        direction: BACKWARDS,
        maxCount: 1,
        resolveLinkTos: false,
        filter: excludeSystemEvents(),
      });
      for await (const resolved of read) {
        const commit = commitPositionOf(resolved);
        if (commit !== undefined) return toSafeNumber(commit, 'position');
      }
      return undefined;
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const complete of [...this.subscriptions]) complete();
    this.subscriptions.clear();
    await this.client.dispose();
    if (this.grpcUsed) await this.closeChannel();
  }

  /**
   * The client's `dispose()` cancels its streams but neither closes its gRPC channel nor ends unary
   * calls, and the server-features probe before the first append has no deadline: against a host
   * that never answers it would hold the process open forever. Closing the channel ends such calls
   * ("Channel closed before call started"). `getChannel` is protected in the client's typings, so
   * this is best effort: skipped if the client no longer has it, bounded if it must reconnect.
   */
  private async closeChannel(): Promise<void> {
    const internals = this.client as unknown as { getChannel?: () => Promise<{ close(): void }> };
    if (typeof internals.getChannel !== 'function') return;
    const closing = internals
      .getChannel()
      .then((channel) => channel.close())
      .catch(() => {});
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([closing, new Promise<void>((resolve) => (timer = setTimeout(resolve, 1_000)))]);
    clearTimeout(timer);
  }

  /**
   * Runs one operation under `operationTimeoutMs`, turning the client's errors into ones that say
   * what failed against which server. The port's own errors pass through unchanged.
   */
  private async run<T>(
    what: string,
    operation: (signal: AbortSignal) => Promise<T>,
    translate: (error: unknown) => unknown = (error) => error,
  ): Promise<T> {
    if (this.closed) throw new KurrentEventStoreError(`KurrentDB event store is closed (${what})`);
    const abort = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const limitMs = timerDelay(this.operationTimeoutMs);
    const timeout = new Promise<never>((_, reject) => {
      if (limitMs === undefined) return; // no limit
      timer = setTimeout(() => {
        abort.abort();
        reject(
          new KurrentEventStoreError(
            `KurrentDB ${what}: no answer from ${this.target} within ${this.operationTimeoutMs} ms` +
              (what.startsWith('append') ? ' (the append may or may not have been written)' : ''),
          ),
        );
      }, limitMs);
    });
    const pending = operation(abort.signal);
    pending.catch(() => {}); // a late failure after the timeout is not an unhandled rejection
    try {
      return await Promise.race([pending, timeout]);
    } catch (error) {
      const translated = translate(error);
      if (translated instanceof WrongExpectedRevisionError || translated instanceof KurrentEventStoreError) throw translated;
      throw new KurrentEventStoreError(`KurrentDB ${what} failed against ${this.target}: ${describeError(translated)}`, {
        cause: translated,
      });
    } finally {
      clearTimeout(timer);
    }
  }
}

// ---- pure mapping between the port and the client (unit-tested without a server) ----

/** The port's expected revision as the client's stream state. */
export function toStreamState(expected: ExpectedRevision): StreamState {
  if (expected === 'no-stream') return NO_STREAM;
  if (expected === 'any') return ANY;
  if (typeof expected !== 'number' || !Number.isSafeInteger(expected) || expected < 0) {
    throw new RangeError(`expected revision must be a non-negative integer, 'no-stream' or 'any': ${String(expected)}`);
  }
  return BigInt(expected);
}

/** The client's current stream state (`no_stream`, or a revision; negative ones mean no live stream). */
export function toPortActual(actual: unknown): number | 'no-stream' {
  if (typeof actual === 'bigint') return actual < 0n ? 'no-stream' : toSafeNumber(actual, 'revision');
  if (typeof actual === 'number' && Number.isSafeInteger(actual)) return actual < 0 ? 'no-stream' : actual;
  return 'no-stream';
}

/** The client's WrongExpectedVersionError as the port's WrongExpectedRevisionError; anything else unchanged. */
export function translateAppendError(error: unknown, stream: string, expected: ExpectedRevision): unknown {
  if (clientErrorType(error) === ErrorType.WRONG_EXPECTED_VERSION) {
    const actual = (error as { actualState?: unknown }).actualState;
    return new WrongExpectedRevisionError(stream, expected, toPortActual(actual));
  }
  return error;
}

export function isStreamNotFound(error: unknown): boolean {
  return clientErrorType(error) === ErrorType.STREAM_NOT_FOUND;
}

/** A port position as the full `$all` position of the event there (see the module comment). */
export function toKurrentPosition(position: Position): KurrentPosition {
  if (!Number.isSafeInteger(position) || position < 0) {
    throw new RangeError(`position must be a non-negative integer: ${position}`);
  }
  return { commit: BigInt(position), prepare: BigInt(position) };
}

/** The commit position of a resolved event: its record's own, else the one on the resolved event. */
export function commitPositionOf(resolved: ResolvedEvent | AllStreamResolvedEvent): bigint | undefined {
  return resolved.event?.position?.commit ?? resolved.commitPosition;
}

/**
 * A resolved event as the port's RecordedEvent, or undefined when it carries no event (a link
 * whose target is gone). JSON data and metadata come back parsed by the client; binary payloads
 * are decoded as JSON when they are JSON, else kept as bytes.
 */
export function toRecordedEvent(resolved: ResolvedEvent | AllStreamResolvedEvent): RecordedEvent | undefined {
  const event = resolved.event;
  if (!event) return undefined;
  const commit = commitPositionOf(resolved);
  if (commit === undefined) {
    throw new KurrentEventStoreError(
      `KurrentDB returned event ${event.id} of ${event.streamId} without a log position (servers before 22.6 omit it on stream reads)`,
    );
  }
  return {
    id: event.id,
    stream: event.streamId,
    revision: toSafeNumber(event.revision, 'revision'),
    position: toSafeNumber(commit, 'position'),
    type: event.type,
    data: event.isJson ? event.data : decodeBytes(event.data),
    metadata: toEventMetadata(event.metadata, event.created),
  };
}

/** A new event as the client's JSON event data; the caller's id is kept, else a fresh UUID. */
export function toEventData(event: NewEvent): EventData {
  if (event.data === undefined) throw new TypeError(`event ${event.type}: data must be a JSON value, not undefined`);
  return jsonEvent({
    id: event.id ?? newEventId(),
    type: event.type,
    data: event.data as JSONType,
    metadata: event.metadata as unknown as JSONType,
  });
}

/** Exponential resubscription delay: `initial * 2^attempt`, capped at `max`. */
export function resubscribeDelay(attempt: number, initialMs: number, maxMs: number): number {
  return Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
}

/** `scheme://hosts` of a connection string, without credentials or query, for error messages. */
export function describeTarget(connectionString: string): string {
  const match = /^([a-z+]+:\/\/)(?:[^@/?]*@)?([^/?]*)/i.exec(connectionString.trim());
  return match ? `${match[1]}${match[2]}` : 'unrecognised form';
}

/** A delay `setTimeout` honours (it fires at once on Infinity or over 2^31-1 ms); undefined: no limit. */
function timerDelay(ms: number): number | undefined {
  if (!(ms > 0) || !Number.isFinite(ms)) return undefined;
  return Math.min(ms, 2 ** 31 - 1);
}

function toEventMetadata(metadata: unknown, created: Date): EventMetadata {
  const decoded = metadata instanceof Uint8Array ? decodeBytes(metadata) : metadata;
  const time = Number.isNaN(created.getTime()) ? undefined : created.toISOString();
  if (decoded !== null && typeof decoded === 'object' && !Array.isArray(decoded) && !(decoded instanceof Uint8Array)) {
    const record = decoded as Record<string, unknown>;
    if (typeof record.time === 'string' || time === undefined) return record as unknown as EventMetadata;
    // Events written by other tools may lack the port's `time`: the server's creation time stands in.
    return { ...record, time } as unknown as EventMetadata;
  }
  return { time: time ?? new Date(0).toISOString() };
}

function decodeBytes(bytes: Uint8Array): unknown {
  if (bytes.length === 0) return bytes;
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8')) as unknown;
  } catch {
    return bytes;
  }
}

function toSafeNumber(value: bigint, what: string): number {
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RangeError(`KurrentDB ${what} ${value} does not fit a port ${what}`);
  }
  return Number(value);
}

function clientErrorType(error: unknown): string | undefined {
  if (error === null || typeof error !== 'object') return undefined;
  const type = (error as { type?: unknown }).type;
  return typeof type === 'string' ? type : undefined;
}

function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const type = clientErrorType(error);
  // A plain Error (the client passes some gRPC errors through as such) needs no name in front.
  const parts = type === undefined && error.name === 'Error' ? [] : [type ?? error.name];
  const bare = [error.name, type, error.constructor?.name].includes(error.message); // e.g. 'UnavailableError'
  if (error.message && !bare) parts.push(error.message.trim());
  else if (type === ErrorType.UNAVAILABLE) parts.push('the server is not reachable or not ready');
  return parts.join(': ') || error.name;
}
