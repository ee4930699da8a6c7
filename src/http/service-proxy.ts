import { Agent, request as httpRequest, type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import {
  hostAddress,
  pathAddress,
  SERVICE_COOKIE,
  TICKET_PARAMETER,
  type ServiceAccess,
  type ServiceAddress,
  type ServicePass,
} from '../commands/instance/service-access.ts';
import { ServiceUnreachableError, type ServiceTarget } from '../commands/instance/service-dialer.ts';
import { toErrorResponse } from './errors.ts';

export interface ServiceProxyOptions {
  readonly access: ServiceAccess;
  readonly dial: (service: ServiceTarget) => Promise<Duplex>;
  /** TIANQI_SERVICE_DOMAIN: the host form's domain. */
  readonly domain?: string;
  /** How long a service may take to start its answer (TIANQI_SERVICE_TIMEOUT_MS). */
  readonly timeoutMs: number;
  /** TIANQI_TRUST_PROXY: proxies in front, for the client's address and scheme. */
  readonly trustProxy: number;
  /** Whether a bearer token is one of the platform's (it is then not passed on to the service). */
  readonly isPlatformToken: (token: string) => Promise<boolean>;
  readonly logger: Logger;
}

/** Headers of one hop only (RFC 9110 §7.6.1), never passed on. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'transfer-encoding', 'upgrade']);
/** What a container's service may not tell the browser: that it is the platform's HTTP server, or who signs in. */
const DROPPED_RESPONSE_HEADERS = new Set(['strict-transport-security', 'clear-site-data']);
/** Upstream connections kept open per service between requests. */
const AGENT_SOCKETS = 64;
const AGENT_IDLE_MS = 30_000;

/**
 * The signed-in reverse proxy in front of instances' services (自定义服务), on the platform's
 * HTTP port before the API: `/svc/<instance>/<port>/…` (the path is passed on whole: the service
 * is told its base path, as Jupyter's base_url or TensorBoard's --path_prefix) and, with
 * TIANQI_SERVICE_DOMAIN, `<port>-<instance>.<domain>` (an origin of its own, for apps that must
 * sit at `/`). HTTP is streamed both ways (no body is held in memory), WebSockets are joined
 * after the upgrade. The proxy's cookie and the platform's token never reach the service; the
 * service's cookies are held to its own prefix.
 */
export class ServiceProxy {
  private readonly agents = new Map<string, { agent: Agent; used: number }>();
  private readonly sweeper: NodeJS.Timeout;
  /** Joined WebSockets: the HTTP server no longer tracks them, so closing the proxy ends them. */
  private readonly joined = new Set<Duplex>();

  constructor(private readonly options: ServiceProxyOptions) {
    this.sweeper = setInterval(() => this.sweep(), AGENT_IDLE_MS).unref();
  }

  /** The service a request is for, or null: the request is the API's or the console's. */
  match(req: IncomingMessage): ServiceAddress | null {
    return hostAddress(req.headers.host, this.options.domain) ?? pathAddress(pathOf(req.url));
  }

  async handle(req: IncomingMessage, res: ServerResponse, address: ServiceAddress): Promise<void> {
    try {
      if (address.form === 'path' && pathOf(req.url) === address.prefix) {
        // `/svc/<id>/8888` → `/svc/<id>/8888/`: relative links then resolve under the service.
        return redirect(res, `${address.prefix}/${queryOf(req.url)}`, 308);
      }
      const ticket = new URLSearchParams(queryOf(req.url)).get(TICKET_PARAMETER);
      if (ticket !== null) return await this.exchange(req, res, address, ticket);
      const pass = await this.options.access.authorize(address, credentialsOf(req));
      await this.forward(req, res, address, pass);
    } catch (err) {
      this.fail(req, res, err);
    }
  }

  /** A WebSocket (Jupyter kernels, Gradio queues): the same checks, then the two sockets joined. */
  async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, address: ServiceAddress): Promise<void> {
    socket.on('error', () => socket.destroy());
    try {
      const pass = await this.options.access.authorize(address, credentialsOf(req));
      const upstream = await this.options.dial(pass.upstream);
      const headers = await this.requestHeaders(req, address, pass);
      headers.connection = 'Upgrade';
      headers.upgrade = req.headers.upgrade ?? 'websocket';
      const outgoing = httpRequest({ method: req.method, path: req.url, headers, createConnection: () => upstream as Socket });
      const timer = setTimeout(() => outgoing.destroy(new ServiceTimeoutError(this.options.timeoutMs)), this.options.timeoutMs);
      outgoing.on('upgrade', (answer, upstreamSocket, upstreamHead) => {
        clearTimeout(timer);
        // Upgrade and Connection are hop-by-hop, and this hop switches protocols too.
        const switched = { ...this.responseHeaders(answer, address, req), connection: 'Upgrade', upgrade: String(answer.headers.upgrade ?? 'websocket') };
        socket.write(statusLine(answer) + headerLines(switched) + '\r\n');
        if (upstreamHead.length > 0) socket.write(upstreamHead);
        if (head.length > 0) upstreamSocket.write(head);
        upstreamSocket.pipe(socket).pipe(upstreamSocket);
        this.joined.add(socket);
        const close = () => {
          this.joined.delete(socket);
          upstreamSocket.destroy();
          socket.destroy();
        };
        upstreamSocket.on('error', close).on('close', close);
        socket.on('close', close);
      });
      outgoing.on('response', (answer) => {
        // The service did not switch protocols: its answer goes back as it is.
        clearTimeout(timer);
        socket.write(statusLine(answer) + headerLines({ ...this.responseHeaders(answer, address, req), connection: 'close' }) + '\r\n');
        answer.pipe(socket);
      });
      outgoing.on('error', (err) => {
        clearTimeout(timer);
        rejectUpgrade(socket, err instanceof ServiceTimeoutError ? err : new ServiceUnreachableError(address.port, describeUpstreamError(err)));
      });
      outgoing.end();
    } catch (err) {
      rejectUpgrade(socket, err);
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    for (const socket of this.joined) socket.destroy();
    for (const { agent } of this.agents.values()) agent.destroy();
    this.agents.clear();
  }

  /** A link's ticket becomes the service's cookie; the address bar loses the ticket. */
  private async exchange(req: IncomingMessage, res: ServerResponse, address: ServiceAddress, ticket: string): Promise<void> {
    const grant = await this.options.access.redeem(address, ticket);
    const params = new URLSearchParams(queryOf(req.url));
    params.delete(TICKET_PARAMETER);
    const rest = params.toString();
    const location = `${pathOf(req.url)}${rest ? `?${rest}` : ''}`;
    if (!grant) {
      // An old or copied link: a clear page, not a silent pass to the service.
      this.fail(req, res, new ServiceLinkError());
      return;
    }
    const secure = this.scheme(req) === 'https' ? '; Secure' : '';
    const path = address.form === 'path' ? `${address.prefix}/` : '/';
    res.setHeader('Set-Cookie', `${SERVICE_COOKIE}=${grant.value}; Path=${path}; Max-Age=${grant.maxAgeSeconds}; HttpOnly; SameSite=Lax${secure}`);
    res.setHeader('Cache-Control', 'no-store');
    redirect(res, location, 303);
  }

  private async forward(req: IncomingMessage, res: ServerResponse, address: ServiceAddress, pass: ServicePass): Promise<void> {
    const headers = await this.requestHeaders(req, address, pass);
    const outgoing: ClientRequest = httpRequest({ method: req.method, path: req.url, headers, agent: this.agentFor(pass.upstream) });
    // The service's time to answer counts from the end of the request: a 1 GB upload takes what it takes.
    let timer: NodeJS.Timeout | undefined;
    outgoing.on('finish', () => {
      timer = setTimeout(() => outgoing.destroy(new ServiceTimeoutError(this.options.timeoutMs)), this.options.timeoutMs);
    });
    outgoing.on('response', (answer) => {
      clearTimeout(timer);
      res.writeHead(answer.statusCode ?? 502, answer.statusMessage, this.responseHeaders(answer, address, req));
      answer.pipe(res);
      // A service that dies mid-answer: the browser sees a cut connection, not a truncated page as whole.
      answer.on('error', () => res.destroy());
      answer.on('aborted', () => res.destroy());
    });
    outgoing.on('error', (err) => {
      clearTimeout(timer);
      if (res.headersSent) return res.destroy();
      this.fail(req, res, err instanceof ServiceTimeoutError || err instanceof ServiceUnreachableError
        ? err
        : new ServiceUnreachableError(address.port, describeUpstreamError(err)));
    });
    // The browser left (closed the tab, cancelled an upload): the service's request goes too.
    res.on('close', () => {
      if (!res.writableFinished) outgoing.destroy();
    });
    req.pipe(outgoing);
  }

  private async requestHeaders(req: IncomingMessage, address: ServiceAddress, pass: ServicePass): Promise<Record<string, string | string[]>> {
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value === undefined || HOP_BY_HOP.has(name) || name.startsWith('x-forwarded-') || name === 'forwarded') continue;
      headers[name] = value;
    }
    const cookies = withoutCookie(req.headers.cookie, SERVICE_COOKIE);
    if (cookies) headers.cookie = cookies;
    else delete headers.cookie;
    // The token that let the caller in is the platform's; with a cookie, a bearer header may be the service's own.
    const bearer = credentialsOf(req).bearer;
    if (bearer && (pass.via === 'bearer' || (await this.options.isPlatformToken(bearer)))) delete headers.authorization;
    headers['x-forwarded-for'] = this.clientAddress(req);
    headers['x-forwarded-proto'] = this.scheme(req);
    if (req.headers.host) headers['x-forwarded-host'] = req.headers.host;
    if (address.prefix) headers['x-forwarded-prefix'] = address.prefix;
    headers['x-tianqi-user'] = pass.actor.username;
    return headers;
  }

  /** The service's headers for the browser: its cookies held to its prefix, its redirects to itself kept here. */
  private responseHeaders(answer: IncomingMessage, address: ServiceAddress, req: IncomingMessage): Record<string, string | string[]> {
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(answer.headers)) {
      if (value === undefined || HOP_BY_HOP.has(name) || DROPPED_RESPONSE_HEADERS.has(name)) continue;
      headers[name] = value;
    }
    const cookies = answer.headers['set-cookie'];
    if (cookies) {
      const kept = cookies.map((c) => scopeCookie(c, address)).filter((c): c is string => c !== null);
      if (kept.length > 0) headers['set-cookie'] = kept;
      else delete headers['set-cookie'];
    }
    const location = answer.headers.location;
    if (location) headers.location = rewriteLocation(location, address, req.headers.host);
    return headers;
  }

  private agentFor(upstream: ServiceTarget): Agent {
    const key = `${upstream.target.nodeId}/${upstream.containerId}/${upstream.port}`;
    let entry = this.agents.get(key);
    if (!entry) {
      const dial = this.options.dial;
      const agent = new Agent({ keepAlive: true, maxSockets: AGENT_SOCKETS, maxFreeSockets: 16 });
      // Each new upstream connection is dialled the platform's way (direct or through the engine).
      agent.createConnection = ((_options: unknown, done: (err: Error | null, socket?: Duplex) => void) => {
        dial(upstream).then((socket) => done(null, socket), (err: Error) => done(err));
        return undefined;
      }) as unknown as Agent['createConnection'];
      entry = { agent, used: Date.now() };
      this.agents.set(key, entry);
    }
    entry.used = Date.now();
    return entry.agent;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [key, entry] of this.agents) {
      const busy = Object.keys(entry.agent.sockets).length > 0 || Object.keys(entry.agent.requests).length > 0;
      if (!busy && now - entry.used > AGENT_IDLE_MS) {
        entry.agent.destroy();
        this.agents.delete(key);
      }
    }
  }

  private clientAddress(req: IncomingMessage): string {
    const own = req.socket.remoteAddress ?? '';
    if (this.options.trustProxy === 0) return own;
    const hops = String(req.headers['x-forwarded-for'] ?? '').split(',').map((s) => s.trim()).filter(Boolean);
    const hop = hops.at(-this.options.trustProxy);
    return hop && isIP(hop) ? hop : own;
  }

  private scheme(req: IncomingMessage): 'http' | 'https' {
    if ((req.socket as Socket & { encrypted?: boolean }).encrypted) return 'https';
    if (this.options.trustProxy > 0) {
      const proto = String(req.headers['x-forwarded-proto'] ?? '').split(',')[0]?.trim();
      if (proto === 'https') return 'https';
    }
    return 'http';
  }

  private fail(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    const { status, body, unexpected } = answerOf(err);
    if (unexpected) this.options.logger.error({ err, path: pathOf(req.url) }, 'service proxy failed');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const wantsPage = /text\/html/.test(req.headers.accept ?? '');
    res.writeHead(status, {
      'content-type': wantsPage ? 'text/html; charset=utf-8' : 'application/json; charset=utf-8',
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
    });
    res.end(wantsPage ? errorPage(status, body.error.message) : JSON.stringify(body));
  }
}

