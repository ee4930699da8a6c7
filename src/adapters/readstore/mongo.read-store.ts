import { MongoClient, MongoServerError } from 'mongodb';
import type { Collection, Db, Document, Sort } from 'mongodb';
import type {
  Filter,
  FindOptions,
  ReadCollection,
  ReadDocument,
  ReadStore,
  Stored,
} from '../../ports/read-store.port.ts';

/**
 * ReadStore over MongoDB (or FerretDB, which speaks its wire protocol).
 *
 * Each read model collection `name` lives in the Mongo collection `<prefix><name>` (prefix `rm_` by
 * default) and checkpoints in `<prefix>checkpoints`. A document is stored with `_id` = its `id` and
 * `_position` = the global position of the last event that wrote it; `id` is given back, `_id`
 * never. Writes are single conditional operations (no transactions, no change streams), so the
 * adapter also runs on FerretDB 1.x.
 */

export interface MongoReadStoreOptions {
  /** Database to use; defaults to the one named in the URL, else `tianqi`. */
  readonly database?: string;
  /** Prefix of every collection this store owns (dropAll drops exactly those); defaults to `rm_`. */
  readonly collectionPrefix?: string;
  /** How long to look for a server before giving up (ms); defaults to 5000. */
  readonly serverSelectionTimeoutMS?: number;
}

export const DEFAULT_DATABASE = 'tianqi';
export const DEFAULT_COLLECTION_PREFIX = 'rm_';
const CHECKPOINTS = 'checkpoints';
const DUPLICATE_KEY = 11000;
/**
 * Attempts of a conditional put that meets a duplicate key it cannot blame on a user index: a race
 * on `_id` clears on the next try, a user unique index (which FerretDB does not name) does not.
 */
const PUT_ATTEMPTS = 3;

/** Connects (failing fast when no server answers) and returns a ReadStore over `url`. */
export async function openMongoReadStore(url: string, options: MongoReadStoreOptions = {}): Promise<ReadStore> {
  const prefix = options.collectionPrefix ?? DEFAULT_COLLECTION_PREFIX;
  if (prefix.includes('$') || prefix.includes('\0') || prefix.startsWith('system.')) {
    throw new Error(`invalid MongoDB collection prefix ${JSON.stringify(prefix)}`);
  }
  const database = options.database ?? (databaseFromUrl(url) || DEFAULT_DATABASE);
  let client: MongoClient;
  try {
    client = new MongoClient(url, {
      serverSelectionTimeoutMS: options.serverSelectionTimeoutMS ?? 5_000,
      // Read models are JSON: an undefined field is absent, not null.
      ignoreUndefined: true,
    });
  } catch (error) {
    throw new Error(`invalid MongoDB URL ${redactMongoUrl(url)}: ${messageOf(error)}`, { cause: error });
  }
  try {
    await client.connect();
    await client.db(database).command({ ping: 1 });
  } catch (error) {
    await client.close().catch(() => undefined);
    throw new Error(`cannot reach MongoDB read store at ${redactMongoUrl(url)}: ${messageOf(error)}`, { cause: error });
  }
  return new MongoReadStore(client, client.db(database), prefix);
}

export class MongoReadStore implements ReadStore {
  readonly durable = true;
  readonly #collections = new Map<string, MongoReadCollection<ReadDocument>>();
  #closed = false;

  constructor(
    private readonly client: MongoClient,
    private readonly db: Db,
    private readonly prefix: string,
  ) {}

  collection<T extends ReadDocument>(name: string): ReadCollection<T> {
    if (name === CHECKPOINTS) {
      throw new Error(`"${CHECKPOINTS}" is reserved by the MongoDB read store; choose another collection name`);
    }
    if (!name || name.includes('$') || name.includes('\0')) {
      throw new Error(`invalid read model collection name ${JSON.stringify(name)}`);
    }
    let collection = this.#collections.get(name);
    if (!collection) {
      collection = new MongoReadCollection(this.db.collection(this.prefix + name));
      this.#collections.set(name, collection);
    }
    return collection as unknown as ReadCollection<T>;
  }

  async getCheckpoint(projection: string): Promise<number | undefined> {
    const found = await this.#checkpoints().findOne({ _id: projection });
    return typeof found?.position === 'number' ? found.position : undefined;
  }

