import type { EventStore, RecordedEvent } from '../ports/event-store.port.ts';
import type { ReadStore } from '../ports/read-store.port.ts';

/**
 * A durable read store records which event log it was built from, so that it is never served for
 * another one: a fresh log pointed at an old database, or two labs sharing one database, would
 * otherwise show foreign documents and skip events behind foreign checkpoints.
 *
 * A log is known by its first event: its id is a UUID written once and never changed, so the
 * identity needs nothing stored in the log itself and holds for logs older than this check.
 */
export const LOG_IDENTITY = 'event_log';
const ID = 'event-log';

export interface LogIdentity {
  readonly id: typeof ID;
  readonly firstEventId: string;
  readonly firstEventTime: string;
  readonly adoptedAt: string;
}

/** Where the two stores are, in words, for the error message. */
export interface StoreDescriptions {
  readonly eventStore: string;
  readonly readStore: string;
}

export class ForeignReadModelsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ForeignReadModelsError';
  }
}

/**
 * Checks that the durable read store was built from `events`, and records the log's identity in a
 * store that has none yet (a new database, or one built before identities were recorded, whose
 * checkpoints must then not lie beyond the log's head). `pending` means both are still empty: call
 * again once the log has its first event.
 */
export async function checkLogIdentity(
  events: EventStore,
  store: ReadStore,
  projectionNames: readonly string[],
  where: StoreDescriptions,
): Promise<'not-durable' | 'matches' | 'adopted' | 'pending'> {
  if (!store.durable) return 'not-durable';
  const first = (await events.readAll({ limit: 1 }))[0];
  const identities = store.collection<LogIdentity>(LOG_IDENTITY);
  const recorded = await identities.get(ID);
  if (recorded) {
    if (first?.id === recorded.firstEventId) return 'matches';
    throw foreign(where, recorded, first);
  }
  const head = (await events.headPosition()) ?? 0;
  for (const name of projectionNames) {
    const checkpoint = (await store.getCheckpoint(name)) ?? 0;
    if (checkpoint > head) throw foreign(where, undefined, first, `its "${name}" checkpoint is at position ${checkpoint}, beyond the last event of this log (${head})`);
  }
  if (!first) return 'pending';
  await adoptLogIdentity(store, first);
  // Another replica may have recorded a different log at the same moment.
  const now = await identities.get(ID);
  if (now?.firstEventId !== first.id) throw foreign(where, now ?? undefined, first);
  return 'adopted';
}

/** Records `first` as the log the store is built from (after `npm run rebuild` dropped it all). */
export async function adoptLogIdentity(store: ReadStore, first: RecordedEvent): Promise<void> {
  const identity: LogIdentity = { id: ID, firstEventId: first.id, firstEventTime: first.metadata.time, adoptedAt: new Date().toISOString() };
  // Written once: a second put at the same position changes nothing.
  await store.collection<LogIdentity>(LOG_IDENTITY).put(identity, first.position);
}

function foreign(where: StoreDescriptions, recorded: LogIdentity | undefined, first: RecordedEvent | undefined, detail?: string): ForeignReadModelsError {
  const built = recorded
    ? `the log whose first event is ${recorded.firstEventId} (written ${recorded.firstEventTime})`
    : `another log (${detail ?? 'unknown'})`;
  const ours = first ? `first event ${first.id} (written ${first.metadata.time})` : 'no events yet';
  return new ForeignReadModelsError(
    [
      `The read models in ${where.readStore} were built from another event log; refusing to serve them.`,
      `  read models built from: ${built}`,
      `  this app's event log:   ${where.eventStore}, ${ours}`,
      'Either point TIANQI_MONGO_URL at the database built from this event log (or TIANQI_EVENTSTORE_URL /',
      'TIANQI_DATA_DIR at the log these read models belong to), or replace these read models with ones',
      'built from this log: run `npm run rebuild` with the same settings (it drops them and replays the log).',
    ].join('\n'),
  );
}
