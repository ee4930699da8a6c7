/**
 * Idle auto-stop (空闲自动关机): an admin's policy on a spec stops its instances that nobody uses.
 * An instance is busy while a terminal, SSH or SFTP session or forward is open, for a while after
 * any of them or a service page was last used, and while its CPU or any of its GPUs works above
 * the policy's thresholds. Without a fresh sample nothing is decided (no stop on missing data,
 * and no idle period lost to a late one).
 * Idle from one moment on, it is warned `warnMinutes` before the stop and stopped after `minutes`.
 * The moments are events on the instance's stream (`InstanceIdleStarted`, `InstanceIdleWarned`,
 * `InstanceIdleStopFired`), so a restart or another replica goes on from them.
 */
export interface IdlePolicy {
  /** Idle this long, the instance is stopped. */
  readonly minutes: number;
  /** CPU below this (percent of one core, as `docker stats`) counts as idle. */
  readonly cpuPercent: number;
  /** Every GPU below this utilisation counts as idle. */
  readonly gpuPercent: number;
  /** Whether the owner may switch it off for their instance. */
  readonly optOutAllowed: boolean;
}

export const IDLE_LIMITS = { minMinutes: 5, maxMinutes: 7 * 24 * 60 } as const;
/** The warning comes this long before the stop (or at the half for a short policy). */
export const WARN_MINUTES = 10;
/** A sample older than this tells nothing about now. */
export const SAMPLE_FRESH_MS = 3 * 60_000;

export function idlePolicyProblems(p: IdlePolicy): Record<string, string> {
  const problems: Record<string, string> = {};
  if (!Number.isInteger(p.minutes) || p.minutes < IDLE_LIMITS.minMinutes || p.minutes > IDLE_LIMITS.maxMinutes) {
    problems['idleStop.minutes'] = `must be a whole number of minutes ${IDLE_LIMITS.minMinutes}–${IDLE_LIMITS.maxMinutes}`;
  }
  for (const field of ['cpuPercent', 'gpuPercent'] as const) {
    if (!Number.isFinite(p[field]) || p[field] < 0 || p[field] > 100) problems[`idleStop.${field}`] = 'must be 0–100';
  }
  return problems;
}

/** What the platform knows of an instance at one moment. */
export interface IdleFacts {
  /** Sessions and forwards open into it now. */
  readonly openSessions: number;
  /** The last time a session opened or closed, a service page was used, or it started. */
  readonly lastActivityAt: string;
  /** The newest usage sample, or null. */
  readonly sample: { readonly at: string; readonly cpuPercent: number | null; readonly gpuPercents: readonly (number | null)[] } | null;
  /** Whether it has GPUs (their samples must then say idle too). */
  readonly hasGpus: boolean;
  /** Since when it has been idle, as recorded; null while busy. */
  readonly idleSince: string | null;
  /** Whether the coming stop of this idle period has been warned of. */
  readonly warned: boolean;
  readonly optedOut: boolean;
}

export type IdleAction =
  | { readonly kind: 'none' }
  | { readonly kind: 'idle'; readonly since: string }
  | { readonly kind: 'busy' }
  | { readonly kind: 'warn'; readonly stopAt: string }
  | { readonly kind: 'stop' };

/** Minutes before the stop that the warning comes. */
export function warnMinutes(policy: IdlePolicy): number {
  return Math.min(WARN_MINUTES, Math.floor(policy.minutes / 2));
}

/** Whether the instance works now, by its sessions and its newest sample; `unknown` without a usable sample. */
export function busyNow(policy: IdlePolicy, facts: IdleFacts, now: number): 'busy' | 'idle' | 'unknown' {
  if (facts.openSessions > 0) return 'busy';
  const sample = facts.sample;
  if (!sample || now - Date.parse(sample.at) > SAMPLE_FRESH_MS || sample.cpuPercent === null) return 'unknown';
  if (sample.cpuPercent >= policy.cpuPercent) return 'busy';
  if (facts.hasGpus) {
    if (sample.gpuPercents.some((g) => g !== null && g >= policy.gpuPercent)) return 'busy';
    // A card that does not say how busy it is: not known to be idle.
    if (sample.gpuPercents.length === 0 || sample.gpuPercents.some((g) => g === null)) return 'unknown';
  }
  return 'idle';
}

/** The one next step for an instance under a policy at `now` (ISO time). */
export function idleStep(policy: IdlePolicy | null, facts: IdleFacts, nowIso: string): IdleAction {
  const now = Date.parse(nowIso);
  if (!policy || facts.optedOut) return facts.idleSince ? { kind: 'busy' } : { kind: 'none' };
  const found = busyNow(policy, facts, now);
  if (found === 'unknown') return { kind: 'none' };
  if (found === 'busy') return facts.idleSince ? { kind: 'busy' } : { kind: 'none' };
  // Idle now. First seen idle: from now (the CPU may have worked until the last sample). Used
  // meanwhile (a session came and went, a page was opened): from that use, the clock starts over.
  if (!facts.idleSince) return { kind: 'idle', since: nowIso };
  if (facts.idleSince < facts.lastActivityAt) return { kind: 'idle', since: facts.lastActivityAt };
  const since = facts.idleSince;
  const idleMs = now - Date.parse(since);
  if (idleMs >= policy.minutes * 60_000) return { kind: 'stop' };
  if (!facts.warned && idleMs >= (policy.minutes - warnMinutes(policy)) * 60_000) {
    return { kind: 'warn', stopAt: new Date(Date.parse(since) + policy.minutes * 60_000).toISOString() };
  }
  return { kind: 'none' };
}
