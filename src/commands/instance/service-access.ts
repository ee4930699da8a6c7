import { createHmac, timingSafeEqual } from 'node:crypto';
import type { InstanceServicePort } from '../../domain/instance/service-ports.ts';
import { ConflictError, ForbiddenError, NotFoundError, UnauthorizedError } from '../../domain/shared/errors.ts';
import type { NodeTarget } from '../../ports/container-runtime.port.ts';
import type { InstanceView } from '../../projections/instances.projection.ts';
import type { Accounts, Actor } from '../user/accounts.ts';
import type { Instances } from './instances.ts';
import type { ServiceDialer, ServiceTarget } from './service-dialer.ts';

/** The path form of a service link: `/svc/<instance id>/<port>/…`, the path passed on as it is. */
export const SERVICE_PATH_PREFIX = '/svc';
/** The proxy's own cookie, and the query parameter a link carries its one-time ticket in. */
export const SERVICE_COOKIE = 'tianqi_service';
export const TICKET_PARAMETER = 'tianqi_ticket';
/** A link's ticket is for opening it now; the cookie it becomes lasts a working day. */
export const TICKET_LIFETIME_MS = 60_000;
export const GRANT_LIFETIME_MS = 12 * 60 * 60 * 1000;

/** Which service a request is for, and in which form it came. */
export interface ServiceAddress {
  readonly instanceId: string;
  readonly port: number;
  /** `path`: under /svc/<id>/<port>/ of the console's origin; `host`: `<port>-<id>.<domain>`, an origin of its own. */
  readonly form: 'path' | 'host';
  /** `/svc/<id>/<port>` in the path form, '' in the host form. */
  readonly prefix: string;
}

const INSTANCE_ID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
const PATH_FORM = new RegExp(`^${SERVICE_PATH_PREFIX}/(${INSTANCE_ID})/([1-9][0-9]{0,4})(/|$)`);
const HOST_LABEL = new RegExp(`^([1-9][0-9]{0,4})-(${INSTANCE_ID})$`);

/** The service a path names (`/svc/<id>/<port>/…`), or null for any other path. */
export function pathAddress(path: string): ServiceAddress | null {
  const match = PATH_FORM.exec(path);
  if (!match || Number(match[2]) > 65_535) return null;
  return { instanceId: match[1]!, port: Number(match[2]), form: 'path', prefix: `${SERVICE_PATH_PREFIX}/${match[1]}/${match[2]}` };
}

/** The service a Host header names (`<port>-<id>.<domain>`), or null. */
export function hostAddress(host: string | undefined, domain: string | undefined): ServiceAddress | null {
  if (!host || !domain) return null;
  // Ports aside: the same name is the same service whichever port a proxy in front listens on.
  const name = host.toLowerCase().replace(/:\d+$/, '');
  const suffix = `.${domain.replace(/:\d+$/, '')}`;
  if (!name.endsWith(suffix)) return null;
  const match = HOST_LABEL.exec(name.slice(0, -suffix.length));
  if (!match || Number(match[1]) > 65_535) return null;
  return { instanceId: match[2]!, port: Number(match[1]), form: 'host', prefix: '' };
}

interface GrantClaims {
  /** `t`: a link's one-time ticket; `c`: the proxy cookie it was exchanged for. */
  readonly k: 't' | 'c';
  readonly sub: string;
  readonly pwd: string;
  readonly i: string;
  readonly p: number;
  readonly exp: number;
}

/**
 * Signed grants to one service of one instance (HMAC-SHA256 with a key derived from the master
 * key): they open that port of that instance and nothing else, and name a user who is checked
 * again on every request.
 */
export class ServiceGrants {
  constructor(private readonly key: Buffer, private readonly clock: () => number = Date.now) {}

