import type { AddressInfo } from 'node:net';
import { filter, type Subscription } from 'rxjs';
import type { AuthContext, Connection, ServerChannel, Session } from 'ssh2';
import ssh2 from 'ssh2';
import { AccessAudit } from '../../commands/instance/access-audit.ts';
import { accessEnding, type AccessEndingCode } from '../../domain/instance/access.ts';
import type { RecordedEvent } from '../../ports/event-store.port.ts';
import type { Plugin, PluginContext } from '../plugin-host.ts';
import { ContainerHelper } from '../../commands/instance/container-helper.ts';
import { ServiceDialer } from '../../commands/instance/service-dialer.ts';
import { loadOrCreateHostKey } from './host-key.ts';
import { splitLogin } from './menu.ts';
import { PortForwards } from './port-forward.ts';
import { AUTH_METHODS, SshAuthenticator } from './ssh-auth.ts';
import { INSTANCE_STOPPED, ShellSession, type Caller, type SessionDeps, type SshLimits } from './shell-session.ts';

const DEFAULT_IDLE_TIMEOUT_MS = 30 * 60_000;
/** Like OpenSSH's LoginGraceTime: a connection that never signs in does not stay forever. */
const LOGIN_GRACE_MS = 120_000;
/** Probes a quiet client every 15 s and drops it after 4 unanswered ones (a dead network path). */
const KEEPALIVE_INTERVAL_MS = 15_000;
const KEEPALIVE_COUNT_MAX = 4;

/** `TIANQI_SSH_IDLE_TIMEOUT_MS`: a session with no bytes either way for this long is closed. */
export function idleTimeoutFromEnv(env: NodeJS.ProcessEnv): number {
  const raw = env.TIANQI_SSH_IDLE_TIMEOUT_MS;
  if (raw === undefined || raw === '') return DEFAULT_IDLE_TIMEOUT_MS;
  const ms = Number(raw);
  if (!Number.isInteger(ms) || ms <= 0) throw new Error(`TIANQI_SSH_IDLE_TIMEOUT_MS: must be a positive whole number of milliseconds, not "${raw}"`);
  return ms;
}

/**
 * The jump host's caps, each a whole number 1–100000: per user over all their connections
 * `TIANQI_SSH_MAX_CONNECTIONS_PER_USER` (32: VS Code windows, a few terminals, an sftp client and
 * a script's parallel commands), `TIANQI_SSH_MAX_SESSIONS_PER_USER` (64) and
 * `TIANQI_SSH_MAX_FORWARDS_PER_USER` (256); per instance over everybody's connections
 * `TIANQI_SSH_MAX_SESSIONS_PER_INSTANCE` (64) and `TIANQI_SSH_MAX_FORWARDS_PER_INSTANCE` (256):
 * each session and forward is a process in the tenant's container.
 */
export function sshLimitsFromEnv(env: NodeJS.ProcessEnv): SshLimits {
  const read = (name: string, fallback: number) => {
    const raw = env[name];
    if (raw === undefined || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n <= 0 || n > 100_000) throw new Error(`${name}: must be a whole number 1–100000, not "${raw}"`);
    return n;
  };
  return {
    connectionsPerUser: read('TIANQI_SSH_MAX_CONNECTIONS_PER_USER', 32),
    sessionsPerUser: read('TIANQI_SSH_MAX_SESSIONS_PER_USER', 64),
    forwardsPerUser: read('TIANQI_SSH_MAX_FORWARDS_PER_USER', 256),
    sessionsPerInstance: read('TIANQI_SSH_MAX_SESSIONS_PER_INSTANCE', 64),
    forwardsPerInstance: read('TIANQI_SSH_MAX_FORWARDS_PER_INSTANCE', 256),
  };
}

/**
 * Connections not signed in yet, as OpenSSH's MaxStartups and PerSourceMaxStartups: from one
 * address (a lab's NAT gateway, a script opening 20 sessions at once), and in all. One over
 * either is closed at once; a signed-in connection no longer counts.
 */
export const MAX_UNAUTHENTICATED_PER_ADDRESS = 64;
export const MAX_UNAUTHENTICATED = 256;

