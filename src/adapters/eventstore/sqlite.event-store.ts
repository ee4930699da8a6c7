import Database from 'better-sqlite3';
import { Observable, Subject } from 'rxjs';
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

export interface SqliteEventStoreOptions {
  /**
   * `NORMAL` (default) keeps every committed append across a crash or `kill -9` of the process
   * (WAL mode); `FULL` also across a power loss, at the cost of an fsync per append.
   */
  readonly synchronous?: 'NORMAL' | 'FULL';
  /** How often a subscriber looks for appends made by another process on the same file. */
  readonly pollIntervalMs?: number;
}

interface EventRow {
  position: number;
  id: string;
  stream: string;
  revision: number;
  type: string;
  data: string;
  metadata: string;
}

type EventTuple = [number, string, string, number, string, string, string];

const PAGE = 1_000;

/** The embedded event store: one SQLite file, WAL, appends in `BEGIN IMMEDIATE` transactions. */
export class SqliteEventStore implements EventStore {
  private readonly db: Database.Database;
  /** Signals that something was appended; subscribers then read the log from their position. */
  private readonly appended = new Subject<void>();
  private readonly pollIntervalMs: number;
  private readonly statements;
  private readonly appendTx;

  constructor(file: string, options: SqliteEventStoreOptions = {}) {
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma(`synchronous = ${options.synchronous ?? 'NORMAL'}`);
    this.db.pragma('busy_timeout = 5000');
    this.pollIntervalMs = options.pollIntervalMs ?? 500;
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS events (
        position INTEGER PRIMARY KEY AUTOINCREMENT,
        id       TEXT NOT NULL UNIQUE,
        stream   TEXT NOT NULL,
        revision INTEGER NOT NULL,
        type     TEXT NOT NULL,
        data     TEXT NOT NULL,
        metadata TEXT NOT NULL,
        UNIQUE (stream, revision)
      );
    `);
    this.statements = {
      streamRevision: this.db.prepare<[string], { revision: number | null }>(
        'SELECT MAX(revision) AS revision FROM events WHERE stream = ?',
      ),
      insert: this.db.prepare<[string, string, number, string, string, string]>(
        'INSERT INTO events (id, stream, revision, type, data, metadata) VALUES (?, ?, ?, ?, ?, ?)',
      ),
      readStream: this.db.prepare<[string, number], EventRow>(
        'SELECT * FROM events WHERE stream = ? AND revision >= ? ORDER BY revision',
      ),
      readAll: this.db
        .prepare<[number, number], EventTuple>(
          'SELECT position, id, stream, revision, type, data, metadata FROM events WHERE position > ? ORDER BY position LIMIT ?',
        )
        .raw(true),
      head: this.db.prepare<[], { position: number | null }>('SELECT MAX(position) AS position FROM events'),
    };
    const append = (stream: string, events: readonly NewEvent[], expected: ExpectedRevision): AppendResult => {
      const current = this.statements.streamRevision.get(stream)?.revision ?? null;
      checkExpected(stream, expected, current);
      let revision = current ?? -1;
      let position = 0;
      for (const event of events) {
        revision += 1;
        const info = this.statements.insert.run(
          event.id ?? newEventId(),
          stream,
          revision,
          event.type,
          JSON.stringify(event.data),
          JSON.stringify(event.metadata),
        );
        position = Number(info.lastInsertRowid);
      }
      return { nextExpectedRevision: revision, position };
    };
    this.appendTx = this.db.transaction(append);
  }

  async append(stream: string, events: readonly NewEvent[], expected: ExpectedRevision): Promise<AppendResult> {
    if (events.length === 0) throw new Error('append needs at least one event');
    // IMMEDIATE takes the write lock before the revision check, so commit order is position order.
    const result = this.appendTx.immediate(stream, events, expected);
    this.appended.next();
    return result;
  }

  async readStream(stream: string, options: { fromRevision?: number } = {}): Promise<RecordedEvent[]> {
    return this.statements.readStream.all(stream, options.fromRevision ?? 0).map(toRecorded);
  }

  async readAll(options: { after?: Position; limit: number }): Promise<RecordedEvent[]> {
    return this.readAfter(options.after ?? 0, options.limit);
  }

  /** Synchronous page read; the rebuild and benchmark paths use it to skip a promise per page. */
  readAfter(after: Position, limit: number): RecordedEvent[] {
    // Raw rows (arrays) skip building a row object per event: this is the replay hot path.
    return this.statements.readAll.all(after, limit).map(([position, id, stream, revision, type, data, metadata]) => ({
      id,
      stream,
      revision,
      position,
      type,
      data: JSON.parse(data) as unknown,
      metadata: JSON.parse(metadata) as EventMetadata,
    }));
  }

  subscribe(after?: Position): Observable<RecordedEvent> {
    return new Observable<RecordedEvent>((subscriber) => {
      let last = after ?? 0;
      let pumping = false;
      let again = false;
      // Every wake-up reads the log from the last delivered position, so the switch from
      // catch-up to live can neither skip nor repeat an event.
      const pump = () => {
        if (pumping) {
          again = true;
          return;
        }
        pumping = true;
        try {
          do {
            again = false;
            for (;;) {
              const page = this.readAfter(last, PAGE);
              for (const event of page) {
                if (subscriber.closed) return;
                last = event.position;
                subscriber.next(event);
              }
              if (page.length < PAGE) break;
            }
          } while (again && !subscriber.closed);
        } catch (err) {
          subscriber.error(err);
        } finally {
          pumping = false;
        }
      };
      let scheduled = false;
      const wake = () => {
        if (scheduled) return;
        scheduled = true;
        queueMicrotask(() => {
          scheduled = false;
          pump();
        });
      };
      const live = this.appended.subscribe(wake);
      const poll = setInterval(wake, this.pollIntervalMs);
      poll.unref();
      wake();
      return () => {
        live.unsubscribe();
        clearInterval(poll);
      };
    });
  }

  async headPosition(): Promise<Position | undefined> {
    return this.statements.head.get()?.position ?? undefined;
  }

  async close(): Promise<void> {
    this.appended.complete();
    if (this.db.open) this.db.close();
  }
}

function checkExpected(stream: string, expected: ExpectedRevision, current: number | null): void {
  if (expected === 'any') return;
  if (expected === 'no-stream') {
    if (current !== null) throw new WrongExpectedRevisionError(stream, expected, current);
    return;
  }
  if (current !== expected) throw new WrongExpectedRevisionError(stream, expected, current ?? 'no-stream');
}

function toRecorded(row: EventRow): RecordedEvent {
  return {
    id: row.id,
    stream: row.stream,
    revision: row.revision,
    position: row.position,
    type: row.type,
    data: JSON.parse(row.data) as unknown,
    metadata: JSON.parse(row.metadata) as EventMetadata,
  };
}