/** The service took longer than TIANQI_SERVICE_TIMEOUT_MS to answer: 504. */
class ServiceTimeoutError extends Error {
  constructor(readonly ms: number) {
    super(`The service did not answer within ${Math.round(ms / 1000)} s.`);
  }
}

class ServiceLinkError extends Error {}

function answerOf(err: unknown): { status: number; body: { error: { code: string; message: string } }; unexpected: boolean } {
  if (err instanceof ServiceTimeoutError) return { status: 504, body: { error: { code: 'SERVICE_TIMEOUT', message: err.message } }, unexpected: false };
  if (err instanceof ServiceUnreachableError) {
    return {
      status: 502,
      body: { error: { code: 'SERVICE_UNREACHABLE', message: `Nothing answers on port ${err.port} in the instance (${err.message}). Is the service running and listening on that port?` } },
      unexpected: false,
    };
  }
  if (err instanceof ServiceLinkError) {
    return { status: 401, body: { error: { code: 'LINK_EXPIRED', message: 'This link is used up or expired. Open the service again from the console.' } }, unexpected: false };
  }
  return toErrorResponse(err);
}

function describeUpstreamError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ECONNRESET' || code === 'EPIPE') return 'the service closed the connection without an answer';
  if (code === 'HPE_INVALID_CONSTANT' || String(code).startsWith('HPE_')) return 'the service did not answer in HTTP';
  return err instanceof Error ? err.message : String(err);
}

