/**
 * Usage metering (计费): an instance is billed for the time its container was observed running
 * on a reachable node, at its spec's price per hour in force at that time, to the second.
 */

export interface BilledInterval {
  readonly start: string;
  /** null while it lasts. */
  readonly end: string | null;
  readonly pricePerHour: number;
}

export interface UsageRecord {
  readonly id: string;
  readonly ownerId: string;
  readonly ownerName: string;
  readonly name: string;
  readonly specId: string;
  readonly nodeId: string;
  /** The container was last observed running. */
  readonly running: boolean;
  /** The node's engine answers (a node outage stops the meter: nobody can use the instance). */
  readonly nodeUp: boolean;
  readonly deleted: boolean;
  readonly pricePerHour: number;
  readonly intervals: readonly BilledInterval[];
  /** GPUs it holds while running (cards 1 each, vGPU slices by share): GPU-hours are billed hours × this. */
  readonly gpus?: number;
  /** 无卡模式 (`none`): metered at the spec's no-GPU price; absent: `gpu`. */
  readonly gpuMode?: 'gpu' | 'none';
}

export type UsageChange = Partial<Pick<UsageRecord, 'running' | 'nodeUp' | 'deleted' | 'pricePerHour' | 'nodeId' | 'gpus' | 'gpuMode'>>;

export const billable = (r: Pick<UsageRecord, 'running' | 'nodeUp' | 'deleted'>) => r.running && r.nodeUp && !r.deleted;

/** Applies a change at time `at`: closes the running interval and/or opens a new one as needed. */
export function applyUsageChange(record: UsageRecord, at: string, change: UsageChange): UsageRecord {
  const next = { ...record, ...change };
  const wasBilled = billable(record);
  const isBilled = billable(next);
  const repriced = change.pricePerHour !== undefined && change.pricePerHour !== record.pricePerHour;
  let intervals = record.intervals;
  if (wasBilled && (!isBilled || repriced)) {
    intervals = intervals.map((i, n) => (n === intervals.length - 1 && i.end === null ? { ...i, end: at } : i));
  }
  if (isBilled && (!wasBilled || repriced)) {
    intervals = [...intervals, { start: at, end: null, pricePerHour: next.pricePerHour }];
  }
  return { ...next, intervals };
}

export interface Usage {
  /** Whole seconds billed inside the window. */
  readonly seconds: number;
  /** Sum of seconds × price per hour / 3600, rounded to 4 decimals. */
  readonly cost: number;
}

/** The start of `now`'s calendar month in UTC (the usage report's default window). */
export function monthStart(now: string): string {
  const d = new Date(now);
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1)).toISOString();
}

/** GPU-hours of these records from the start of `now`'s month to `now`, two decimals. */
export function gpuHoursThisMonth(records: readonly Pick<UsageRecord, 'intervals' | 'gpus'>[], now: string): number {
  const from = monthStart(now);
  let hours = 0;
  for (const r of records) if (r.gpus) hours += (usageInWindow(r, from, now, now).seconds / 3600) * r.gpus;
  return Math.round(hours * 100) / 100;
}

/** What a record costs inside [from, to); an open interval counts up to `now`. */
export function usageInWindow(record: Pick<UsageRecord, 'intervals'>, from: string, to: string, now: string): Usage {
  const windowStart = Date.parse(from);
  const windowEnd = Math.min(Date.parse(to), Date.parse(now));
  let seconds = 0;
  let cost = 0;
  for (const i of record.intervals) {
    const start = Math.max(Date.parse(i.start), windowStart);
    const end = Math.min(i.end === null ? Date.parse(now) : Date.parse(i.end), windowEnd);
    if (end <= start) continue;
    const s = Math.floor((end - start) / 1000);
    seconds += s;
    cost += (s * i.pricePerHour) / 3600;
  }
  return { seconds, cost: Math.round(cost * 10_000) / 10_000 };
}

/**
 * What these records cost from `from` to `now`, in units of 1/10,000 of the currency: each
 * instance's cost rounded once (as the usage report shows it), then summed. The prepaid balance's
 * usage side (`domain/billing/balance.decider.ts`).
 */
export function usageUnitsSince(records: readonly Pick<UsageRecord, 'intervals'>[], from: string, now: string): number {
  let units = 0;
  for (const r of records) units += Math.round(usageInWindow(r, from, now, now).cost * 10_000);
  return units;
}
