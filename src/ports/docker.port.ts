/**
 * How the platform reaches a node's Docker engine. The adapter (dockerode) keeps one client per
 * node and rebuilds it when the connection settings change.
 */
export interface DockerConnectionSettings {
  /** `unix:///var/run/docker.sock`, `tcp://host:2375` or `tcp://host:2376`. */
  readonly endpoint: string;
  /** Only for tcp endpoints: HTTPS with the CA, client certificate and key below. */
  readonly tls: boolean;
  readonly ca?: string;
  readonly cert?: string;
  /** Plaintext PEM, decrypted just before use; never logged, never kept beyond the client. */
  readonly key?: string;
}

/** What a node's engine says about itself. */
export interface EngineFacts {
  readonly serverVersion: string;
  readonly apiVersion?: string;
  readonly cpus: number;
  readonly memoryBytes: number;
  readonly operatingSystem: string;
  readonly kernelVersion: string;
  readonly architecture: string;
  readonly storageDriver: string;
  readonly dockerRootDir: string;
  /** Runtimes the engine offers (`runc`, `nvidia`…). */
  readonly runtimes: readonly string[];
  readonly nvidiaRuntime: boolean;
}

export type ConnectionFailureKind = 'certificate' | 'refused' | 'timeout' | 'not-found' | 'protocol' | 'other';

export type ConnectionCheck =
  | { readonly ok: true; readonly facts: EngineFacts; readonly latencyMs: number }
  | { readonly ok: false; readonly kind: ConnectionFailureKind; readonly reason: string };

export interface DockerEngines {
  /**
   * Pings the engine and reads `info`, within `timeoutMs` (at most 5 s) overall. Never throws:
   * a failure comes back as a readable reason (certificate rejected, connection refused, timeout).
   */
  check(settings: DockerConnectionSettings, timeoutMs?: number): Promise<ConnectionCheck>;
  /** Forgets the cached client of a node (its settings changed or it was deleted). */
  forget(nodeId: string): void;
  /** Closes every cached client. */
  close(): Promise<void>;
}