  issue(kind: 't' | 'c', sub: string, pwd: string, address: { instanceId: string; port: number }): { value: string; expiresAt: number } {
    const expiresAt = this.clock() + (kind === 't' ? TICKET_LIFETIME_MS : GRANT_LIFETIME_MS);
    const claims: GrantClaims = { k: kind, sub, pwd, i: address.instanceId, p: address.port, exp: expiresAt };
    const body = Buffer.from(JSON.stringify(claims)).toString('base64url');
    return { value: `${body}.${this.sign(body)}`, expiresAt };
  }

  verify(kind: 't' | 'c', value: string, address: { instanceId: string; port: number }): { sub: string; pwd: string } | null {
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
    if (claims.k !== kind || claims.i !== address.instanceId || claims.p !== address.port || !(claims.exp > this.clock())) return null;
    return { sub: claims.sub, pwd: claims.pwd };
  }

  private sign(body: string): string {
    return createHmac('sha256', this.key).update(body).digest('base64url');
  }
}

/** How the browser reached the console: absolute links to services use the same scheme (and port). */
export interface LinkOrigin {
  readonly scheme: string;
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
}

/** A service of an instance as the API shows it. */
export interface ServiceLinkView extends InstanceServicePort {
  /** Path form, relative to the console's origin (http services only). */
  readonly path: string | null;
  /** Host form, when TIANQI_SERVICE_DOMAIN is set (http services only). */
  readonly hostUrl: string | null;
  /** Whether something listens on the port now; null when the instance is not running. */
  readonly listening: boolean | null;
}

/**
 * 自定义服务: who may open which service of an instance, and where it is. Only the owner and
 * admins get through, each request checked again (a disabled user, a changed password, a deleted
 * or stopped instance, a removed port: the next request is refused). In the path form the
 * service shares the console's origin, so admins are sent to the host form, where a service's
 * scripts cannot reach the console's sign-in.
 */
export class ServiceAccess {
  constructor(
    private readonly instances: Instances,
    private readonly accounts: Accounts,
    private readonly grants: ServiceGrants,
    private readonly dialer: ServiceDialer,
    private readonly targetOf: (nodeId: string) => Promise<NodeTarget>,
    private readonly domain: string | undefined,
  ) {}

  /** The instance's services, each with its links and whether it listens now. */
  async list(actor: Actor, instanceId: string, origin: LinkOrigin): Promise<ServiceLinkView[]> {
    const instance = await this.instances.visible(actor, instanceId);
    const ports = instance.servicePorts ?? [];
    const target = instance.status === 'running' && instance.containerId ? await this.targetOf(instance.nodeId).catch(() => null) : null;
    return Promise.all(ports.map(async (service) => ({
      ...service,
      path: service.protocol === 'http' ? `${SERVICE_PATH_PREFIX}/${instance.id}/${service.port}/` : null,
      hostUrl: service.protocol === 'http' ? this.hostUrl(origin, instance.id, service.port) : null,
      listening: target ? await this.dialer.listening({ target, containerId: instance.containerId!, port: service.port }).catch(() => false) : null,
    })));
  }

  /**
   * A link that opens the service signed in: its ticket (good for a minute) becomes the proxy's
   * cookie for that service only. Admins opening someone else's service get the host form only.
   */
  async link(actor: Actor, instanceId: string, port: number, origin: LinkOrigin, wanted?: 'path' | 'host'): Promise<{ url: string; form: 'path' | 'host'; expiresAt: string }> {
    const instance = await this.instances.visible(actor, instanceId);
    const service = httpService(instance, port);
    // The host form where there is one (each service its own origin), else the path form.
    const form = wanted ?? (this.domain ? 'host' : 'path');
    if (form === 'host' && !this.domain) throw new ConflictError('NO_SERVICE_DOMAIN', 'The host form needs TIANQI_SERVICE_DOMAIN, which is not set on this platform.');
    if (form === 'path') this.assertPathForm(actor, instance);
    const user = await this.accounts.get(actor.id);
    const ticket = this.grants.issue('t', actor.id, user.passwordChangedAt, { instanceId, port: service.port });
    const base = form === 'host' ? this.hostUrl(origin, instanceId, port)! : `${SERVICE_PATH_PREFIX}/${instanceId}/${port}/`;
    return { url: `${base}?${TICKET_PARAMETER}=${ticket.value}`, form, expiresAt: new Date(ticket.expiresAt).toISOString() };
  }

