import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export interface TokenClaims {
  /** user id */
  readonly sub: string;
  /** issued at, seconds */
  readonly iat: number;
  /** expires at, seconds */
  readonly exp: number;
  /** the user's password-change time when issued: a password change ends older sessions */
  readonly pwd: string;
  /** the sign-in (session) this token is; absent in tokens of older versions */
  readonly sid?: string;
  /** issued at, ms (iat is whole seconds) */
  readonly ims?: number;
}

export const TOKEN_LIFETIME_SECONDS = 12 * 60 * 60;

/**
 * Signed bearer tokens (JWT compact form, HS256). The key derives from the master key, so tokens
 * stay valid across restarts and replicas; whether the user may still act is checked per request.
 */
export class TokenService {
  private static readonly header = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');

  constructor(private readonly key: Buffer) {}

  issue(userId: string, passwordChangedAt: string, nowMs: number): string {
    const iat = Math.floor(nowMs / 1000);
    const claims: TokenClaims = { sub: userId, iat, exp: iat + TOKEN_LIFETIME_SECONDS, pwd: passwordChangedAt, sid: randomBytes(16).toString('base64url'), ims: nowMs };
    const body = `${TokenService.header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
    return `${body}.${this.sign(body)}`;
  }

  /** The claims of a well-signed, unexpired token; null otherwise. */
  verify(token: string, nowMs: number): TokenClaims | null {
    const claims = this.signed(token);
    if (!claims || typeof claims.sub !== 'string' || typeof claims.exp !== 'number' || claims.exp * 1000 <= nowMs) return null;
    return claims;
  }

  /** Whether the platform signed this token, valid or not (expired, its user disabled): it is never passed on to a service. */
  isOurs(token: string): boolean {
    return this.signed(token) !== null;
  }

  private signed(token: string): TokenClaims | null {
    const parts = token.split('.');
    if (parts.length !== 3 || parts[0] !== TokenService.header) return null;
    const body = `${parts[0]}.${parts[1]}`;
    const given = Buffer.from(parts[2]!, 'base64url');
    const expected = Buffer.from(this.sign(body), 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
    let claims: TokenClaims;
    try {
      claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as TokenClaims;
    } catch {
      return null;
    }
    return claims;
  }

  private sign(body: string): string {
    return createHmac('sha256', this.key).update(body).digest('base64url');
  }
}
