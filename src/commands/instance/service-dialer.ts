import { connect, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import type { ContainerRuntime, ExecSession, NodeTarget } from '../../ports/container-runtime.port.ts';
import { HelperUnavailableError, type ContainerHelper } from './container-helper.ts';

/** Nothing answers on the port in the container (refused, reset, or no helper to get there): a 502. */
export class ServiceUnreachableError extends Error {
  constructor(readonly port: number, reason: string) {
    super(reason);
    this.name = 'ServiceUnreachableError';
  }
}

/** Where a service is: the container on its node, and the port it listens on in there. */
export interface ServiceTarget {
  readonly target: NodeTarget;
  readonly containerId: string;
  readonly port: number;
}

/** How long a direct TCP connect to a container may take (same host: a lost one means a firewall). */
const DIRECT_CONNECT_MS = 3_000;
/**
 * How long a container's addresses are trusted before asked again. Whether a port refuses on the
 * bridge address is never remembered: a refused connection on this host costs microseconds, and
 * an app that refused while it started would otherwise be reached the slow way once it listens.
 */
const REMEMBER_MS = 10_000;

/**
 * How the platform reaches a port in an instance's container. On a node whose engine is this
 * host's own socket, the container's bridge address is reachable from here: a plain TCP
 * connection, as fast as the network stack. On any other node (TLS over the network) the
 * connection is made inside the container by tianqi-helper and carried over the engine's exec
 * stream: no port is published on the node, so nobody unauthenticated on its address gets in.
 * A service bound to the container's loopback only (Jupyter's default) is reached the second way
 * on any node.
 */
export class ServiceDialer {
  private readonly addresses = new Map<string, { at: number; addresses: readonly string[] }>();

  constructor(
    private readonly runtime: ContainerRuntime,
    private readonly helper: ContainerHelper,
    private readonly route: 'auto' | 'tunnel',
    private readonly clock: () => number = Date.now,
  ) {}

  /** A connection to the service, or ServiceUnreachableError saying why not. */
  async dial(service: ServiceTarget): Promise<Duplex> {
    const direct = await this.dialDirect(service);
    if (direct) return direct;
    const tunnel = await this.tunnel(service);
    if (!this.direct(service.target)) return tunnel;
    // Refused on the bridge address a moment ago, answered on the loopback now: an app that was
    // starting may listen on every address by now. The direct route is several times faster, and
    // a kept-alive connection stays on the route it was made on, so it is asked once more.
    const again = await this.dialDirect(service).catch(() => null);
    if (!again) return tunnel;
    tunnel.destroy();
    return again;
  }

  /**
   * A plain TCP connection to the port on the container's bridge address, where this host reaches
   * it (a local node, TIANQI_SERVICE_ROUTE=auto) and something listens there; null where the port
   * must be reached from inside the container (a remote node, or a service on its loopback only).
   * `destination`, where given, is the address asked for in the container: only its loopback or
   * its own address is the same place as the bridge address.
   */
  async dialDirect(service: ServiceTarget, destination?: string): Promise<Socket | null> {
    if (!this.direct(service.target)) return null;
    const address = await this.address(service);
    if (!address) return null;
    if (destination !== undefined && !isLoopback(destination) && destination !== address) return null;
    try {
      return await tcp(address, service.port);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ECONNREFUSED') throw new ServiceUnreachableError(service.port, describe(err));
      // Refused on the bridge address: perhaps it listens on the container's loopback only.
      return null;
    }
  }

  /**
   * A plain TCP connection to a port on the container's own address where this host reaches it
   * (a local node, route auto), for a listener of the platform's own in there (the helper's SFTP
   * server); null where it cannot be made, and the caller goes through the engine instead.
   */
  async dialContainer(target: NodeTarget, containerId: string, port: number): Promise<Socket | null> {
    if (!this.direct(target)) return null;
    const address = await this.address({ target, containerId, port });
    if (!address) return null;
    return tcp(address, port).catch(() => null);
  }

  /** Whether something listens on the port now (a connection made and closed at once). */
  async listening(service: ServiceTarget): Promise<boolean> {
    try {
      (await this.dial(service)).destroy();
      return true;
    } catch (err) {
      if (err instanceof ServiceUnreachableError) return false;
      throw err;
    }
  }

  /** Whether this host reaches the node's containers by their own addresses (a local node, route auto). */
  reachesDirectly(target: NodeTarget): boolean {
    return this.direct(target);
  }

  private direct(target: NodeTarget): boolean {
    return this.route === 'auto' && target.settings.endpoint.startsWith('unix://');
  }

  private recent(at: number | undefined): boolean {
    return at !== undefined && this.clock() - at < REMEMBER_MS;
  }

  private async address(service: ServiceTarget): Promise<string | null> {
    const known = this.addresses.get(service.containerId);
    if (known && this.recent(known.at)) return known.addresses[0] ?? null;
    const state = await this.runtime.inspect(service.target, service.containerId);
    const addresses = state?.addresses ?? [];
    this.addresses.set(service.containerId, { at: this.clock(), addresses });
    if (this.addresses.size > 4_096) this.addresses.delete(this.addresses.keys().next().value!);
    return addresses[0] ?? null;
  }

  private async tunnel(service: ServiceTarget): Promise<Duplex> {
    let path: string;
    try {
      path = await this.helper.ensure(service.target, service.containerId);
    } catch (err) {
      if (err instanceof HelperUnavailableError) throw new ServiceUnreachableError(service.port, err.message);
      throw err;
    }
    const connected = await this.helper.connect(service.target, service.containerId, path, '127.0.0.1', service.port);
    if (!connected.ok) throw new ServiceUnreachableError(service.port, connected.reason ?? 'no answer from inside the container');
    return new ExecSocket(connected.exec);
  }
}

/** An address that means the container's own loopback, as a client names it. */
function isLoopback(address: string): boolean {
  return address === 'localhost' || address === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(address);
}

function tcp(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, noDelay: true });
    const timer = setTimeout(() => socket.destroy(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' })), DIRECT_CONNECT_MS);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

function describe(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ETIMEDOUT') return 'the container did not answer the connection (a firewall between the platform and the node?)';
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return 'the container\'s address cannot be reached from the platform';
  return err instanceof Error ? err.message : String(err);
}

/**
 * An exec stream as the socket an HTTP client expects: the same bytes, and the socket calls an
 * agent makes (keep-alive, no-delay, timeouts, ref) where a stream has nothing to set.
 */
class ExecSocket extends Duplex {
  private timer: NodeJS.Timeout | undefined;
  private timeoutMs = 0;

  constructor(private readonly exec: ExecSession) {
    super({ allowHalfOpen: false });
    const stream = exec.stream;
    exec.stderr?.resume();
    stream.on('data', (chunk: Buffer) => {
      this.touch();
      if (!this.push(chunk)) stream.pause();
    });
    stream.on('end', () => this.push(null));
    stream.on('close', () => this.destroy());
    stream.on('error', (err) => this.destroy(err));
  }

  override _read(): void {
    this.exec.stream.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.touch();
    this.exec.stream.write(chunk, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.exec.stream.end();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    clearTimeout(this.timer);
    this.exec.close();
    callback(error);
  }

  setTimeout(ms: number, onTimeout?: () => void): this {
    if (onTimeout) this.once('timeout', onTimeout);
    this.timeoutMs = ms;
    this.touch();
    return this;
  }

  private touch(): void {
    clearTimeout(this.timer);
    if (this.timeoutMs > 0) this.timer = setTimeout(() => this.emit('timeout'), this.timeoutMs).unref();
  }

  setKeepAlive(): this {
    return this;
  }

  setNoDelay(): this {
    return this;
  }

  ref(): this {
    return this;
  }

  unref(): this {
    return this;
  }
}
