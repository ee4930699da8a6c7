import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import type { InstanceServicePort } from '../../domain/instance/service-ports.ts';
import { originOf, SERVICE_ORIGINS_STREAM, serviceOriginsDecider, type ReleaseReason } from '../../domain/instance/service-origins.ts';
import { serviceTicketDecider, serviceTicketStream } from '../../domain/instance/service-tickets.ts';
import { ConflictError, NotFoundError, UnauthorizedError } from '../../domain/shared/errors.ts';
import type { ReadStore } from '../../ports/read-store.port.ts';
import { INSTANCES } from '../../projections/instances.projection.ts';
import { SERVICE_ORIGINS, type ServiceOriginView } from '../../projections/service-origins.projection.ts';
import type { CommandBus, CommandContext } from '../command-bus.ts';
import type { NodeTarget } from '../../ports/container-runtime.port.ts';
import type { InstanceView } from '../../projections/instances.projection.ts';
import type { Accounts, Actor, SignIn } from '../user/accounts.ts';
import type { Instances } from './instances.ts';
import type { ServiceDialer, ServiceTarget } from './service-dialer.ts';

/** The proxy's cookie (host form; `_<port>` added in the port form), and the query parameter a link carries its ticket in. */
export const SERVICE_COOKIE = 'tianqi_service';
export const TICKET_PARAMETER = 'tianqi_ticket';
/** Every cookie of the platform's starts so: none of them ever reaches a service. */
export const PLATFORM_COOKIE_PREFIX = 'tianqi_';
/** A link's ticket is for opening it now; the cookie it becomes lasts a working day. */
export const TICKET_LIFETIME_MS = 60_000;
export const GRANT_LIFETIME_MS = 12 * 60 * 60 * 1000;

/**
 * Which service a request is for, and how it came: `host`, `<port>-<id>.<TIANQI_SERVICE_DOMAIN>`;
 * `port`, a port of the platform's host from TIANQI_SERVICE_PORTS (`listenPort`). Either way an
 * origin of its own: no service is ever served on the console's origin.
 */
export type ServiceAddress =
  | { readonly form: 'host'; readonly instanceId: string; readonly port: number }
  | { readonly form: 'port'; readonly instanceId: string; readonly port: number; readonly listenPort: number; readonly generation: string };

/** The proxy cookie's name for an address: one per port in the port form (cookies ignore ports). */
export function serviceCookieName(address: ServiceAddress): string {
  return address.form === 'port' ? `${SERVICE_COOKIE}_${address.listenPort}` : SERVICE_COOKIE;
}

const INSTANCE_ID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
const HOST_LABEL = new RegExp(`^([1-9][0-9]{0,4})-(${INSTANCE_ID})$`);

/** The service a Host header names (`<port>-<id>.<domain>`), or null. */
export function hostAddress(host: string | undefined, domain: string | undefined): ServiceAddress | null {
  if (!host || !domain) return null;
  // Ports aside: the same name is the same service whichever port a proxy in front listens on.
  const name = host.toLowerCase().replace(/:\d+$/, '');
  const suffix = `.${domain.replace(/:\d+$/, '')}`;
  if (!name.endsWith(suffix)) return null;
  const match = HOST_LABEL.exec(name.slice(0, -suffix.length));
  if (!match || Number(match[1]) > 65_535) return null;
  return { instanceId: match[2]!, port: Number(match[1]), form: 'host' };
}

/** What a grant is bound to: the service, and the form (and port) it was issued for. */
function bindingOf(address: ServiceAddress): string {
  return address.form === 'port' ? `port:${address.listenPort}:${address.generation}` : 'host';
}

interface GrantClaims {
  /** `t`: a link's one-time ticket; `c`: the proxy cookie it was exchanged for. */
  readonly k: 't' | 'c';
  readonly sub: string;
  readonly pwd: string;
  readonly i: string;
  readonly p: number;
  /** The form (and, in the port form, the port and its assignment) the grant is for. */
  readonly f: string;
  /** The ticket's id: its redemption is recorded once (service-tickets.ts). */
  readonly j?: string;
  readonly exp: number;
  /** The sign-in the link was opened with (its id, its issue time in ms): signing out ends the link too. */
  readonly s?: string;
  readonly si?: number;
}