/** Sessions one connection may hold open at once (OpenSSH's MaxSessions). */
export const MAX_SESSIONS = 10;

/** What the user reads when a session ends for one of the domain's reasons. */
const ENDING_NOTICES: Readonly<Record<AccessEndingCode, string>> = {
  ACCOUNT_DISABLED: '账号已被禁用，连接已断开。',
  ACCOUNT_DELETED: '账号已被删除，连接已断开。',
  PASSWORD_CHANGED: '账号密码已修改，请重新登录。',
  ROLE_CHANGED: '您已不再是管理员，其他用户实例中的会话已结束。',
  SIGNED_OUT: '您已退出登录。',
  INSTANCE_STOPPED: INSTANCE_STOPPED.notice,
  INSTANCE_FAILED: '容器已不存在，会话已结束。',
  INSTANCE_DELETED: '实例已被删除，会话已结束。',
};

/** One SSH client connection: its sign-in and its sessions. */
class ClientConnection {
  caller: Caller | null = null;
  /** Signed in over the user's connection cap: why, told on its first session before it ends. */
  overCap: string | null = null;
  private readonly sessions = new Set<ShellSession>();
  private idle: NodeJS.Timeout | null = null;
  /** The client is gone: no idle clock any more (ssh2 reports the close before its channels'). */
  private closed = false;
  /** Requests refused on the connection (`-R`), told on the stderr of each session that starts. */
  readonly notices: string[] = [];
  readonly forwards: PortForwards;
  /** Session channels being checked before they open. */
  opening = 0;

  constructor(
    readonly client: Connection,
    readonly address: string,
    private readonly idleTimeoutMs: number,
    deps: SessionDeps,
  ) {
    this.forwards = new PortForwards(() => this.caller!, deps, (message) => this.tell(message), {
      busy: () => this.stopIdleClock(),
      idle: () => {
        if (this.sessions.size === 0) this.startIdleClock();
      },
    });
  }

  /** A message on the stderr of the connection's open sessions (a forward refused, say). */
  tell(message: string): void {
    for (const session of this.sessions) session.notify(message);
  }

  get openSessions(): readonly ShellSession[] {
    return [...this.sessions];
  }

  add(session: ShellSession): void {
    this.sessions.add(session);
    this.stopIdleClock();
  }

  /**
   * A session ended. Like OpenSSH, the connection stays for the client to open another (or to
   * close it, as `ssh` does once its last channel is gone); one left without a session for the
   * idle timeout is closed, so a signed-in client cannot hold a connection for nothing.
   */
  remove(session: ShellSession): void {
    this.sessions.delete(session);
    if (this.sessions.size === 0 && this.forwards.open === 0) this.startIdleClock();
  }

  startIdleClock(): void {
    this.stopIdleClock();
    if (this.closed) return;
    this.idle = setTimeout(() => this.client.end(), this.idleTimeoutMs);
    this.idle.unref();
  }

  stopIdleClock(): void {
    if (this.idle) clearTimeout(this.idle);
    this.idle = null;
  }

  /** The client's connection closed: its sessions end, and nothing waits on it any more. */
  closedByClient(): void {
    this.closed = true;
    this.stopIdleClock();
    for (const session of [...this.sessions]) session.terminate('the client left', null);
    this.forwards.end('the client left');
  }

  /** Ends every session and forward with the reason, then the connection. */
  terminate(reason: string, notice: string): void {
    for (const session of [...this.sessions]) session.terminate(reason, notice);
    this.forwards.end(reason);
    this.stopIdleClock();
    this.client.end();
  }

  /** Ends what runs in one instance, or in the instances `foreign` picks. */
  endIn(reason: string, notice: string, pick: (where: { instanceId: string | null; ownerId: string | null }) => boolean): void {
    for (const session of [...this.sessions]) {
      if (session.instanceId && pick({ instanceId: session.instanceId, ownerId: session.instanceOwnerId })) session.terminate(reason, notice);
    }
    this.forwards.terminate(reason, (entry) => pick(entry));
  }
}