function rejectUpgrade(socket: Duplex, err: unknown): void {
  const { status, body } = answerOf(err);
  const text = JSON.stringify(body);
  socket.end(`HTTP/1.1 ${status} ${STATUS_WORDS[status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
}

const STATUS_WORDS: Record<number, string> = { 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 409: 'Conflict', 502: 'Bad Gateway', 504: 'Gateway Timeout' };

function statusLine(answer: IncomingMessage): string {
  return `HTTP/1.1 ${answer.statusCode} ${answer.statusMessage ?? ''}\r\n`;
}

function headerLines(headers: Record<string, string | string[]>): string {
  let text = '';
  for (const [name, value] of Object.entries(headers)) {
    for (const v of Array.isArray(value) ? value : [value]) text += `${name}: ${v.replace(/[\r\n]/g, '')}\r\n`;
  }
  return text;
}

function redirect(res: ServerResponse, location: string, status: 303 | 308): void {
  res.writeHead(status, { location, 'content-length': 0, 'cache-control': 'no-store' });
  res.end();
}

function pathOf(url: string | undefined): string {
  const raw = url ?? '/';
  const q = raw.indexOf('?');
  return q === -1 ? raw : raw.slice(0, q);
}

function queryOf(url: string | undefined): string {
  const raw = url ?? '';
  const q = raw.indexOf('?');
  return q === -1 ? '' : raw.slice(q);
}

/** The proxy's cookie and a bearer token, where the request has them. */
function credentialsOf(req: IncomingMessage): { cookie?: string; bearer?: string } {
  const cookie = cookieValue(req.headers.cookie, SERVICE_COOKIE);
  const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
  return { ...(cookie ? { cookie } : {}), ...(bearer ? { bearer } : {}) };
}

export function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function withoutCookie(header: string | undefined, name: string): string {
  return (header ?? '').split(';').map((p) => p.trim()).filter((p) => p && p.slice(0, p.indexOf('=')).trim() !== name).join('; ');
}

/**
 * A service's Set-Cookie, held to the service: no Domain (host-only), the Path under the
 * service's prefix, and never the proxy's own cookie name. Null drops the cookie.
 */
export function scopeCookie(cookie: string, address: ServiceAddress): string | null {
  const [pair, ...attributes] = cookie.split(';');
  const name = pair!.slice(0, pair!.indexOf('=')).trim();
  if (!name || name === SERVICE_COOKIE) return null;
  let path = '/';
  const kept: string[] = [];
  for (const attribute of attributes) {
    const key = attribute.split('=')[0]!.trim().toLowerCase();
    if (key === 'domain') continue;
    if (key === 'path') {
      path = attribute.slice(attribute.indexOf('=') + 1).trim() || '/';
      continue;
    }
    kept.push(attribute.trim());
  }
  if (!path.startsWith('/')) path = '/';
  if (address.prefix && !(path === address.prefix || path.startsWith(`${address.prefix}/`))) {
    path = `${address.prefix}${path === '/' ? '/' : path}`;
  }
  return [pair!.trim(), `Path=${path}`, ...kept].join('; ');
}

/**
 * A redirect the service sends to itself (its own loopback, the platform's host, a path) stays
 * under its prefix here; one to another host is passed on as it is: the browser leaves the
 * platform, which is the service's choice.
 */
export function rewriteLocation(location: string, address: ServiceAddress, requestHost: string | undefined): string {
  let url: URL;
  try {
    url = new URL(location, 'http://service.invalid');
  } catch {
    return location;
  }
  const own = url.host === 'service.invalid' || url.host === requestHost || ['localhost', '127.0.0.1', '0.0.0.0', '[::1]'].includes(url.hostname);
  if (!own) return location;
  let path = url.pathname;
  if (address.prefix && !(path === address.prefix || path.startsWith(`${address.prefix}/`))) path = `${address.prefix}${path}`;
  return `${path}${url.search}${url.hash}`;
}

function errorPage(status: number, message: string): string {
  const escaped = message.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const title = status === 401 ? '请从控制台打开此服务 · Open this service from the console'
    : status === 404 ? '找不到此服务 · No such service'
      : status === 409 ? '实例未在运行 · The instance is not running'
        : status === 502 ? '服务没有应答 · The service does not answer'
          : status === 504 ? '服务应答超时 · The service took too long'
            : '无法打开此服务 · This service cannot be opened';
  return `<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>${title}</title>`
    + '<style>body{font:15px/1.6 system-ui,sans-serif;max-width:40rem;margin:10vh auto;padding:0 1rem;color:#303133}h1{font-size:1.25rem}a{color:#409eff}</style></head>'
    + `<body><h1>${title}</h1><p>${escaped}</p><p><a href="/">返回控制台 · Back to the console</a></p></body></html>`;
}
