import { randomUUID } from 'node:crypto';
import type { UserCommand } from '../../domain/user/user.decider.ts';
import { userDecider } from '../../domain/user/user.decider.ts';
import type { Role } from '../../domain/user/user.events.ts';
import { userStream } from '../../domain/user/user.events.ts';
import { ForbiddenError, NotFoundError, UnauthorizedError, ValidationError } from '../../domain/shared/errors.ts';
import type { ReadStore } from '../../ports/read-store.port.ts';
import { USERS, type UserView } from '../../projections/users.projection.ts';
import type { CommandBus, CommandContext } from '../command-bus.ts';
import { claimName, releaseName } from '../name-claims.ts';
import { DUMMY_HASH_PROMISE, hashPassword, verifyPassword } from './password.ts';
import { SignInThrottle } from './sign-in-throttle.ts';
import { parseOpenSshPublicKey } from './ssh-public-key.ts';
import { TOKEN_LIFETIME_SECONDS, type TokenClaims, type TokenService } from './token.ts';

export interface Actor {
  readonly id: string;
  readonly username: string;
  readonly role: Role;
  /** The sign-in this actor acts under (a bearer token's, or the one a service link was opened with). */
  readonly session?: SignIn;
}

/** A sign-in: its id (absent in tokens of older versions) and when it was issued. */
export interface SignIn {
  readonly id?: string;
  readonly issuedAtMs: number;
  /** When the token expires (ms): how long its end must be remembered. */
  readonly expiresAtMs?: number;
}

export interface NewUser {
  readonly username: string;
  readonly password: string;
  readonly role?: Role;
  readonly displayName?: string;
  readonly disabled?: boolean;
}

/** Use cases of the account slice, shared by the REST routes, the bootstrap and the SSH jump host. */
export class Accounts {
  /** Failed sign-ins of every way in (HTTP and SSH), counted together. */
  readonly signIns: SignInThrottle;

  constructor(
    private readonly bus: CommandBus,
    private readonly readStore: ReadStore,
    private readonly tokens: TokenService,
    private readonly clock: () => number = Date.now,
  ) {
    this.signIns = new SignInThrottle(clock);
  }

  private get users() {
    return this.readStore.collection<UserView>(USERS);
  }

  async findByUsername(username: string): Promise<UserView | null> {
    return this.users.findOne({ usernameLower: username.toLowerCase() });
  }

  async get(id: string): Promise<UserView> {
    const user = await this.users.get(id);
    if (!user) throw new NotFoundError('User');
    return user;
  }

  async list(filter: { q?: string; role?: Role; disabled?: boolean } = {}): Promise<UserView[]> {
    const query: Record<string, unknown> = {};
    if (filter.q) query.usernameLower = { $regex: escapeRegex(filter.q.toLowerCase()) };
    if (filter.role) query.role = filter.role;
    if (filter.disabled !== undefined) query.disabled = filter.disabled;
    return this.users.find(query, { sort: { usernameLower: 1 } });
  }

  async count(): Promise<number> {
    return this.users.count();
  }

  /**
   * Checks a username and password; constant-time whether or not the user exists. Returns the
   * user for an active account, null otherwise (disabled accounts included).
   */
  async checkPassword(username: string, password: string): Promise<UserView | null> {
    const user = await this.findByUsername(username);
    const { state } = user ? await this.bus.load(userDecider, userStream(user.id)) : { state: null };
    const hash = state && state.status !== 'none' ? state.passwordHash : await DUMMY_HASH_PROMISE;
    const ok = await verifyPassword(password, hash);
    if (!ok || !user || !state || state.status !== 'active') return null;
    return user;
  }

  async login(username: string, password: string): Promise<{ token: string; user: UserView }> {
    const user = await this.checkPassword(username, password);
    if (!user) throw new UnauthorizedError('Wrong username or password, or the account is disabled.', 'INVALID_CREDENTIALS');
    return { token: this.tokens.issue(user.id, user.passwordChangedAt, this.clock()), user };
  }

  /** The actor behind a bearer token, or null: bad signature, expired, user gone or disabled, password changed. */
  async authenticate(token: string): Promise<Actor | null> {
    const claims = this.tokens.verify(token, this.clock());
    return claims ? this.activeActor(claims.sub, claims.pwd, signInOf(claims)) : null;
  }

  /** A bearer token's actor with what it was issued under (its password time, its expiry), for re-checks of open connections. */
  async session(token: string): Promise<{ actor: Actor; pwd: string; expiresAtMs: number } | null> {
    const claims = this.tokens.verify(token, this.clock());
    const actor = claims ? await this.activeActor(claims.sub, claims.pwd, signInOf(claims)) : null;
    return actor && claims ? { actor, pwd: claims.pwd, expiresAtMs: claims.exp * 1000 } : null;
  }

  /** 退出登录: the actor's sign-in ends now, on every replica (the next check of any of its requests, sockets or links refuses it). */
  async signOut(actor: Actor, context: CommandContext): Promise<void> {
    const session = actor.session;
    if (!session?.id) return;
    const expiresAt = new Date(session.expiresAtMs ?? this.clock() + TOKEN_LIFETIME_SECONDS * 1000).toISOString();
    await this.bus.execute(userDecider, userStream(actor.id), { type: 'EndSession', data: { sessionId: session.id, expiresAt } }, context);
  }

  /** 退出所有设备: every sign-in of the user issued until now ends. */
  async signOutEverywhere(userId: string, context: CommandContext): Promise<void> {
    await this.bus.execute(userDecider, userStream(userId), { type: 'SignOutEverywhere', data: {} }, { ...context, now: new Date(this.clock()).toISOString() });
  }