/**
 * Signed grants to one service of one instance in one form (HMAC-SHA256 with a key derived from
 * the master key): they open that service where it was issued for and nothing else, and name a
 * user who is checked again on every request.
 */
export class ServiceGrants {
  constructor(private readonly key: Buffer, private readonly clock: () => number = Date.now) {}

  issue(kind: 't' | 'c', sub: string, pwd: string, address: ServiceAddress, signIn?: SignIn): { value: string; expiresAt: number; id: string } {
    const expiresAt = this.clock() + (kind === 't' ? TICKET_LIFETIME_MS : GRANT_LIFETIME_MS);
    const id = randomUUID();
    const claims: GrantClaims = {
      k: kind, sub, pwd, i: address.instanceId, p: address.port, f: bindingOf(address), ...(kind === 't' ? { j: id } : {}), exp: expiresAt,
      ...(signIn ? { ...(signIn.id ? { s: signIn.id } : {}), si: signIn.issuedAtMs } : {}),
    };
    const body = Buffer.from(JSON.stringify(claims)).toString('base64url');
    return { value: `${body}.${this.sign(body)}`, expiresAt, id };
  }

  verify(kind: 't' | 'c', value: string, address: ServiceAddress): { sub: string; pwd: string; expiresAt: number; id?: string; signIn?: SignIn } | null {
    const [body, signature, extra] = value.split('.');
    if (!body || !signature || extra !== undefined) return null;
    const given = Buffer.from(signature, 'base64url');
    const expected = Buffer.from(this.sign(body), 'base64url');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
    let claims: GrantClaims;
    try {
      claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as GrantClaims;
    } catch {
      return null;
    }
    if (claims.k !== kind || claims.i !== address.instanceId || claims.p !== address.port || claims.f !== bindingOf(address) || !(claims.exp > this.clock())) return null;
    if (kind === 't' && typeof claims.j !== 'string') return null;
    return {
      sub: claims.sub, pwd: claims.pwd, expiresAt: claims.exp, ...(claims.j ? { id: claims.j } : {}),
      ...(typeof claims.si === 'number' ? { signIn: { ...(claims.s ? { id: claims.s } : {}), issuedAtMs: claims.si } } : {}),
    };
  }

  private sign(body: string): string {
    return createHmac('sha256', this.key).update(body).digest('base64url');
  }
}

/** How the browser reached the console: links to services use the same scheme, host name (port form) and port (host form). */
export interface LinkOrigin {
  readonly scheme: string;
  /** The console's host name as the browser named it (no port). */
  readonly hostname: string;
  readonly port?: string;
}

/** What the proxy may do with a request: who asks, for which service, and where that is. */
export interface ServicePass {
  readonly actor: Actor;
  readonly instance: InstanceView;
  readonly service: InstanceServicePort;
  readonly upstream: ServiceTarget;
  /** Which credential let the caller in: a platform bearer token is then not passed on. */
  readonly via: 'cookie' | 'bearer';
  /** The password time the credential was issued under, and when it expires (ms): an open connection ends with it. */
  readonly pwd: string;
  readonly expiresAt: number;
}

/** A service of an instance as the API shows it. */
export interface ServiceLinkView extends InstanceServicePort {
  /**
   * Where the service is served (http services only): its host-form URL, or in the port form
   * the platform port it holds; null until it is first opened (the port form) and for tcp.
   */
  readonly url: string | null;
  /** Whether something listens on the port now; null when the instance is not running. */
  readonly listening: boolean | null;
  /** `publicIp:hostPort` where the port is published on the node (公网端口), else null. */
  readonly publicAddress: string | null;
}

export interface ServiceAccessOptions {
  /** TIANQI_SERVICE_DOMAIN: the host form. */
  readonly domain?: string;
  /** TIANQI_SERVICE_PORTS: the port form's range; null: off. */
  readonly ports: { readonly min: number; readonly max: number } | null;
}

