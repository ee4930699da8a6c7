import type { Observable } from 'rxjs';

/**
 * The event log. Revisions are 0-based per stream; positions are global, increasing in commit
 * order, and comparable across streams. Every adapter passes test/contract/event-store.contract.ts.
 */
export interface EventStore {
  append(stream: string, events: readonly NewEvent[], expected: ExpectedRevision): Promise<AppendResult>;
  /** All events of one stream in revision order; an empty array when the stream does not exist. */
  readStream(stream: string, options?: { fromRevision?: number }): Promise<RecordedEvent[]>;
  /** Events with a global position greater than `after` (from the start when omitted), in order. */
  readAll(options: { after?: Position; limit: number }): Promise<RecordedEvent[]>;
  /**
   * Catches up from `after` (exclusive; from the start when omitted), then follows live appends.
   * No event is skipped or delivered twice at the switch from catch-up to live.
   */
  subscribe(after?: Position): Observable<RecordedEvent>;
  /** Position of the last event in the log, or undefined while the log is empty. */
  headPosition(): Promise<Position | undefined>;
  close(): Promise<void>;
}

export type Position = number;

/**
 * - a number: the revision of the stream's last event; the append fails unless it still is
 * - `no-stream`: the stream must not exist yet
 * - `any`: no check
 */
export type ExpectedRevision = number | 'no-stream' | 'any';

export interface EventMetadata {
  /** Acting user; absent for the system itself. */
  readonly userId?: string;
  readonly correlationId?: string;
  readonly causationId?: string;
  /** ISO-8601 time the command was accepted. */
  readonly time: string;
  /** Client address of the request that caused the event, for the audit feed. */
  readonly clientIp?: string;
}

export interface NewEvent<Type extends string = string, Data = unknown> {
  /** UUID; the store generates one when it is absent. */
  readonly id?: string;
  readonly type: Type;
  readonly data: Data;
  readonly metadata: EventMetadata;
}

export interface RecordedEvent<Type extends string = string, Data = unknown> {
  readonly id: string;
  readonly stream: string;
  readonly revision: number;
  readonly position: Position;
  readonly type: Type;
  readonly data: Data;
  readonly metadata: EventMetadata;
}

export interface AppendResult {
  /** Revision of the last appended event: the expected revision of the next append. */
  readonly nextExpectedRevision: number;
  /** Global position of the last appended event. */
  readonly position: Position;
}

export class WrongExpectedRevisionError extends Error {
  constructor(
    readonly stream: string,
    readonly expected: ExpectedRevision,
    readonly actual: number | 'no-stream',
  ) {
    super(`stream ${stream}: expected revision ${String(expected)}, actual ${String(actual)}`);
    this.name = 'WrongExpectedRevisionError';
  }
}
