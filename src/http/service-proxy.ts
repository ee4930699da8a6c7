import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Observable, Subscription } from 'rxjs';
import {
  hostAddress,
  PLATFORM_COOKIE_PREFIX,
  serviceCookieName,
  TICKET_PARAMETER,
  type ServiceAccess,
  type ServiceAddress,
  type ServicePass,
} from '../commands/instance/service-access.ts';
import { accessEnding } from '../domain/instance/access.ts';
import { ForbiddenError } from '../domain/shared/errors.ts';
import type { RecordedEvent } from '../ports/event-store.port.ts';
import { ServiceUnreachableError, type ServiceTarget } from '../commands/instance/service-dialer.ts';
import { toErrorResponse } from './errors.ts';
import { AnswerReader, ChunkedEncoder, headerLines, requestHead, UpstreamPool, UpstreamProtocolError, type UpstreamHead } from './upstream-http.ts';

export interface ServiceProxyOptions {
  readonly access: ServiceAccess;
  readonly dial: (service: ServiceTarget) => Promise<Duplex>;
  /** TIANQI_SERVICE_DOMAIN: the host form's domain. */
  readonly domain?: string;
  /** How long a service may take to start its answer (TIANQI_SERVICE_TIMEOUT_MS). */
  readonly timeoutMs: number;
  /** TIANQI_TRUST_PROXY: proxies in front, for the client's address and scheme. */
  readonly trustProxy: number;
  /** Whether a bearer token is one of the platform's, valid or not (it is then never passed on to the service). */
  readonly isPlatformToken: (token: string) => boolean;
  readonly logger: Logger;
  /** A signed-in request or WebSocket message reached the instance's service (activity for the idle auto-stop). */
  readonly onUse?: (instanceId: string) => void;
}

/** Headers of one hop only (RFC 9110 §7.6.1), never passed on. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'transfer-encoding', 'upgrade']);
/**
 * What a container's service may not tell the browser: that its origin is the platform's (HSTS
 * would pin the platform's host), to wipe what the browser keeps, or to let a service worker rule
 * beyond its own scripts' path.
 */
const DROPPED_RESPONSE_HEADERS = new Set(['strict-transport-security', 'clear-site-data', 'service-worker-allowed']);
/** A port form's marker: which assignment of the port this browser has seen (a year; a new one clears the origin's storage). */
const ORIGIN_MARKER = `${PLATFORM_COOKIE_PREFIX}origin`;
/** In the port form every service shares the host's cookie jar (cookies ignore ports): HttpOnly cookies are kept apart under this prefix. */
const HELD_COOKIE = (listenPort: number) => `__tq${listenPort}_`;
/** Methods that change nothing (RFC 9110 §9.2.1): a page of another origin may send them. */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
/** Upstream connections per service: kept open between requests, for how long, and carrying requests at once. */
const IDLE_CONNECTIONS = 16;
const IDLE_MS = 30_000;
const ACTIVE_CONNECTIONS = 64;

/**
 * The signed-in reverse proxy in front of instances' services (自定义服务). Every service is
 * served on an origin of its own, never the console's: `<port>-<instance>.<TIANQI_SERVICE_DOMAIN>`
 * on the platform's HTTP port, or a port of TIANQI_SERVICE_PORTS given to it (one listener per
 * port, `listen`). Any web app works at `/`. HTTP is streamed both ways (no body is held in
 * memory), WebSockets are joined after the upgrade. No platform cookie and no platform token
 * ever reaches a service. Open connections end when the account or the instance no longer allows
 * them (`follow`), or when their credential expires.
 */
export class ServiceProxy {
  private readonly pool: UpstreamPool<ServiceTarget>;
  /** Open WebSockets and answers being streamed, each with who opened it: re-checked on account and instance events. */
  private readonly open = new Set<OpenConnection>();
  private readonly listeners: Server[] = [];
  private following?: Subscription;

  constructor(private readonly options: ServiceProxyOptions) {
    // Each new upstream connection is dialled the platform's way (direct or through the engine).
    this.pool = new UpstreamPool(options.dial, (u) => `${u.target.nodeId}/${u.containerId}/${u.port}`, {
      maxIdle: IDLE_CONNECTIONS, idleMs: IDLE_MS, maxActive: ACTIVE_CONNECTIONS,
    });
  }