/**
 * The SSH jump host: `ssh -p <TIANQI_SSH_PORT> <user>[+<instance>]@<host>` signs in with the
 * platform account (password or registered key), shows the caller's containers and enters one.
 */
class JumpHost {
  private readonly server: InstanceType<typeof ssh2.Server>;
  private readonly auth: SshAuthenticator;
  private readonly connections = new Set<ClientConnection>();
  /** Connections not signed in yet, by address. */
  private readonly unauthenticated = new Map<string, number>();
  private unauthenticatedTotal = 0;
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly deps: SessionDeps;
  private watch: Subscription | null = null;

  constructor(
    private readonly ctx: PluginContext,
    hostKey: string,
    idleTimeoutMs: number,
    limits: SshLimits,
  ) {
    this.auth = new SshAuthenticator(ctx.accounts);
    const helper = new ContainerHelper(ctx.runtime, ctx.helperBuilds);
    this.deps = {
      ctx,
      idleTimeoutMs,
      track: (work) => this.track(work),
      audit: new AccessAudit(ctx.bus),
      helper,
      dialer: new ServiceDialer(ctx.runtime, helper, ctx.config.services.route),
      limits,
      usageOf: (userId) => this.usageOf(userId),
      usageOfInstance: (instanceId) => this.usageOfInstance(instanceId),
    };
    this.server = new ssh2.Server({
      hostKeys: [hostKey],
      ident: 'TianQi',
      keepaliveInterval: KEEPALIVE_INTERVAL_MS,
      keepaliveCountMax: KEEPALIVE_COUNT_MAX,
    }, (client, info) => this.accept(client, info.ip));
  }

