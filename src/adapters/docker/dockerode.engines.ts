import { performance } from 'node:perf_hooks';
import type { ConnectionCheck, DockerConnectionSettings, DockerEngines, EngineFacts } from '../../ports/docker.port.ts';
import type { ConnectionAttempt } from './connection-error.ts';
import { classifyConnectionError } from './connection-error.ts';
import type { DockerClient, EngineAddress } from './docker-client.ts';
import { describeAddress, openDockerClient } from './docker-client.ts';
import type { DockerPool } from './docker-pool.ts';

/** The port promises an answer within 5 s, whatever the caller asks for. */
const MAX_CHECK_MS = 5_000;

/**
 * dockerode 4 passes `abortSignal` on to the HTTP request of ping and info, but @types/dockerode
 * declares both without options.
 */
interface AbortableEngine {
  ping(options: { abortSignal: AbortSignal }): Promise<unknown>;
  info(options: { abortSignal: AbortSignal }): Promise<unknown>;
}

export class DockerodeEngines implements DockerEngines {
  constructor(private readonly pool: DockerPool) {}

  async check(settings: DockerConnectionSettings, timeoutMs = MAX_CHECK_MS): Promise<ConnectionCheck> {
    const budgetMs = timeoutMs > 0 ? Math.min(timeoutMs, MAX_CHECK_MS) : MAX_CHECK_MS;
    let client: DockerClient;
    try {
      // A client of its own, not the pool's: the settings under test may not be saved yet.
      client = openDockerClient(settings, { keepAlive: false });
    } catch (error) {
      return { ok: false, kind: 'other', reason: error instanceof Error ? error.message : String(error) };
    }

    const attempt = attemptOf(settings, client.address);
    // docker-modem's own timeouts end a request by destroying it without an error, which then reads
    // as "socket hang up" (ECONNRESET); an abort signal plus our own deadline tells a timeout apart.
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => {
        controller.abort();
        resolve('timeout');
      }, budgetMs);
    });
    try {
      const outcome = await Promise.race([probe(client, attempt, controller.signal), deadline]);
      return outcome === 'timeout' ? timedOut(attempt, budgetMs) : outcome;
    } catch (error) {
      if (controller.signal.aborted) return timedOut(attempt, budgetMs);
      return { ok: false, ...classifyConnectionError(error, attempt) };
    } finally {
      clearTimeout(timer);
      client.close();
    }
  }

  forget(nodeId: string): void {
    this.pool.forget(nodeId);
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

async function probe(client: DockerClient, attempt: ConnectionAttempt, abortSignal: AbortSignal): Promise<ConnectionCheck> {
  const engine = client.docker as unknown as AbortableEngine;
  const started = performance.now();
  await engine.ping({ abortSignal });
  const latencyMs = Math.round(performance.now() - started);
  const facts = factsFrom(await engine.info({ abortSignal }));
  if (!facts) {
    return { ok: false, kind: 'protocol', reason: `${attempt.target} answers /_ping but its /info is not a Docker engine's` };
  }
  return { ok: true, facts, latencyMs };
}

function attemptOf(settings: DockerConnectionSettings, address: EngineAddress): ConnectionAttempt {
  return {
    target: describeAddress(address),
    transport: address.transport,
    tls: settings.tls,
    caCertificate: Boolean(settings.ca),
    clientCertificate: Boolean(settings.cert && settings.key),
  };
}

function timedOut(attempt: ConnectionAttempt, budgetMs: number): ConnectionCheck {
  return { ok: false, kind: 'timeout', reason: `timed out after ${budgetMs / 1000} s (no answer from ${attempt.target})` };
}

/** `GET /info` as far as the platform reads it; anything without a server version is not an engine. */
function factsFrom(info: unknown): EngineFacts | undefined {
  if (typeof info !== 'object' || info === null) return undefined;
  const fields = info as Record<string, unknown>;
  if (typeof fields.ServerVersion !== 'string' || !fields.ServerVersion) return undefined;
  const runtimes = typeof fields.Runtimes === 'object' && fields.Runtimes !== null ? Object.keys(fields.Runtimes) : [];
  return {
    serverVersion: fields.ServerVersion,
    cpus: numberOf(fields.NCPU),
    memoryBytes: numberOf(fields.MemTotal),
    operatingSystem: stringOf(fields.OperatingSystem),
    kernelVersion: stringOf(fields.KernelVersion),
    architecture: stringOf(fields.Architecture),
    storageDriver: stringOf(fields.Driver),
    dockerRootDir: stringOf(fields.DockerRootDir),
    runtimes,
    nvidiaRuntime: runtimes.includes('nvidia'),
  };
}

function numberOf(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : 0;
}

function stringOf(value: unknown): string {
  return typeof value === 'string' ? value : '';
}