  /** Whether a bearer token is the platform's, whatever its state: such a token never reaches a service. */
  isPlatformToken(token: string): boolean {
    return this.tokens.isOurs(token);
  }

  /** The actor a credential names, while the user exists, is enabled and has not changed the password since it was issued. */
  async activeActor(userId: string, passwordChangedAt: string, signIn?: SignIn): Promise<Actor | null> {
    const user = await this.users.get(userId);
    if (!user || user.disabled || user.passwordChangedAt !== passwordChangedAt) return null;
    if (signIn && !signInStands(user, signIn)) return null;
    return { id: user.id, username: user.username, role: user.role, ...(signIn ? { session: signIn } : {}) };
  }

  async register(input: NewUser, context: CommandContext): Promise<UserView> {
    if (await this.findByUsername(input.username)) {
      throw new ValidationError({ username: 'is taken' }, 'This username is taken.');
    }
    const userId = randomUUID();
    const passwordHash = await hashPassword(input.password);
    await this.claimUsername(input.username, userId, context);
    await this.bus.execute(userDecider, userStream(userId), {
      type: 'RegisterUser',
      data: { userId, username: input.username, passwordHash, role: input.role ?? 'user', displayName: input.displayName ?? input.username },
    }, context);
    if (input.disabled) await this.update(userId, { disabled: true }, context);
    return this.get(userId);
  }

  async changePassword(userId: string, currentPassword: string | undefined, newPassword: string, context: CommandContext): Promise<void> {
    if (currentPassword !== undefined) {
      const user = await this.get(userId);
      if (!(await this.checkPassword(user.username, currentPassword))) {
        throw new ValidationError({ currentPassword: 'is wrong' }, 'The current password is wrong.');
      }
    }
    await this.run(userId, { type: 'ChangePassword', data: { passwordHash: await hashPassword(newPassword) } }, context);
  }

  async update(userId: string, changes: { role?: Role; disabled?: boolean; displayName?: string }, context: CommandContext): Promise<UserView> {
    await this.run(userId, { type: 'UpdateUser', data: changes }, context);
    return this.get(userId);
  }

  async delete(userId: string, context: CommandContext): Promise<void> {
    const user = await this.get(userId);
    await this.run(userId, { type: 'DeleteUser', data: {} }, context);
    await releaseName(this.bus, usernameStream(user.username), userId, context);
  }

  async addSshKey(userId: string, input: { name?: string; publicKey: string }, context: CommandContext) {
    const parsed = parseOpenSshPublicKey(input.publicKey);
    if ('error' in parsed) throw new ValidationError({ publicKey: parsed.error }, 'The public key is not valid.');
    const keyId = randomUUID();
    await this.run(userId, {
      type: 'AddSshKey',
      data: {
        keyId,
        name: input.name || parsed.comment || parsed.keyType,
        publicKey: parsed.publicKey,
        keyType: parsed.keyType,
        fingerprint: parsed.fingerprint,
      },
    }, context);
    const user = await this.get(userId);
    return user.sshKeys.find((k) => k.id === keyId)!;
  }

  async removeSshKey(userId: string, keyId: string, context: CommandContext): Promise<void> {
    await this.run(userId, { type: 'RemoveSshKey', data: { keyId } }, context);
  }

  /** First start: creates `admin` when there is no user at all. Returns the password it used. */
  async bootstrapAdmin(password: string): Promise<boolean> {
    if ((await this.count()) > 0) return false;
    await this.register({ username: 'admin', password, role: 'admin', displayName: '管理员' }, {});
    return true;
  }

  private async run(userId: string, command: Pick<UserCommand, 'type' | 'data'>, context: CommandContext) {
    return this.bus.execute(userDecider, userStream(userId), command as UserCommand, context);
  }

  private async claimUsername(username: string, userId: string, context: CommandContext): Promise<void> {
    await claimName(this.bus, usernameStream(username), userId, (holder) => this.bus.load(userDecider, userStream(holder)).then((h) => h.state.status !== 'none'), {
      code: 'USERNAME_TAKEN', message: 'This username is taken.', field: 'username',
    }, context);
  }
}

export const usernameStream = (username: string) => `username-${username.toLowerCase()}`;

/** Admins act on anyone; others only on themselves. Unknown or foreign accounts read as 404. */
export function assertSelfOrAdmin(actor: Actor, userId: string): void {
  if (actor.role !== 'admin' && actor.id !== userId) throw new NotFoundError('User');
}

export function assertAdmin(actor: Actor): void {
  if (actor.role !== 'admin') throw new ForbiddenError('Only administrators can do this.', 'ADMIN_ONLY');
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A token's sign-in: its id and issue time (older tokens: whole seconds, no id). */
function signInOf(claims: TokenClaims): SignIn {
  return { ...(claims.sid ? { id: claims.sid } : {}), issuedAtMs: claims.ims ?? claims.iat * 1000, expiresAtMs: claims.exp * 1000 };
}

/** Whether a sign-in still counts: not ended by itself, nor by a sign-out everywhere at or after its issue. */
export function signInStands(user: Pick<UserView, 'endedSessions' | 'signedOutEverywhereAt'>, signIn: SignIn): boolean {
  if (signIn.id && (user.endedSessions ?? []).some((e) => e.sessionId === signIn.id)) return false;
  if (user.signedOutEverywhereAt && signIn.issuedAtMs <= Date.parse(user.signedOutEverywhereAt)) return false;
  return true;
}