/**
 * 自定义服务: who may open which service of an instance, and where it is. Only the owner and
 * admins get through, each request checked again (a disabled user, a changed password, a deleted
 * or stopped instance, a removed port: the next request is refused). Every service is served on
 * an origin of its own — `<port>-<id>.<domain>` or a port of the platform's host — so no script
 * of a service shares anything with the console or another service.
 */
export class ServiceAccess {
  constructor(
    private readonly instances: Instances,
    private readonly accounts: Accounts,
    private readonly grants: ServiceGrants,
    private readonly dialer: ServiceDialer,
    private readonly targetOf: (nodeId: string) => Promise<NodeTarget>,
    private readonly bus: CommandBus,
    private readonly store: ReadStore,
    readonly options: ServiceAccessOptions,
  ) {}

  /** The form links take: the host form where there is a service domain, else the port form. */
  get defaultForm(): 'host' | 'port' | null {
    return this.options.domain ? 'host' : this.options.ports ? 'port' : null;
  }

  /** The instance's services, each with where it is served and whether it listens now. */
  async list(actor: Actor, instanceId: string, origin: LinkOrigin): Promise<ServiceLinkView[]> {
    const instance = await this.instances.visible(actor, instanceId);
    const ports = instance.servicePorts ?? [];
    const target = instance.status === 'running' && instance.containerId ? await this.targetOf(instance.nodeId).catch(() => null) : null;
    const held = this.defaultForm === 'port' ? await this.store.collection<ServiceOriginView>(SERVICE_ORIGINS).find({ instanceId }) : [];
    const published = await this.instances.publicAddresses(instance);
    return Promise.all(ports.map(async (service) => {
      const listenPort = held.find((o) => o.port === service.port)?.listenPort;
      const url = service.protocol !== 'http' ? null
        : this.defaultForm === 'host' ? this.hostUrl(origin, instance.id, service.port)
          : listenPort !== undefined ? portUrl(origin, listenPort) : null;
      return {
        ...service,
        url,
        publicAddress: published.get(service.port) ?? null,
        listening: target ? await this.dialer.listening({ target, containerId: instance.containerId!, port: service.port }).catch(() => false) : null,
      };
    }));
  }

  /**
   * A link that opens the service signed in: its ticket (good once, for a minute) becomes the
   * proxy's cookie for that service only. In the port form the service is given its port first.
   */
  async link(actor: Actor, instanceId: string, port: number, origin: LinkOrigin, wanted: 'host' | 'port' | undefined, context: CommandContext): Promise<{ url: string; form: 'host' | 'port'; expiresAt: string }> {
    const instance = await this.instances.visible(actor, instanceId);
    const service = httpService(instance, port);
    const form = wanted ?? this.defaultForm;
    if (form === 'host' && !this.options.domain) throw new ConflictError('NO_SERVICE_DOMAIN', 'The host form needs TIANQI_SERVICE_DOMAIN, which is not set on this platform.');
    if (form === 'port' && !this.options.ports) throw new ConflictError('NO_SERVICE_PORTS', 'The port form needs TIANQI_SERVICE_PORTS, which is off on this platform.');
    if (!form) throw new ConflictError('NO_SERVICE_ORIGIN', 'Services are off: set TIANQI_SERVICE_DOMAIN or TIANQI_SERVICE_PORTS.');
    const address = form === 'host'
      ? { form, instanceId, port: service.port } as const
      : { form, instanceId, port: service.port, ...(await this.assignPort(instanceId, service.port, context)) } as const;
    const user = await this.accounts.get(actor.id);
    const ticket = this.grants.issue('t', actor.id, user.passwordChangedAt, address, actor.session);
    const base = address.form === 'host' ? this.hostUrl(origin, instanceId, port)! : portUrl(origin, address.listenPort);
    return { url: `${base}?${TICKET_PARAMETER}=${ticket.value}`, form, expiresAt: new Date(ticket.expiresAt).toISOString() };
  }