  async setCheckpoint(projection: string, position: number): Promise<void> {
    assertPosition(position);
    await this.#checkpoints().updateOne({ _id: projection }, { $set: { position } }, { upsert: true });
  }

  async dropAll(): Promise<void> {
    const collections = await this.db.listCollections({}, { nameOnly: true }).toArray();
    for (const { name } of collections) {
      if (name.startsWith(this.prefix)) await this.db.dropCollection(name);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.client.close();
  }

  #checkpoints(): Collection<{ _id: string; position: number }> {
    return this.db.collection(this.prefix + CHECKPOINTS);
  }
}

/** A stored document as Mongo holds it. */
interface MongoDoc extends Document {
  _id: string;
  _position: number;
}

class MongoReadCollection<T extends ReadDocument> implements ReadCollection<T> {
  constructor(private readonly mongo: Collection<MongoDoc>) {}

  async get(id: string): Promise<Stored<T> | null> {
    const found = await this.mongo.findOne({ _id: id });
    return found ? fromMongo<T>(found) : null;
  }

  async find(filter: Filter = {}, options: FindOptions = {}): Promise<Stored<T>[]> {
    const cursor = this.mongo.find(toMongoFilter(filter), { sort: toMongoSort(options.sort) });
    if (options.skip !== undefined) cursor.skip(options.skip);
    if (options.limit !== undefined) cursor.limit(options.limit);
    return (await cursor.toArray()).map((doc) => fromMongo<T>(doc));
  }

  async findOne(filter: Filter): Promise<Stored<T> | null> {
    return (await this.find(filter, { limit: 1 }))[0] ?? null;
  }

  async count(filter: Filter = {}): Promise<number> {
    return this.mongo.countDocuments(toMongoFilter(filter));
  }

  async put(doc: T, position: number): Promise<boolean> {
    assertPosition(position);
    const id = doc.id;
    if (typeof id !== 'string' || id === '') throw new Error('a read model document needs a non-empty string id');
    const { id: _id, _id: _ignoredId, _position: _ignoredPosition, ...fields } = doc as T & Record<string, unknown>;
    const replacement = { ...fields, _id: id, _position: position } as MongoDoc;
    return oneAtATime(this.#key(id), () => this.#put(id, replacement, position));
  }

  async #put(id: string, replacement: MongoDoc, position: number): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      try {
        // Matches only a document older than `position`; when there is none, the upsert inserts,
        // which fails on `_id` if the document exists and has already seen `position`.
        const result = await this.mongo.replaceOne({ _id: id, _position: { $lt: position } }, replacement, {
          upsert: true,
        });
        return result.matchedCount + result.upsertedCount > 0;
      } catch (error) {
        if (!isDuplicateKey(error)) throw error;
        const stored = await this.mongo.findOne({ _id: id }, { projection: { _position: 1 } });
        if (stored && stored._position >= position) return false; // already seen: a replay
        // Otherwise either a user unique index refused the write (throw), or a concurrent put
        // inserted the same id between our filter and our insert (try again). A server that does not
        // name the index gets the retries, then the error.
        const index = duplicateKeyIndex(error);
        if ((index !== undefined && index !== '_id') || attempt >= PUT_ATTEMPTS) throw error;
      }
    }
  }

  async delete(id: string, position: number): Promise<boolean> {
    assertPosition(position);
    return oneAtATime(this.#key(id), async () => {
      const result = await this.mongo.deleteOne({ _id: id, _position: { $lt: position } });
      return result.deletedCount > 0;
    });
  }

  async ensureIndex(fields: Record<string, 1 | -1>, options: { unique?: boolean } = {}): Promise<void> {
    const keys = toMongoKeys(fields);
    const names = Object.keys(keys);
    if (names.length === 0) throw new Error('ensureIndex needs at least one field');
    if (names.length === 1 && names[0] === '_id') return; // ids are always indexed and unique
    await this.mongo.createIndex(keys, { unique: options.unique ?? false });
  }

  async all(): Promise<Stored<T>[]> {
    return (await this.mongo.find({}, { sort: { _id: 1 } }).toArray()).map((doc) => fromMongo<T>(doc));
  }

  #key(id: string): string {
    return `${this.mongo.namespace}\0${id}`;
  }
}

