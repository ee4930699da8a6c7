import type { Logger } from 'pino';
import { BehaviorSubject, distinctUntilChanged, type Observable } from 'rxjs';

/**
 * Named, time-limited, exclusive leases: at most one holder (a replica) holds a lease at a time. A
 * holder keeps its lease by renewing it before it runs out; once it stops (crash, partition),
 * another holder may take it when it has run out; a release hands it over at once. Expiry times
 * are wall-clock milliseconds of the holder that wrote them, so the replicas' clocks must agree to
 * well within the safety margin of LeaseKeeper (a fifth of the TTL; NTP does).
 * Every adapter passes test/contract/lease-store.contract.ts.
 */
export interface LeaseStore {
  /**
   * Takes `name` for `holder` until `ttlMs` from now when it is free (never taken, run out or
   * released); a lease `holder` already holds is renewed. True when `holder` holds it now.
   */
  acquire(name: string, holder: string, ttlMs: number): Promise<boolean>;
  /** Extends `holder`'s lease to `ttlMs` from now; false when `holder` does not hold it (any more). */
  renew(name: string, holder: string, ttlMs: number): Promise<boolean>;
  /** Gives the lease up if `holder` holds it, so that another holder can take it at once. */
  release(name: string, holder: string): Promise<void>;
  /** Who holds `name` now, or null when it is free. */
  holderOf(name: string): Promise<LeaseHolder | null>;
  close(): Promise<void>;
}

export interface LeaseHolder {
  readonly holder: string;
  /** Wall-clock time (ms) at which the lease runs out unless renewed. */
  readonly expiresAt: number;
}

export interface LeaseTiming {
  /** How long a lease lasts without renewal: after a crash, another replica takes over within this. */
  readonly ttlMs: number;
  /** How often the holder renews its lease, and how often the others try to take it. */
  readonly renewEveryMs: number;
}

/** What a replica needs to take part in leases. */
export interface Leasing {
  readonly leases: LeaseStore;
  /** This replica's name as a lease holder: unique among the replicas. */
  readonly holder: string;
  readonly timing: LeaseTiming;
}

/**
 * Holds one lease for as long as it can: tries to take it every `renewEveryMs`, renews it as often
 * while it holds it, and turns `held$` false as soon as it cannot be sure it still holds it:
 * when a renewal is refused, or when no renewal succeeded in time.
 *
 * "In time" keeps a safety margin of a fifth of the TTL: a renewal sent at `t` is trusted until
 * `t + ttl - margin` (local monotonic clock), and a renewal only counts when its answer came back
 * before the previous one ran out. Another replica can take the lease only after `t + ttl` on its
 * own clock, so the work of the old holder has stopped before the new one starts, unless the
 * clocks differ by more than the margin.
 */
export class LeaseKeeper {
  private readonly state$ = new BehaviorSubject(false);
  /** True while this keeper holds the lease; emits the current state on subscription. */
  readonly held$: Observable<boolean> = this.state$.pipe(distinctUntilChanged());
  /** performance.now() until which the last successful renewal is trusted. */
  private validUntil = 0;
  private deadline?: NodeJS.Timeout;
  private next?: NodeJS.Timeout;
  private attempt: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly store: LeaseStore,
    readonly name: string,
    readonly holder: string,
    private readonly timing: LeaseTiming,
    private readonly logger?: Logger,
  ) {
    if (!(timing.renewEveryMs > 0) || timing.renewEveryMs * 2 >= timing.ttlMs) {
      throw new Error(`a lease must be renewed at least twice per TTL (renew every ${timing.renewEveryMs} ms, TTL ${timing.ttlMs} ms)`);
    }
  }

  get held(): boolean {
    return this.state$.value;
  }

  /** Makes the first attempt and resolves with its outcome; then keeps trying, or renewing. */
  async start(): Promise<boolean> {
    await this.tick();
    return this.held;
  }

  /** Stops trying and renewing, and releases the lease so that another replica takes it at once. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.next);
    clearTimeout(this.deadline);
    // The release must be the last write: wait for a request in flight, but not for a hung store.
    await Promise.race([this.attempt, new Promise((resolve) => setTimeout(resolve, this.timing.renewEveryMs).unref())]);
    if (this.held) this.state$.next(false);
    this.state$.complete();
    await this.store.release(this.name, this.holder).catch((err: unknown) => {
      this.logger?.warn({ err, lease: this.name }, 'could not release a lease; it runs out by itself');
    });
  }

  private tick(): Promise<void> {
    this.attempt = this.try().then(() => {
      if (!this.stopped) this.next = setTimeout(() => void this.tick(), this.timing.renewEveryMs).unref();
    });
    return this.attempt;
  }

  private async try(): Promise<void> {
    const held = this.held;
    const sent = performance.now();
    let answer: boolean;
    try {
      answer = held
        ? await this.store.renew(this.name, this.holder, this.timing.ttlMs)
        : await this.store.acquire(this.name, this.holder, this.timing.ttlMs);
    } catch (err) {
      // While held, the work goes on until the deadline: the store may answer again before it.
      this.logger?.warn({ err, lease: this.name }, held ? 'could not renew a lease; retrying until it runs out' : 'could not try to take a lease');
      return;
    }
    if (this.stopped) return;
    if (!answer) {
      if (held && this.held) this.lose('another replica holds it');
      return;
    }
    const trustedUntil = held ? this.validUntil : sent + this.validityMs;
    if (held !== this.held || performance.now() >= trustedUntil) {
      // It ran out here while the answer was on its way; the next attempt takes it afresh.
      if (this.held) this.lose('the renewal came back too late');
      return;
    }
    this.validUntil = sent + this.validityMs;
    this.armDeadline();
    if (!held) {
      this.logger?.info({ lease: this.name, holder: this.holder }, 'holds a lease');
      this.state$.next(true);
    }
  }

  /** How long a successful renewal is trusted, counted from when it was sent. */
  private get validityMs(): number {
    return this.timing.ttlMs - this.timing.ttlMs / 5;
  }

  private armDeadline(): void {
    clearTimeout(this.deadline);
    this.deadline = setTimeout(() => {
      if (!this.held || this.stopped) return;
      if (performance.now() < this.validUntil) this.armDeadline();
      else this.lose('it was not renewed in time');
    }, Math.max(0, this.validUntil - performance.now())).unref();
  }

  private lose(why: string): void {
    clearTimeout(this.deadline);
    this.logger?.warn({ lease: this.name, holder: this.holder, why }, 'lost a lease');
    this.state$.next(false);
  }
}
