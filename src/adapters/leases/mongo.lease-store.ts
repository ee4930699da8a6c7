import { MongoClient, MongoServerError, type Collection } from 'mongodb';
import type { LeaseHolder, LeaseStore } from '../../ports/lease.port.ts';
import { DEFAULT_DATABASE, databaseFromUrl, redactMongoUrl } from '../readstore/mongo.read-store.ts';

export interface MongoLeaseStoreOptions {
  /** Database to use; defaults to the one named in the URL, else `tianqi` (as the read store). */
  readonly database?: string;
  /** Collection of the leases; defaults to `leases` (outside the read models' prefix: a rebuild keeps it). */
  readonly collection?: string;
  /** Wall clock (ms); tests move it. */
  readonly now?: () => number;
}

/**
 * One term of one lease. Taking a lease inserts the document of its next term, and only the first
 * insert of a term succeeds (the unique `_id`); the holder then renews by updating its own term's
 * expiry, which nobody else writes. Conditional updates alone would not do: FerretDB 1.24 reads the
 * matching document and writes it back by `_id` without holding it, so two replicas could both
 * "update an expired lease" at once and both believe they hold it.
 */
interface TermDoc {
  _id: string;
  name: string;
  term: number;
  holder: string;
  /** Wall-clock ms of the holder that wrote it; 0 once released. */
  expiresAt: number;
  takenAt: Date;
}

const DUPLICATE_KEY = 11000;

/** Connects (failing fast when no server answers) and returns the leases kept in MongoDB at `url`. */
export async function openMongoLeaseStore(url: string, options: MongoLeaseStoreOptions = {}): Promise<MongoLeaseStore> {
  const database = options.database ?? (databaseFromUrl(url) || DEFAULT_DATABASE);
  // A client of its own: renewals must not queue behind the read models' writes. A call hung on a
  // half-open connection fails after socketTimeoutMS instead of stopping the renewals for good.
  const client = new MongoClient(url, { serverSelectionTimeoutMS: 5_000, socketTimeoutMS: 10_000 });
  try {
    await client.connect();
    const leases = client.db(database).collection<TermDoc>(options.collection ?? 'leases');
    await leases.createIndex({ name: 1, term: -1 });
    return new MongoLeaseStore(client, leases, options.now ?? Date.now);
  } catch (error) {
    await client.close().catch(() => undefined);
    throw new Error(`cannot reach MongoDB for leases at ${redactMongoUrl(url)}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
}

export class MongoLeaseStore implements LeaseStore {
  constructor(
    private readonly client: MongoClient,
    private readonly leases: Collection<TermDoc>,
    private readonly now: () => number,
  ) {}

  async acquire(name: string, holder: string, ttlMs: number): Promise<boolean> {
    const latest = await this.latest(name);
    const now = this.now();
    if (latest && latest.expiresAt > now) return latest.holder === holder && this.extend(latest, now + ttlMs);
    const term = (latest?.term ?? 0) + 1;
    const _id = `${name}#${term}`;
    try {
      await this.leases.insertOne({ _id, name, term, holder, expiresAt: now + ttlMs, takenAt: new Date(now) });
    } catch (error) {
      if (error instanceof MongoServerError && error.code === DUPLICATE_KEY) return false; // another replica took this term
      throw error;
    }
    // A decision made on an old read can insert a term below the newest one: then it is not ours.
    if (await this.newerTerm(name, term)) {
      await this.leases.deleteOne({ _id, holder });
      return false;
    }
    // Older terms are history: keep one document per lease.
    await this.leases.deleteMany({ name, term: { $lt: term } });
    return true;
  }

  async renew(name: string, holder: string, ttlMs: number): Promise<boolean> {
    const latest = await this.latest(name);
    const now = this.now();
    if (!latest || latest.holder !== holder || latest.expiresAt <= now) return false;
    return this.extend(latest, now + ttlMs);
  }

  async release(name: string, holder: string): Promise<void> {
    const latest = await this.latest(name);
    if (latest?.holder === holder && latest.expiresAt > 0) await this.leases.updateOne({ _id: latest._id, holder }, { $set: { expiresAt: 0 } });
  }

  async holderOf(name: string): Promise<LeaseHolder | null> {
    const latest = await this.latest(name);
    return latest && latest.expiresAt > this.now() ? { holder: latest.holder, expiresAt: latest.expiresAt } : null;
  }

  async close(): Promise<void> {
    await this.client.close();
  }

  private latest(name: string): Promise<TermDoc | null> {
    return this.leases.findOne({ name }, { sort: { term: -1 } });
  }

  private newerTerm(name: string, term: number): Promise<TermDoc | null> {
    return this.leases.findOne({ name, term: { $gt: term } });
  }

  /** Moves the expiry of the holder's own term; false when that term is gone or a newer one exists. */
  private async extend(own: TermDoc, expiresAt: number): Promise<boolean> {
    const result = await this.leases.updateOne({ _id: own._id, holder: own.holder }, { $set: { expiresAt } });
    return result.matchedCount > 0 && !(await this.newerTerm(own.name, own.term));
  }
}