  /** A ticket from a link, exchanged for the proxy cookie of that one service; null when it is not good. */
  async redeem(address: ServiceAddress, ticket: string): Promise<{ value: string; maxAgeSeconds: number } | null> {
    const claims = this.grants.verify('t', ticket, address);
    if (!claims || !(await this.accounts.activeActor(claims.sub, claims.pwd))) return null;
    const grant = this.grants.issue('c', claims.sub, claims.pwd, address);
    return { value: grant.value, maxAgeSeconds: Math.floor(GRANT_LIFETIME_MS / 1000) };
  }

  /**
   * Who may pass, checked on every request: the proxy cookie of this service, or a platform
   * bearer token (scripts, curl). 401 without either, 404 for an instance or port that is not
   * theirs or not declared, 403 for an admin in the path form, 409 while the instance is not running.
   */
  async authorize(address: ServiceAddress, credentials: { cookie?: string; bearer?: string }): Promise<ServicePass> {
    const { actor, via } = await this.actorOf(address, credentials);
    if (!actor) {
      throw new UnauthorizedError(credentials.cookie || credentials.bearer
        ? 'This link has expired, or the account is disabled. Open the service again from the console.'
        : 'Open this service from the console (实例详情 → 服务), or send a bearer token.');
    }
    const instance = await this.instances.visible(actor, address.instanceId);
    const service = httpService(instance, address.port);
    if (address.form === 'path') this.assertPathForm(actor, instance);
    if (instance.status !== 'running' || !instance.containerId) {
      throw new ConflictError('NOT_RUNNING', `The instance is not running (${instance.status}): start it to reach its services.`);
    }
    return { actor, instance, service, via, upstream: { target: await this.targetOf(instance.nodeId), containerId: instance.containerId, port: address.port } };
  }

  private async actorOf(address: ServiceAddress, credentials: { cookie?: string; bearer?: string }): Promise<{ actor: Actor | null; via: 'cookie' | 'bearer' }> {
    if (credentials.cookie) {
      const claims = this.grants.verify('c', credentials.cookie, address);
      const actor = claims ? await this.accounts.activeActor(claims.sub, claims.pwd) : null;
      if (actor) return { actor, via: 'cookie' };
    }
    return { actor: credentials.bearer ? await this.accounts.authenticate(credentials.bearer) : null, via: 'bearer' };
  }

  /**
   * The path form shares the console's origin, so it is the owner's only: an admin opening
   * someone else's service there would hand that service the console's sign-in.
   */
  private assertPathForm(actor: Actor, instance: InstanceView): void {
    if (actor.id === instance.ownerId) return;
    throw new ForbiddenError(`Admins open other users' services in the host form only, where the service cannot reach the console's sign-in${
      this.domain ? '' : '; TIANQI_SERVICE_DOMAIN is not set on this platform'}.`, 'HOST_FORM_ONLY');
  }

  /** `<port>-<instance>.<domain>`, on the domain's port, or else the port the console was reached on. */
  private hostUrl(origin: LinkOrigin, instanceId: string, port: number): string | null {
    if (!this.domain) return null;
    const listen = /:\d+$/.test(this.domain) || !origin.port ? '' : `:${origin.port}`;
    return `${origin.scheme}://${port}-${instanceId}.${this.domain}${listen}/`;
  }
}

/** The instance's declared http service on this port, or 404. */
function httpService(instance: InstanceView, port: number): InstanceServicePort {
  const service = (instance.servicePorts ?? []).find((p) => p.port === port);
  if (!service) throw new NotFoundError(`Service port ${port}`, 'SERVICE_NOT_FOUND');
  if (service.protocol !== 'http') {
    throw new ConflictError('NOT_HTTP', `Port ${port} is a tcp service: reach it with ssh -L${instance.name ? ` (实例 ${instance.name})` : ''}, not in the browser.`);
  }
  return service;
}