  /** The service a request on the platform's HTTP port is for (host form), or null: the request is the API's or the console's. */
  match(req: IncomingMessage): ServiceAddress | null {
    return hostAddress(req.headers.host, this.options.domain);
  }

  /**
   * The port form: a listener on each port of the range (on `host`), each answering for the
   * service that holds its port now. A port another process holds is skipped with a warning
   * (another replica on this host serves it); how many listen is returned.
   */
  async listen(range: { min: number; max: number }, host: string): Promise<{ listening: number; skipped: number[] }> {
    const skipped: number[] = [];
    const ports = Array.from({ length: range.max - range.min + 1 }, (_, i) => range.min + i);
    await Promise.all(ports.map((listenPort) => new Promise<void>((resolve) => {
      const server = createServer((req, res) => void this.atPort(listenPort, req, res));
      server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => void this.upgradeAtPort(listenPort, req, socket, head));
      server.keepAliveTimeout = 65_000;
      server.once('error', () => {
        skipped.push(listenPort);
        resolve();
      });
      server.listen(listenPort, host, () => {
        this.listeners.push(server);
        resolve();
      });
    })));
    if (skipped.length > 0) {
      this.options.logger.warn({ skipped: skipped.length, first: Math.min(...skipped) }, 'some service ports (TIANQI_SERVICE_PORTS) are taken by another process: services given those ports are served there, or not at all');
    }
    return { listening: this.listeners.length, skipped: skipped.sort((a, b) => a - b) };
  }

  /** Ends open connections the moment an account or instance event may have taken their right away (checked again, not assumed). */
  follow(events$: Observable<RecordedEvent>): void {
    this.following = events$.subscribe((event) => {
      if (this.open.size === 0) return;
      if (!accessEnding(event) && event.type !== 'ServicePortRemoved') return;
      for (const connection of this.open) {
        if (event.stream === `user-${connection.pass.actor.id}` || event.stream === `instance-${connection.address.instanceId}`) void this.recheck(connection);
      }
    });
  }

  private async recheck(connection: OpenConnection): Promise<void> {
    const allowed = await this.options.access.stillAllowed(connection.pass, connection.address).catch(() => false);
    if (!allowed) connection.end();
  }

  /** A request on a port of the port form. */
  private async atPort(listenPort: number, req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const address = await this.options.access.atPort(listenPort);
      if (!address) throw new NoServiceHereError();
      await this.handle(req, res, address);
    } catch (err) {
      this.fail(req, res, err);
    }
  }

  private async upgradeAtPort(listenPort: number, req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const address = await this.options.access.atPort(listenPort).catch(() => null);
    if (!address) {
      socket.on('error', () => socket.destroy());
      rejectUpgrade(socket, new NoServiceHereError());
      return;
    }
    await this.upgrade(req, socket, head, address);
  }

  async handle(req: IncomingMessage, res: ServerResponse, address: ServiceAddress): Promise<void> {
    try {
      const ticket = new URLSearchParams(queryOf(req.url)).get(TICKET_PARAMETER);
      if (ticket !== null) return await this.exchange(req, res, address, ticket);
      const pass = await this.options.access.authorize(address, credentialsOf(req, address));
      this.assertSameOrigin(req, pass, false);
      this.options.onUse?.(address.instanceId);
      await this.forward(req, res, address, pass);
    } catch (err) {
      this.fail(req, res, err);
    }
  }

  /** A WebSocket (Jupyter kernels, Gradio queues): the same checks, then the two sockets joined. */
  async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, address: ServiceAddress): Promise<void> {
    socket.on('error', () => socket.destroy());
    try {
      const pass = await this.options.access.authorize(address, credentialsOf(req, address));
      this.assertSameOrigin(req, pass, true);
      const upstream = await this.options.dial(pass.upstream);
      const headers = this.requestHeaders(req, address, pass);
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
        // What the browser sends (a notebook cell run, a keystroke) is use; what the service pushes is not.
        this.options.onUse?.(address.instanceId);
        socket.on('data', () => this.options.onUse?.(address.instanceId));
        const close = () => {
          untrack();
          upstreamSocket.destroy();
          socket.destroy();
        };
        const untrack = this.track(pass, address, close);
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
    this.following?.unsubscribe();
    for (const server of this.listeners.splice(0)) {
      server.close();
      server.closeAllConnections();
    }
    for (const connection of [...this.open]) connection.end();
    this.pool.close();
  }

  /** A link's ticket becomes the service's cookie; the address bar loses the ticket. */
  private async exchange(req: IncomingMessage, res: ServerResponse, address: ServiceAddress, ticket: string): Promise<void> {
    const grant = await this.options.access.redeem(address, ticket, this.clientAddress(req));
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
    const cookies = [`${serviceCookieName(address)}=${grant.value}; Path=/; Max-Age=${grant.maxAgeSeconds}; HttpOnly; SameSite=Lax${secure}`];
    if (address.form === 'port') {
      // The port served another service before (perhaps another tenant's): what that one left in
      // this browser for the origin (storage, service workers, caches) goes before this one opens.
      const marker = `${ORIGIN_MARKER}_${address.listenPort}`;
      if (!cookieValues(req.headers.cookie, marker).includes(address.generation)) {
        res.setHeader('Clear-Site-Data', '"cache", "storage"');
        cookies.push(`${marker}=${address.generation}; Path=/; Max-Age=${365 * 24 * 3600}; HttpOnly; SameSite=Lax${secure}`);
      }
    }
    res.setHeader('Set-Cookie', cookies);
    res.setHeader('Cache-Control', 'no-store');
    redirect(res, location, 303);
  }

  /**
   * One request to the service and its answer back, both streamed. The answer's framing is read
   * on the connection's own bytes (upstream-http.ts), so its body goes on as the slices the socket
   * read. A kept-alive connection the service closed while it waited is replaced once for a
   * request that can be sent again (no body, a safe method), as nginx does.
   */
  private async forward(req: IncomingMessage, res: ServerResponse, address: ServiceAddress, pass: ServicePass): Promise<void> {
    const headers = this.requestHeaders(req, address, pass);
    // This server answered the browser's 100-continue already: the body comes as it is sent.
    delete headers.expect;
    const chunked = req.headers['content-length'] === undefined && req.headers['transfer-encoding'] !== undefined;
    if (chunked) headers['transfer-encoding'] = 'chunked';
    const hasBody = chunked || Number(req.headers['content-length'] ?? 0) > 0;
    const request: OutgoingRequest = { method: req.method ?? 'GET', head: requestHead(req.method ?? 'GET', req.url ?? '/', headers), hasBody, chunked };
    const replayable = !hasBody && SAFE_METHODS.has(request.method);
    for (let attempt = 0; ; attempt++) {
      const { socket, reused } = await this.pool.acquire(pass.upstream);
      // The browser left while the request waited for a connection: nothing to send.
      if (res.destroyed || req.destroyed) return this.pool.done(pass.upstream, socket, true);
      const outcome = await this.relay(req, res, address, pass, socket, request, reused && replayable && attempt === 0);
      if (outcome === 'done') return;
    }
  }

  /** Sends the request on `socket` and streams the answer into `res`; 'retry' where `mayRetry` and the connection closed before a byte came. */
  private relay(
    req: IncomingMessage, res: ServerResponse, address: ServiceAddress, pass: ServicePass, socket: Duplex, request: OutgoingRequest, mayRetry: boolean,
  ): Promise<'done' | 'retry'> {
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      let received = false;
      let sent = false;
      let over = false;
      let untrack: (() => void) | undefined;
      let draining = false;
      const resume = () => {
        draining = false;
        socket.resume();
      };
      const reader = new AnswerReader(request.method, {
        head: (answer) => {
          clearTimeout(timer);
          try {
            res.writeHead(answer.statusCode, answer.statusMessage, this.responseHeaders(answer, address, req));
          } catch {
            // A header value or name Node will not send (the reader lets some through that its HTTP server refuses).
            throw new UpstreamProtocolError('a header that cannot be passed on');
          }
          // A long answer (a log stream, server-sent events) ends with the right to it, as a WebSocket does.
          untrack = this.track(pass, address, () => abort(null));
        },
        body: (chunk) => {
          if (!res.write(chunk) && !draining) {
            draining = true;
            socket.pause();
            res.once('drain', resume);
          }
        },
        end: (reusable) => {
          stop();
          res.end();
          this.pool.done(pass.upstream, socket, reusable && sent);
          resolve('done');
        },
      });
      const onData = (chunk: Buffer) => {
        received = true;
        try {
          reader.push(chunk);
        } catch (err) {
          abort(err);
        }
      };
      const onEnd = () => {
        try {
          if (!received) throw new ServiceUnreachableError(address.port, 'the service closed the connection without an answer');
          reader.close();
        } catch (err) {
          abort(err);
        }
      };
      const onClose = () => {
        if (!reader.done) abort(received ? new UpstreamProtocolError('closed in the middle of the answer') : new ServiceUnreachableError(address.port, 'the service closed the connection without an answer'));
      };
      const onError = (err: Error) => abort(err);
      // The browser left (closed the tab, cancelled an upload): the service's request goes too.
      const onClientClose = () => {
        if (!res.writableFinished) abort(null);
      };
      const stop = () => {
        if (over) return;
        over = true;
        clearTimeout(timer);
        untrack?.();
        socket.off('data', onData).off('end', onEnd).off('close', onClose).off('error', onError);
        res.off('close', onClientClose).off('drain', resume);
        if (!sent) req.unpipe();
      };
      /** The exchange failed (err) or was ended (null): the connection is not used again. */
      const abort = (err: unknown) => {
        if (over) return;
        stop();
        this.pool.done(pass.upstream, socket, false);
        if (err === null) {
          res.destroy();
        } else if (mayRetry && !received && !res.headersSent) {
          return resolve('retry');
        } else if (res.headersSent) {
          // A service that dies mid-answer: the browser sees a cut connection, not a truncated page as whole.
          res.destroy();
        } else {
          this.fail(req, res, err instanceof ServiceTimeoutError || err instanceof ServiceUnreachableError
            ? err
            : new ServiceUnreachableError(address.port, describeUpstreamError(err)));
        }
        resolve('done');
      };
      // The service's time to answer counts from the end of the request: a 1 GB upload takes what it takes.
      const requestSent = () => {
        sent = true;
        if (!reader.started && !over) timer = setTimeout(() => abort(new ServiceTimeoutError(this.options.timeoutMs)), this.options.timeoutMs);
      };
      socket.on('data', onData).on('end', onEnd).on('close', onClose).on('error', onError);
      res.on('close', onClientClose);
      socket.write(request.head);
      if (request.hasBody) {
        const body = request.chunked ? req.pipe(new ChunkedEncoder()) : req;
        body.pipe(socket, { end: false });
        body.once('end', requestSent);
      } else {
        requestSent();
      }
      socket.resume();
    });
  }

  private requestHeaders(req: IncomingMessage, address: ServiceAddress, pass: ServicePass): Record<string, string | string[]> {
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value === undefined || HOP_BY_HOP.has(name) || name.startsWith('x-forwarded-') || name === 'forwarded' || name.startsWith('x-tianqi-')) continue;
      headers[name] = value;
    }
    const cookies = serviceCookies(req.headers.cookie, address);
    if (cookies) headers.cookie = cookies;
    else delete headers.cookie;
    // Any token the platform signed (valid, expired, of a disabled user) is the platform's; another bearer is the service's own.
    const bearer = credentialsOf(req, address).bearer;
    if (bearer && (pass.via === 'bearer' || this.options.isPlatformToken(bearer))) delete headers.authorization;
    headers['x-forwarded-for'] = this.clientAddress(req);
    headers['x-forwarded-proto'] = this.scheme(req);
    if (req.headers.host) headers['x-forwarded-host'] = req.headers.host;
    headers['x-tianqi-user'] = pass.actor.username;
    return headers;
  }

  /** The service's headers for the browser: its cookies held to its prefix, its redirects to itself kept here. */
  private responseHeaders(answer: { headers: Record<string, string | string[] | undefined>; framing?: UpstreamHead['framing'] }, address: ServiceAddress, req: IncomingMessage): Record<string, string | string[]> {
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(answer.headers)) {
      if (value === undefined || HOP_BY_HOP.has(name) || DROPPED_RESPONSE_HEADERS.has(name)) continue;
      headers[name] = value;
    }
    const cookies = answer.headers['set-cookie'];
    if (cookies) {
      const kept = [cookies].flat().map((c) => scopeCookie(c, address)).filter((c): c is string => c !== null);
      if (kept.length > 0) headers['set-cookie'] = kept;
      else delete headers['set-cookie'];
    }
    const location = answer.headers.location;
    if (location) headers.location = Array.isArray(location) ? location.map((l) => rewriteLocation(l, req.headers.host)) : rewriteLocation(location, req.headers.host);
    // A chunked answer that also gave a length: the coding frames it (RFC 9112 §6.3), this server frames it again.
    if (answer.framing === 'chunked') delete headers['content-length'];
    return headers;
  }

  /**
   * Services of one host (the port form) or of one service domain (the host form) are one site,
   * so the browser sends a service's cookie along with what another service's page sends it: a
   * form post, a fetch, a WebSocket (a Jupyter kernel is a shell). A change (any method but GET,
   * HEAD, OPTIONS) or a WebSocket that the cookie let in must come from the service's own origin;
   * a bearer token, which no browser attaches by itself, may come from anywhere.
   */
  private assertSameOrigin(req: IncomingMessage, pass: ServicePass, upgrade: boolean): void {
    if (pass.via !== 'cookie') return;
    if (!upgrade && SAFE_METHODS.has(req.method ?? 'GET')) return;
    const origin = req.headers.origin;
    if (origin === undefined) return;
    if (origin !== `${this.scheme(req)}://${req.headers.host ?? ''}`) {
      throw new ForbiddenError('A page of another origin may not change this service or open its WebSockets with your sign-in.', 'CROSS_ORIGIN');
    }
  }

  /** Tracks an open connection until `end` or the returned untrack; it ends by itself when its credential expires. */
  private track(pass: ServicePass, address: ServiceAddress, end: () => void): () => void {
    const expiry = setTimeout(() => connection.end(), Math.max(0, Math.min(pass.expiresAt - Date.now(), 2 ** 31 - 1))).unref();
    const untrack = () => {
      clearTimeout(expiry);
      this.open.delete(connection);
    };
    const connection: OpenConnection = {
      pass, address,
      end: () => {
        untrack();
        end();
      },
    };
    this.open.add(connection);
    return untrack;
  }

  /** How many connections are open now (WebSockets and streaming answers). */
  get openConnections(): number {
    return this.open.size;
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

/** A request as it goes to the service: its head, and whether a body follows (and in which coding). */
interface OutgoingRequest {
  readonly method: string;
  readonly head: string;
  readonly hasBody: boolean;
  readonly chunked: boolean;
}

/** A port of the range that no service holds now. */
class NoServiceHereError extends Error {}

interface OpenConnection {
  readonly pass: ServicePass;
  readonly address: ServiceAddress;
  readonly end: () => void;
}

function answerOf(err: unknown): { status: number; body: { error: { code: string; message: string } }; unexpected: boolean } {
  if (err instanceof ServiceTimeoutError) return { status: 504, body: { error: { code: 'SERVICE_TIMEOUT', message: err.message } }, unexpected: false };
  if (err instanceof ServiceUnreachableError) {
    return {
      status: 502,
      body: { error: { code: 'SERVICE_UNREACHABLE', message: `Nothing answers on port ${err.port} in the instance (${err.message}). Is the service running and listening on that port?` } },
      unexpected: false,
    };
  }
  if (err instanceof NoServiceHereError) {
    return { status: 404, body: { error: { code: 'NOT_FOUND', message: 'No service is on this port now. Open the service again from the console.' } }, unexpected: false };
  }
  if (err instanceof ServiceLinkError) {
    return { status: 401, body: { error: { code: 'LINK_EXPIRED', message: 'This link is used up or expired. Open the service again from the console.' } }, unexpected: false };
  }
  return toErrorResponse(err);
}

function describeUpstreamError(err: unknown): string {
  if (err instanceof UpstreamProtocolError) return err.message;
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

/** Every value of the proxy's cookie for this service, and a bearer token, where the request has them. */
function credentialsOf(req: IncomingMessage, address: ServiceAddress): { cookies: string[]; bearer?: string } {
  const cookies = cookieValues(req.headers.cookie, serviceCookieName(address));
  const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
  return { cookies, ...(bearer ? { bearer } : {}) };
}

function cookiePairs(header: string | undefined): { name: string; pair: string; value: string }[] {
  const pairs: { name: string; pair: string; value: string }[] = [];
  for (const part of (header ?? '').split(';')) {
    const pair = part.trim();
    const eq = pair.indexOf('=');
    if (!pair) continue;
    pairs.push(eq === -1 ? { name: '', pair, value: pair } : { name: pair.slice(0, eq).trim(), pair, value: pair.slice(eq + 1).trim() });
  }
  return pairs;
}

/** Every value a Cookie header carries under this name (a browser sends one per path and domain that matched). */
export function cookieValues(header: string | undefined, name: string): string[] {
  return cookiePairs(header).filter((c) => c.name === name).map((c) => c.value);
}

/**
 * The cookies a service is sent: never the platform's (`tianqi_…`, whoever set them); in the port
 * form, HttpOnly cookies this service set (held under `__tq<port>_`) under their own names again,
 * and none held for another service.
 */
export function serviceCookies(header: string | undefined, address: ServiceAddress): string {
  const own = address.form === 'port' ? HELD_COOKIE(address.listenPort) : null;
  const kept: string[] = [];
  for (const { name, pair } of cookiePairs(header)) {
    if (name.toLowerCase().startsWith(PLATFORM_COOKIE_PREFIX)) continue;
    if (/^__tq[0-9]+_/.test(name)) {
      if (own && name.startsWith(own)) kept.push(pair.slice(own.length));
      continue;
    }
    kept.push(pair);
  }
  return kept.join('; ');
}

/**
 * A service's Set-Cookie, held to the service: no Domain (host-only), never a platform cookie's
 * name or a held name; in the port form, where all services of a host share one cookie jar, an
 * HttpOnly cookie (no script reads it) is held under `__tq<port>_` so that no other service is
 * sent it. Null drops the cookie.
 */
export function scopeCookie(cookie: string, address: ServiceAddress): string | null {
  const [pair, ...attributes] = cookie.split(';');
  const eq = pair!.indexOf('=');
  const name = eq === -1 ? '' : pair!.slice(0, eq).trim();
  if (!name || name.toLowerCase().startsWith(PLATFORM_COOKIE_PREFIX) || /^__tq[0-9]+_/i.test(name)) return null;
  const kept = attributes.map((a) => a.trim()).filter((a) => a && a.split('=')[0]!.trim().toLowerCase() !== 'domain');
  const httpOnly = kept.some((a) => a.toLowerCase() === 'httponly');
  const renamed = address.form === 'port' && httpOnly ? `${HELD_COOKIE(address.listenPort)}${pair!.trim()}` : pair!.trim();
  return [renamed, ...kept].join('; ');
}

/**
 * A redirect the service sends to itself (its own loopback, the host it was reached on, a path)
 * stays on its origin here; one to another host is passed on as it is: the browser leaves, which
 * is the service's choice.
 */
export function rewriteLocation(location: string, requestHost: string | undefined): string {
  let url: URL;
  try {
    url = new URL(location, 'http://service.invalid');
  } catch {
    return location;
  }
  const own = url.host === 'service.invalid' || url.host === requestHost || ['localhost', '127.0.0.1', '0.0.0.0', '[::1]'].includes(url.hostname);
  if (!own) return location;
  return `${url.pathname}${url.search}${url.hash}`;
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
