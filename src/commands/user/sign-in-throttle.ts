import { LoginThrottle, TooManyAttemptsError } from './login-throttle.ts';

/**
 * Failed sign-ins counted three ways, for every way in (HTTP `/auth/login`, `/auth/password`, the
 * SSH jump host), so that neither spreading guesses over many addresses nor over many usernames
 * gets around it:
 * - one address and one username: 10 failures in a minute block the pair for a minute;
 * - one username from anywhere: 20 failures in 10 minutes block password sign-ins to it for 10
 *   minutes (a registered SSH key still signs in: it cannot be guessed);
 * - one address, any usernames: 30 failures in 10 minutes block the address for 10 minutes.
 * Counts live in each replica's memory.
 */
export class SignInThrottle {
  private readonly pairs: LoginThrottle;
  private readonly usernames: LoginThrottle;
  private readonly addresses: LoginThrottle;

  constructor(clock: () => number = Date.now) {
    this.pairs = new LoginThrottle(10, 60_000, 60_000, clock);
    this.usernames = new LoginThrottle(20, 600_000, 600_000, clock);
    this.addresses = new LoginThrottle(30, 600_000, 600_000, clock);
  }

  /** Seconds until a password sign-in for `username` from `address` may be tried; 0 when it may now. */
  blockedFor(username: string, address: string): number {
    const name = username.toLowerCase();
    return Math.max(this.pairs.isBlocked(`${address}|${name}`), this.usernames.isBlocked(name), this.addresses.isBlocked(address));
  }

  /** Throws 429 TOO_MANY_ATTEMPTS while blocked. */
  check(username: string, address: string): void {
    const seconds = this.blockedFor(username, address);
    if (seconds > 0) throw new TooManyAttemptsError(seconds);
  }

  failed(username: string, address: string): void {
    const name = username.toLowerCase();
    this.pairs.failed(`${address}|${name}`);
    this.usernames.failed(name);
    this.addresses.failed(address);
  }

  /** The pair and the username start over; the address keeps its count (one good account must not wash another's guesses). */
  succeeded(username: string, address: string): void {
    const name = username.toLowerCase();
    this.pairs.succeeded(`${address}|${name}`);
    this.usernames.succeeded(name);
  }
}
