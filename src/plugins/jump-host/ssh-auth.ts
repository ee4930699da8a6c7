import type { AuthContext, AuthenticationType, ParsedKey } from 'ssh2';
import ssh2 from 'ssh2';
import type { Accounts } from '../../commands/user/accounts.ts';
import { LoginThrottle } from '../../commands/user/login-throttle.ts';
import type { UserView } from '../../projections/users.projection.ts';

export const AUTH_METHODS: AuthenticationType[] = ['publickey', 'password'];

/** RSA keys sign with SHA-2 under other algorithm names than their key type. */
const RSA_SIGNATURE_ALGORITHMS = new Set(['ssh-rsa', 'rsa-sha2-256', 'rsa-sha2-512']);

export type AuthOutcome =
  | { readonly kind: 'signed-in'; readonly user: UserView }
  /** The client asked whether a key would do, and it would: it signs with it next. */
  | { readonly kind: 'key-acceptable' }
  | { readonly kind: 'refused'; readonly why: 'blocked' | 'method' | 'credentials' | 'unknown-key' };

/**
 * Password (the platform account) or a public key the user registered. Five failures from one
 * address within a minute refuse that address for a minute, whatever it sends; password guesses
 * also count in the platform's sign-in throttle (per username across addresses, per address
 * across usernames), shared with HTTP sign-in.
 */
export class SshAuthenticator {
  private readonly throttle = new LoginThrottle(5, 60_000, 60_000);

  constructor(private readonly accounts: Accounts) {}

  async decide(auth: AuthContext, username: string, address: string): Promise<AuthOutcome> {
    if (auth.method !== 'password' && auth.method !== 'publickey') return { kind: 'refused', why: 'method' };
    if (this.throttle.isBlocked(address) > 0) return { kind: 'refused', why: 'blocked' };
    if (auth.method === 'password') {
      const signIns = this.accounts.signIns;
      if (signIns.blockedFor(username, address) > 0) return { kind: 'refused', why: 'blocked' };
      const user = await this.accounts.checkPassword(username, auth.password);
      if (user) signIns.succeeded(username, address);
      else signIns.failed(username, address);
      return this.settle(address, user);
    }
    const user = await this.accounts.findByUsername(username);
    const key = user && !user.disabled ? registeredKey(user, auth.key) : null;
    // Without a signature the client only asks whether the key would do (OpenSSH offers every
    // key it has that way); that is no failed sign-in.
    if (!auth.signature || !auth.blob) return key ? { kind: 'key-acceptable' } : { kind: 'refused', why: 'unknown-key' };
    const valid = key !== null && key.verify(auth.blob, auth.signature, auth.hashAlgo) === true;
    return this.settle(address, valid ? user : null);
  }

  private settle(address: string, user: UserView | null): AuthOutcome {
    if (!user) {
      this.throttle.failed(address);
      return { kind: 'refused', why: 'credentials' };
    }
    this.throttle.succeeded(address);
    return { kind: 'signed-in', user };
  }
}

function registeredKey(user: UserView, offered: { algo: string; data: Buffer }): ParsedKey | null {
  for (const { publicKey } of user.sshKeys) {
    const parsed = ssh2.utils.parseKey(publicKey);
    if (parsed instanceof Error) continue;
    const algoFits = offered.algo === parsed.type || (parsed.type === 'ssh-rsa' && RSA_SIGNATURE_ALGORITHMS.has(offered.algo));
    if (algoFits && parsed.getPublicSSH().equals(offered.data)) return parsed;
  }
  return null;
}
