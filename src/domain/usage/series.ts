/**
 * An instance's resource use over the last hour and the last day, for its charts: a bounded time
 * series (telemetry beside the read models, not events), one point a minute for the hour and
 * one per 15 minutes for the day, each the mean of the samples that fell in it.
 */
export interface SeriesPoint {
  /** Start of the bucket (ISO 8601). */
  readonly t: string;
  /** How many samples the means below are of. */
  readonly n: number;
  readonly cpuPercent: number | null;
  readonly memoryBytes: number | null;
  readonly gpuMemoryBytes: number | null;
  /** Network, bytes per second received and sent (from the counters' growth between samples). */
  readonly rxBytesPerSecond: number | null;
  readonly txBytesPerSecond: number | null;
}

export interface Series {
  readonly id: string;
  readonly hour: readonly SeriesPoint[];
  readonly day: readonly SeriesPoint[];
  /** The last network counters, to turn the next ones into rates. */
  readonly last: { readonly at: string; readonly rxBytes: number; readonly txBytes: number } | null;
}

export interface Sample {
  readonly at: string;
  readonly cpuPercent: number | null;
  readonly memoryBytes: number | null;
  readonly gpuMemoryBytes: number | null;
  readonly rxBytes: number | null;
  readonly txBytes: number | null;
}

export const HOUR_BUCKET_MS = 60_000;
export const DAY_BUCKET_MS = 15 * 60_000;
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

type Values = Omit<SeriesPoint, 't' | 'n'>;

function mean(old: number | null, n: number, value: number | null): number | null {
  if (value === null) return old;
  if (old === null) return value;
  return old + (value - old) / (n + 1);
}

function addTo(points: readonly SeriesPoint[], bucketMs: number, keepMs: number, at: number, values: Values): SeriesPoint[] {
  const start = Math.floor(at / bucketMs) * bucketMs;
  const t = new Date(start).toISOString();
  const kept = points.filter((p) => Date.parse(p.t) > at - keepMs);
  const current = kept.at(-1);
  if (current && current.t === t) {
    const merged: SeriesPoint = {
      t, n: current.n + 1,
      cpuPercent: mean(current.cpuPercent, current.n, values.cpuPercent),
      memoryBytes: mean(current.memoryBytes, current.n, values.memoryBytes),
      gpuMemoryBytes: mean(current.gpuMemoryBytes, current.n, values.gpuMemoryBytes),
      rxBytesPerSecond: mean(current.rxBytesPerSecond, current.n, values.rxBytesPerSecond),
      txBytesPerSecond: mean(current.txBytesPerSecond, current.n, values.txBytesPerSecond),
    };
    return [...kept.slice(0, -1), merged];
  }
  // A sample older than the newest bucket (a clock step back) does not reorder the series.
  if (current && Date.parse(current.t) > start) return kept;
  return [...kept, { t, n: 1, ...values }];
}

const rate = (now: number | null, before: number, seconds: number) =>
  now === null || seconds <= 0 || now < before ? null : (now - before) / seconds;

/** The series with one more sample; points older than an hour (a day) are dropped. Pure. */
export function addSample(series: Series | null, id: string, sample: Sample): Series {
  const at = Date.parse(sample.at);
  const last = series?.last ?? null;
  const seconds = last ? (at - Date.parse(last.at)) / 1000 : 0;
  const values: Values = {
    cpuPercent: sample.cpuPercent,
    memoryBytes: sample.memoryBytes,
    gpuMemoryBytes: sample.gpuMemoryBytes,
    // A counter that went back (the container restarted) starts over: no rate for that step.
    rxBytesPerSecond: last ? rate(sample.rxBytes, last.rxBytes, seconds) : null,
    txBytesPerSecond: last ? rate(sample.txBytes, last.txBytes, seconds) : null,
  };
  return {
    id,
    hour: addTo(series?.hour ?? [], HOUR_BUCKET_MS, HOUR_MS, at, values),
    day: addTo(series?.day ?? [], DAY_BUCKET_MS, DAY_MS, at, values),
    last: sample.rxBytes !== null && sample.txBytes !== null ? { at: sample.at, rxBytes: sample.rxBytes, txBytes: sample.txBytes } : last,
  };
}

/** The points of a range as of `now` (older ones dropped even when no sample came since). */
export function pointsOf(series: Series | null, range: 'hour' | 'day', now: number): SeriesPoint[] {
  const keep = range === 'hour' ? HOUR_MS : DAY_MS;
  return (series?.[range] ?? []).filter((p) => Date.parse(p.t) > now - keep);
}