  async listen(host: string, port: number): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.server.on('error', (err: Error) => this.ctx.logger.error({ err }, 'ssh server error'));
    this.watch = this.ctx.events$
      .pipe(filter((e) => e.stream.startsWith('user-') || e.stream.startsWith('instance-')))
      .subscribe((event) => this.onEvent(event));
    return (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    this.watch?.unsubscribe();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const connection of [...this.connections]) connection.terminate('the jump host stopped', '跳板机正在关闭，连接已断开。');
    // Every audit open gets its close before the event store goes away.
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    // A client that does not answer the disconnect must not hold up the shutdown.
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 5_000).unref())]);
  }

  /** A user's sessions and forwarded connections over all their connections to this jump host. */
  private usageOf(userId: string): { sessions: number; forwards: number } {
    let sessions = 0;
    let forwards = 0;
    for (const connection of this.connections) {
      if (connection.caller?.actor.id !== userId) continue;
      sessions += connection.openSessions.length + connection.opening;
      forwards += connection.forwards.held;
    }
    return { sessions, forwards };
  }

  /** Sessions and forwarded connections in one instance, over everybody's connections. */
  private usageOfInstance(instanceId: string): { sessions: number; forwards: number } {
    let sessions = 0;
    let forwards = 0;
    for (const connection of this.connections) {
      for (const session of connection.openSessions) if (session.instanceId === instanceId) sessions += 1;
      forwards += connection.forwards.heldIn(instanceId);
    }
    return { sessions, forwards };
  }

  /** Signed-in connections of a user that count against their cap. */
  private connectionsOf(userId: string): number {
    let count = 0;
    for (const connection of this.connections) if (connection.caller?.actor.id === userId && !connection.overCap) count += 1;
    return count;
  }

  private track(work: Promise<unknown>): void {
    this.inFlight.add(work);
    const forget = () => this.inFlight.delete(work);
    work.then(forget, forget);
  }

  private onEvent(event: RecordedEvent): void {
    const ending = accessEnding(event);
    // A sign-out ends bearer-token sign-ins; SSH signs in with keys or the password.
    if (!ending || ending.recheck) return;
    const notice = ENDING_NOTICES[ending.code];
    if (event.stream.startsWith('user-')) {
      const userId = event.stream.slice('user-'.length);
      for (const connection of this.connections) {
        const caller = connection.caller;
        if (caller?.actor.id !== userId) continue;
        if (ending.foreignOnly) {
          // An admin no more: their own instances stay open to them, nobody else's.
          caller.actor = { ...caller.actor, role: 'user' };
          connection.endIn(ending.reason, notice, (where) => where.ownerId !== userId);
        } else {
          connection.terminate(ending.reason, notice);
        }
      }
      return;
    }
    const instanceId = event.stream.slice('instance-'.length);
    for (const connection of this.connections) connection.endIn(ending.reason, notice, (where) => where.instanceId === instanceId);
  }

  /**
   * Asked at every new channel: the signed-in user must still be active, and acts with the role
   * they have now (a connection outlives a disable only until the next channel, and the event
   * ends it sooner still).
   */
  private async recheck(connection: ClientConnection): Promise<Caller | null> {
    const caller = connection.caller;
    if (!caller) return null;
    const user = await this.ctx.accounts.get(caller.actor.id).catch(() => null);
    if (!user || user.disabled) {
      connection.terminate('the user is no longer active', ENDING_NOTICES.ACCOUNT_DISABLED);
      return null;
    }
    caller.actor = { id: user.id, username: user.username, role: user.role };
    return caller;
  }

  private accept(client: Connection, address: string): void {
    const fromAddress = this.unauthenticated.get(address) ?? 0;
    if (fromAddress >= MAX_UNAUTHENTICATED_PER_ADDRESS || this.unauthenticatedTotal >= MAX_UNAUTHENTICATED) {
      this.ctx.logger.warn({ address, fromAddress, total: this.unauthenticatedTotal }, 'ssh connection refused: too many not signed in');
      client.on('error', () => undefined);
      client.end();
      return;
    }
    this.unauthenticated.set(address, fromAddress + 1);
    this.unauthenticatedTotal += 1;
    let counted = true;
    const signedInOrGone = () => {
      if (!counted) return;
      counted = false;
      this.unauthenticatedTotal -= 1;
      const left = (this.unauthenticated.get(address) ?? 1) - 1;
      if (left > 0) this.unauthenticated.set(address, left);
      else this.unauthenticated.delete(address);
    };
    // As sshd does for interactive and bulk sessions alike: a small SFTP answer or a keystroke's
    // echo must not wait for the client's delayed ACK (40 ms a round trip with Nagle on).
    // (ssh2's server connection has the method; its typings leave it out.)
    (client as Connection & { setNoDelay(noDelay: boolean): void }).setNoDelay(true);
    const connection = new ClientConnection(client, address, this.deps.idleTimeoutMs, this.deps);
    this.connections.add(connection);
    const grace = setTimeout(() => client.end(), LOGIN_GRACE_MS);
    let login: ReturnType<typeof splitLogin> = { username: '', instanceName: null };

    client.on('authentication', (auth: AuthContext) => {
      login = splitLogin(auth.username);
      this.auth.decide(auth, login.username, address).then((outcome) => {
        switch (outcome.kind) {
          case 'signed-in': {
            const { user } = outcome;
            const { connectionsPerUser } = this.deps.limits;
            // Over the cap the sign-in still succeeds, so that the client can be told why (sshd's
            // MaxSessions answers the same way): its first session says so and ends with status 1.
            if (this.connectionsOf(user.id) >= connectionsPerUser) {
              connection.overCap = `您的账号已有 ${connectionsPerUser} 个 SSH 连接（上限由 TIANQI_SSH_MAX_CONNECTIONS_PER_USER 设定），请关闭一些后再试。`;
              this.ctx.logger.info({ user: user.username, address }, 'ssh connection refused: user connection limit');
            }
            connection.caller = { actor: { id: user.id, username: user.username, role: user.role }, address, instanceName: login.instanceName };
            auth.accept();
            return;
          }
          case 'key-acceptable':
            auth.accept();
            return;
          case 'refused':
            if (outcome.why === 'credentials' || outcome.why === 'blocked') {
              this.ctx.logger.warn({ user: login.username, address, method: auth.method, why: outcome.why }, 'ssh sign-in refused');
            }
            auth.reject(AUTH_METHODS);
        }
      }, (err: unknown) => {
        this.ctx.logger.error({ err }, 'ssh sign-in check failed');
        auth.reject(AUTH_METHODS);
      });
    });
    client.on('ready', () => {
      clearTimeout(grace);
      signedInOrGone();
      connection.startIdleClock();
      this.ctx.logger.info({ user: login.username, instance: login.instanceName, address }, 'ssh sign-in');
    });
    client.on('session', (acceptSession, rejectSession) => {
      if (connection.overCap) {
        refuseSession(acceptSession(), connection.overCap, () => client.end());
        return;
      }
      if (connection.openSessions.length + connection.opening >= MAX_SESSIONS) {
        rejectSession();
        return;
      }
      const userId = connection.caller?.actor.id;
      const { sessionsPerUser } = this.deps.limits;
      if (userId && this.usageOf(userId).sessions >= sessionsPerUser) {
        connection.tell(`您的账号已打开 ${sessionsPerUser} 个会话（所有 SSH 连接合计，上限由 TIANQI_SSH_MAX_SESSIONS_PER_USER 设定），请关闭一些后再试。`);
        this.ctx.logger.info({ user: connection.caller?.actor.username }, 'ssh session refused: user session limit');
        rejectSession();
        return;
      }
      connection.opening += 1;
      void this.recheck(connection).then((caller) => {
        connection.opening -= 1;
        if (!caller) return rejectSession();
        connection.add(new ShellSession(acceptSession(), caller, this.deps, (ended) => connection.remove(ended), connection.notices));
      }, (err: unknown) => {
        connection.opening -= 1;
        this.ctx.logger.error({ err }, 'ssh channel check failed');
        rejectSession();
      });
    });
    client.on('tcpip', (accept, reject, info) => {
      if (connection.overCap) {
        reject();
        client.end();
        return;
      }
      void this.recheck(connection).then((caller) => {
        if (!caller) return reject();
        return connection.forwards.request(accept, reject, info);
      }, () => reject());
    });
    // Remote forwarding (-R) would open a port on the platform: refused, and said in the sessions.
    client.on('request', (accept, reject, requestName) => {
      const name: string = requestName;
      if (name === 'tcpip-forward' || name === 'streamlocal-forward@openssh.com') {
        connection.notices.push('此跳板机不提供远程端口转发（-R），已忽略。');
        connection.tell('此跳板机不提供远程端口转发（-R），已忽略。');
      }
      if (name.startsWith('cancel-')) accept?.();
      else reject?.();
    });
    client.on('error', (err: Error) => this.ctx.logger.debug({ err, address }, 'ssh connection error'));
    client.on('close', () => {
      clearTimeout(grace);
      signedInOrGone();
      connection.closedByClient();
      this.connections.delete(connection);
    });
  }
}

