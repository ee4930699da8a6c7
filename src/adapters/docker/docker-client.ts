import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { inspect } from 'node:util';
import Docker from 'dockerode';
import type { DockerConnectionSettings } from '../../ports/docker.port.ts';

/** Where a node's engine listens, taken apart from its endpoint string. */
export type EngineAddress =
  | { readonly transport: 'unix'; readonly socketPath: string }
  | { readonly transport: 'tcp'; readonly host: string; readonly port: number };

/** Docker's own defaults when a tcp endpoint names no port. */
const DEFAULT_PORT = { plain: 2375, tls: 2376 } as const;

/**
 * `unix:///path` or `tcp://host[:port]`; anything else (http://, ssh://, a bare host, a relative
 * socket path, a path or credentials after the port) is rejected rather than guessed at.
 */
export function parseEndpoint(endpoint: string, tls: boolean): EngineAddress {
  const text = endpoint.trim();
  if (text.startsWith('unix://')) {
    if (tls) throw new Error(`TLS applies only to tcp:// endpoints, not to ${text}`);
    const socketPath = text.slice('unix://'.length);
    if (!socketPath.startsWith('/')) {
      throw new Error(`a unix endpoint needs an absolute socket path, like unix:///var/run/docker.sock (got ${text})`);
    }
    return { transport: 'unix', socketPath };
  }
  if (text.startsWith('tcp://')) {
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      throw new Error(`not a valid tcp endpoint: ${text} (expected tcp://host:port)`);
    }
    if (!url.hostname || url.username || url.password || (url.pathname !== '' && url.pathname !== '/') || url.search || url.hash) {
      throw new Error(`a tcp endpoint is just a host and a port, like tcp://10.0.0.5:2376 (got ${text})`);
    }
    const port = url.port ? Number(url.port) : tls ? DEFAULT_PORT.tls : DEFAULT_PORT.plain;
    // URL keeps the brackets of an IPv6 literal; sockets want the bare address.
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    return { transport: 'tcp', host, port };
  }
  throw new Error(`unsupported Docker endpoint ${JSON.stringify(text)}: use unix:///path/to/docker.sock or tcp://host:port`);
}

/** The address as people write it: a socket path or `host:port`. */
export function describeAddress(address: EngineAddress): string {
  if (address.transport === 'unix') return address.socketPath;
  return address.host.includes(':') ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/** A dockerode client with an agent of its own, so that closing it really ends its connections. */
export interface DockerClient {
  readonly docker: Docker;
  readonly address: EngineAddress;
  close(): void;
}

export interface DockerClientOptions {
  /** Reuse connections between requests: yes for a node's lasting client, no for a one-off check. */
  readonly keepAlive: boolean;
  /** Longest wait for the response headers of one request; none when absent. */
  readonly requestTimeoutMs?: number;
}

/**
 * docker-modem honours these but @types/dockerode leaves them out. `connectionTimeout` runs until
 * the response headers arrive (docker-modem clears it on `response`), so a quiet stream such as
 * `events` or `logs --follow` is not cut; its `timeout` option is a socket idle timeout that would
 * be, which is why it is never set here.
 */
interface ModemOptions {
  readonly agent: HttpAgent;
  readonly connectionTimeout?: number;
}

export function openDockerClient(settings: DockerConnectionSettings, options: DockerClientOptions): DockerClient {
  const address = parseEndpoint(settings.endpoint, settings.tls);
  const secure = address.transport === 'tcp' && settings.tls;
  const agent = secure ? new HttpsAgent({ keepAlive: options.keepAlive }) : new HttpAgent({ keepAlive: options.keepAlive });
  // docker-modem runs util.inspect over each request's options, agent included, even with its
  // debug output off: with a hundred shells open that walk cost seconds per request (and with
  // DEBUG=modem it would print the node's TLS key). The agent shows as a name instead.
  Object.defineProperty(agent, inspect.custom, { value: () => '[Agent]' });
  // Every field is spelled out, undefined included: docker-modem starts from DOCKER_HOST,
  // DOCKER_CERT_PATH and DOCKER_CLIENT_TIMEOUT of this process and would otherwise mix them in.
  const dockerOptions: Docker.DockerOptions & ModemOptions = {
    socketPath: address.transport === 'unix' ? address.socketPath : undefined,
    host: address.transport === 'tcp' ? address.host : undefined,
    port: address.transport === 'tcp' ? address.port : undefined,
    protocol: secure ? 'https' : 'http',
    ca: secure ? settings.ca : undefined,
    cert: secure ? settings.cert : undefined,
    key: secure ? settings.key : undefined,
    timeout: undefined,
    agent,
    connectionTimeout: options.requestTimeoutMs,
  };
  return {
    docker: new Docker(dockerOptions),
    address,
    close: () => agent.destroy(),
  };
}