  /** The service a port of the port form serves now, or null. */
  async atPort(listenPort: number): Promise<ServiceAddress | null> {
    const origin = await this.store.collection<ServiceOriginView>(SERVICE_ORIGINS).get(String(listenPort));
    return origin ? { form: 'port', instanceId: origin.instanceId, port: origin.port, listenPort, generation: origin.generation } : null;
  }

  /** The port a service is served on in the port form: the one it holds, or a free one of the range. */
  private async assignPort(instanceId: string, port: number, context: CommandContext): Promise<{ listenPort: number; generation: string }> {
    const range = this.options.ports!;
    const assign = async (gone: { listenPort: number; reason: ReleaseReason }[]) => {
      const { state } = await this.bus.execute(serviceOriginsDecider, SERVICE_ORIGINS_STREAM, {
        type: 'AssignServiceOrigin', data: { instanceId, port, range, generation: randomUUID(), gone },
      }, context);
      const origin = originOf(state, instanceId, port)!;
      return { listenPort: origin.listenPort, generation: origin.generation };
    };
    try {
      return await assign([]);
    } catch (err) {
      if (!(err instanceof ConflictError) || err.code !== 'NO_SERVICE_PORT') throw err;
      // The range is full: ports of services that are gone (instance deleted, port removed) come back.
      return assign(await this.gonePorts());
    }
  }

  private async gonePorts(): Promise<{ listenPort: number; reason: ReleaseReason }[]> {
    const gone: { listenPort: number; reason: ReleaseReason }[] = [];
    for (const origin of await this.store.collection<ServiceOriginView>(SERVICE_ORIGINS).find({})) {
      const instance = await this.store.collection<InstanceView>(INSTANCES).get(origin.instanceId);
      if (!instance) gone.push({ listenPort: origin.listenPort, reason: 'instance-deleted' });
      else if (!(instance.servicePorts ?? []).some((p) => p.port === origin.port)) gone.push({ listenPort: origin.listenPort, reason: 'port-removed' });
    }
    return gone;
  }

  /** A removed service port (or a deleted instance) gives its platform port back. */
  async release(instanceId: string, port: number | undefined, context: CommandContext): Promise<void> {
    if (!this.options.ports) return;
    await this.bus.execute(serviceOriginsDecider, SERVICE_ORIGINS_STREAM, {
      type: 'ReleaseServiceOrigins', data: { instanceId, ...(port === undefined ? {} : { port }), reason: port === undefined ? 'instance-deleted' : 'port-removed' },
    }, context);
  }

  /**
   * A ticket from a link, exchanged once — by anyone, on any replica — for the proxy cookie of
   * that one service; null when it is not good (forged, expired, for another service or form,
   * used already, or its user may no longer sign in).
   */
  async redeem(address: ServiceAddress, ticket: string, clientAddress: string): Promise<{ value: string; maxAgeSeconds: number } | null> {
    const claims = this.grants.verify('t', ticket, address);
    if (!claims?.id) return null;
    try {
      await this.bus.execute(serviceTicketDecider, serviceTicketStream(claims.id), {
        type: 'RedeemServiceTicket', data: { userId: claims.sub, instanceId: address.instanceId, port: address.port, form: address.form, clientAddress },
      }, { userId: claims.sub, ...(clientAddress ? { clientIp: clientAddress } : {}) });
    } catch (err) {
      if (err instanceof UnauthorizedError || (err instanceof ConflictError && err.code === 'CONCURRENT_CHANGE')) return null;
      throw err;
    }
    if (!(await this.accounts.activeActor(claims.sub, claims.pwd, claims.signIn))) return null;
    const grant = this.grants.issue('c', claims.sub, claims.pwd, address, claims.signIn);
    return { value: grant.value, maxAgeSeconds: Math.floor(GRANT_LIFETIME_MS / 1000) };
  }

