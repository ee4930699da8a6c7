import { createHash } from 'node:crypto';
import type Docker from 'dockerode';
import type { DockerConnectionSettings } from '../../ports/docker.port.ts';
import type { DockerClient } from './docker-client.ts';
import { openDockerClient } from './docker-client.ts';

export interface DockerPoolOptions {
  /**
   * Longest wait for the response headers of one request. Generous by default: `stop` waits out
   * the container's grace period and `commit` copies a whole layer before the engine answers.
   */
  readonly requestTimeoutMs?: number;
}

const DEFAULT_REQUEST_TIMEOUT_MS = 120_000;

interface Entry {
  /** SHA-256 of the settings: tells a change apart without keeping the key outside the client. */
  readonly fingerprint: string;
  readonly client: DockerClient;
}

/** One dockerode client per node, kept while the node's connection settings stay the same. */
export class DockerPool {
  private readonly entries = new Map<string, Entry>();
  private readonly requestTimeoutMs: number;

  constructor(options: DockerPoolOptions = {}) {
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  }

  /** The node's client; a new one when its settings changed since the last call. Throws on a bad endpoint. */
  client(nodeId: string, settings: DockerConnectionSettings): Docker {
    const fingerprint = fingerprintOf(settings);
    const current = this.entries.get(nodeId);
    if (current?.fingerprint === fingerprint) return current.client.docker;
    const client = openDockerClient(settings, { keepAlive: true, requestTimeoutMs: this.requestTimeoutMs });
    // The old connections lead to an engine the node no longer uses, or with credentials it no longer has.
    current?.client.close();
    this.entries.set(nodeId, { fingerprint, client });
    return client.docker;
  }

  /** Drops the node's client and ends its connections, requests in flight included. */
  forget(nodeId: string): void {
    this.entries.get(nodeId)?.client.close();
    this.entries.delete(nodeId);
  }

  async close(): Promise<void> {
    for (const { client } of this.entries.values()) client.close();
    this.entries.clear();
  }
}

function fingerprintOf(settings: DockerConnectionSettings): string {
  const parts = [settings.endpoint, settings.tls, settings.ca ?? null, settings.cert ?? null, settings.key ?? null];
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}
