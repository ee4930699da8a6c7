import { DomainError } from '../../domain/shared/errors.ts';

export class TooManyAttemptsError extends DomainError {
  readonly status = 429;
  constructor(retryAfterSeconds: number) {
    super('TOO_MANY_ATTEMPTS', `Too many failed sign-ins. Try again in ${retryAfterSeconds} s.`);
  }
}

/**
 * Refuses a key (client address, or address + username) for a cool-down after `maxFailures`
 * failed attempts within `windowMs`. Shared by REST login and the SSH jump host.
 */
export class LoginThrottle {
  private readonly failures = new Map<string, number[]>();
  private readonly blockedUntil = new Map<string, number>();

  constructor(
    private readonly maxFailures = 5,
    private readonly windowMs = 60_000,
    private readonly coolDownMs = 60_000,
    private readonly clock: () => number = Date.now,
  ) {}

  isBlocked(key: string): number {
    const until = this.blockedUntil.get(key) ?? 0;
    const now = this.clock();
    if (until <= now) {
      this.blockedUntil.delete(key);
      return 0;
    }
    return Math.ceil((until - now) / 1000);
  }

  check(key: string): void {
    const seconds = this.isBlocked(key);
    if (seconds > 0) throw new TooManyAttemptsError(seconds);
  }

  failed(key: string): void {
    const now = this.clock();
    const recent = (this.failures.get(key) ?? []).filter((t) => t > now - this.windowMs);
    recent.push(now);
    if (recent.length >= this.maxFailures) {
      this.blockedUntil.set(key, now + this.coolDownMs);
      this.failures.delete(key);
    } else {
      this.failures.set(key, recent);
    }
    if (this.failures.size > 10_000) this.prune(now);
  }

  succeeded(key: string): void {
    this.failures.delete(key);
  }

  private prune(now: number): void {
    for (const [key, times] of this.failures) if (times.every((t) => t <= now - this.windowMs)) this.failures.delete(key);
  }
}