  /**
   * Who may pass, checked on every request: a proxy cookie of this service (every value the
   * browser sent under its name is tried: a cookie another page planted cannot shadow the real
   * one), or a platform bearer token (scripts, curl). 401 without either, 404 for an instance or
   * port that is not theirs or not declared, 409 while the instance is not running.
   */
  async authorize(address: ServiceAddress, credentials: { cookies?: readonly string[]; bearer?: string }): Promise<ServicePass> {
    const { actor, via, pwd, expiresAt } = await this.actorOf(address, credentials);
    if (!actor) {
      throw new UnauthorizedError(credentials.cookies?.length || credentials.bearer
        ? 'This link has expired, or the account is disabled. Open the service again from the console.'
        : 'Open this service from the console (实例详情 → 服务), or send a bearer token.');
    }
    const instance = await this.instances.visible(actor, address.instanceId);
    const service = httpService(instance, address.port);
    if (instance.status !== 'running' || !instance.containerId) {
      throw new ConflictError('NOT_RUNNING', `The instance is not running (${instance.status}): start it to reach its services.`);
    }
    return {
      actor, instance, service, via, pwd, expiresAt,
      upstream: { target: await this.targetOf(instance.nodeId), containerId: instance.containerId, port: address.port },
    };
  }

  /**
   * Whether an open connection may go on (checked when an account or instance event may have
   * ended it): the credential still good, the user still allowed, the instance still running
   * the same container, the port still declared.
   */
  async stillAllowed(pass: ServicePass, address: ServiceAddress, now = Date.now()): Promise<boolean> {
    if (pass.expiresAt <= now) return false;
    const actor = await this.accounts.activeActor(pass.actor.id, pass.pwd, pass.actor.session).catch(() => null);
    if (!actor) return false;
    const instance = await this.instances.visible(actor, address.instanceId).catch(() => null);
    if (!instance || instance.status !== 'running' || instance.containerId !== pass.instance.containerId) return false;
    return (instance.servicePorts ?? []).some((p) => p.port === address.port);
  }

  private async actorOf(address: ServiceAddress, credentials: { cookies?: readonly string[]; bearer?: string }): Promise<{ actor: Actor | null; via: 'cookie' | 'bearer'; pwd: string; expiresAt: number }> {
    for (const cookie of credentials.cookies ?? []) {
      const claims = this.grants.verify('c', cookie, address);
      const actor = claims ? await this.accounts.activeActor(claims.sub, claims.pwd, claims.signIn) : null;
      if (actor && claims) return { actor, via: 'cookie', pwd: claims.pwd, expiresAt: claims.expiresAt };
    }
    const session = credentials.bearer ? await this.accounts.session(credentials.bearer) : null;
    return { actor: session?.actor ?? null, via: 'bearer', pwd: session?.pwd ?? '', expiresAt: session?.expiresAtMs ?? 0 };
  }

  /** `<port>-<instance>.<domain>`, on the domain's port, or else the port the console was reached on. */
  private hostUrl(origin: LinkOrigin, instanceId: string, port: number): string | null {
    const domain = this.options.domain;
    if (!domain) return null;
    const listen = /:\d+$/.test(domain) || !origin.port ? '' : `:${origin.port}`;
    return `${origin.scheme}://${port}-${instanceId}.${domain}${listen}/`;
  }
}

/** `<scheme>://<the console's host name>:<port>/`: the port form. */
function portUrl(origin: LinkOrigin, listenPort: number): string {
  return `${origin.scheme}://${origin.hostname}:${listenPort}/`;
}

/** The instance's declared http service on this port, or 404. */
function httpService(instance: InstanceView, port: number): InstanceServicePort {
  const service = (instance.servicePorts ?? []).find((p) => p.port === port);
  if (!service) throw new NotFoundError(`Service port ${port}`, 'NOT_FOUND');
  if (service.protocol !== 'http') {
    throw new ConflictError('NOT_HTTP', `Port ${port} is a tcp service: reach it with ssh -L${instance.name ? ` (实例 ${instance.name})` : ''}, not in the browser.`);
  }
  return service;
}