/**
 * A session on a connection that may not have one: its first shell, command or subsystem gets the
 * message on stderr and exit status 1, and then the connection ends.
 */
function refuseSession(session: Session, message: string, then: () => void): void {
  let pty = false;
  session.on('pty', (accept) => {
    pty = true;
    accept?.();
  });
  session.on('env', (accept) => accept?.());
  const refuse = (accept: () => ServerChannel) => {
    const channel = accept();
    channel.stderr.write(pty ? `${message}\r\n` : `${message}\n`);
    channel.exit(1);
    channel.end();
    setTimeout(then, 1_000).unref();
  };
  session.on('shell', (accept) => refuse(accept));
  session.on('exec', (accept) => refuse(accept));
  session.on('subsystem', (accept) => refuse(accept));
}

export const jumpHostPlugin: Plugin = {
  name: 'jump-host',
  async start(ctx) {
    if (ctx.config.sshPort === 0) {
      ctx.logger.info('TIANQI_SSH_PORT is 0: no SSH jump host');
      return { async stop() {} };
    }
    const jumpHost = new JumpHost(ctx, loadOrCreateHostKey(ctx.config.dataDir), idleTimeoutFromEnv(process.env), sshLimitsFromEnv(process.env));
    const port = await jumpHost.listen(ctx.config.host, ctx.config.sshPort);
    ctx.logger.info({ host: ctx.config.host, port }, 'SSH jump host listening');
    return { stop: () => jumpHost.stop() };
  },
};