/**
 * Writes of one document queued in this process, whichever store or client issues them. MongoDB
 * applies a filtered replace or delete atomically, but FerretDB 1.24 reads the matching documents and
 * then writes them back by `_id` alone, so two concurrent conditional writes of one document can both
 * match the old version and the older position can land last. Queuing closes that window inside a
 * process; across processes FerretDB keeps it (MongoDB has none), so one replica at a time writes
 * the read models (the `projections` lease, see LeasedProjectionRunner).
 */
const queues = new Map<string, Promise<unknown>>();

async function oneAtATime<R>(key: string, write: () => Promise<R>): Promise<R> {
  const before = queues.get(key) ?? Promise.resolve();
  const run = before.then(write);
  const settled = run.catch(() => undefined);
  queues.set(key, settled);
  try {
    return await run;
  } finally {
    if (queues.get(key) === settled) queues.delete(key);
  }
}

function fromMongo<T extends ReadDocument>(doc: MongoDoc): Stored<T> {
  const { _id, ...rest } = doc;
  return { id: _id, ...rest } as unknown as Stored<T>;
}

/** `id` is `_id` in Mongo: renames top-level `id` keys, also inside `$and`, `$or` and `$nor`. */
function toMongoFilter(filter: Filter): Document {
  const out: Document = {};
  for (const [key, value] of Object.entries(filter)) {
    if ((key === '$and' || key === '$or' || key === '$nor') && Array.isArray(value)) {
      out[key] = value.map((clause: unknown) =>
        clause !== null && typeof clause === 'object' ? toMongoFilter(clause as Filter) : clause,
      );
    } else {
      out[key === 'id' ? '_id' : key] = value;
    }
  }
  return out;
}

function toMongoKeys(fields: Record<string, 1 | -1>): Record<string, 1 | -1> {
  const out: Record<string, 1 | -1> = {};
  for (const [key, direction] of Object.entries(fields)) out[key === 'id' ? '_id' : key] = direction;
  return out;
}

/** The requested order, then `_id` to break ties, so results (and skip/limit pages) are stable. */
function toMongoSort(sort: Record<string, 1 | -1> | undefined): Sort {
  const keys = toMongoKeys(sort ?? {});
  if (!('_id' in keys)) keys._id = 1;
  return keys;
}

function assertPosition(position: number): void {
  if (typeof position !== 'number' || !Number.isFinite(position)) {
    throw new Error(`invalid event position ${String(position)}`);
  }
}

function isDuplicateKey(error: unknown): error is MongoServerError {
  return error instanceof MongoServerError && error.code === DUPLICATE_KEY;
}

/**
 * Which index a duplicate-key error names: `_id`, another field list, or undefined when the server
 * does not say. MongoDB sets `keyPattern` and writes `… index: <name> dup key …`; FerretDB 1.24 does
 * neither (just `E11000 duplicate key error collection: <db>.<coll>`).
 */
function duplicateKeyIndex(error: MongoServerError): string | undefined {
  const pattern: unknown = error.keyPattern;
  if (pattern && typeof pattern === 'object' && Object.keys(pattern).length > 0) {
    return Object.keys(pattern).join(',');
  }
  const index = /index: (\S+)/.exec(error.errmsg ?? error.message)?.[1];
  if (index === undefined) return undefined;
  return index === '_id_' ? '_id' : index;
}

/** The database named in a `mongodb://` or `mongodb+srv://` URL, or '' when it names none. */
export function databaseFromUrl(url: string): string {
  const match = /^mongodb(?:\+srv)?:\/\/([^?#]*)/.exec(url);
  if (!match) return '';
  const rest = match[1] ?? '';
  const slash = rest.indexOf('/', rest.lastIndexOf('@') + 1);
  if (slash < 0) return '';
  try {
    return decodeURIComponent(rest.slice(slash + 1));
  } catch {
    return '';
  }
}

/** The URL without its password, for error messages. */
export function redactMongoUrl(url: string): string {
  return url.replace(/^(mongodb(?:\+srv)?:\/\/[^:/@]*):[^@/]*@/, '$1:***@');
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
