import { randomUUID } from 'node:crypto';
import type { AccessKind } from '../../domain/instance/access.ts';
import { FILE_PATHS_KEPT, instanceDecider, instanceStream, type FileActivity } from '../../domain/instance/instance.decider.ts';
import { ConflictError, DomainError } from '../../domain/shared/errors.ts';
import type { CommandBus } from '../command-bus.ts';
import type { Actor } from '../user/accounts.ts';

/** Who opens a way into an instance, from where, and what it is. */
export interface AccessRequest {
  readonly actor: Actor;
  readonly clientAddress: string;
  readonly via: 'web' | 'ssh';
  readonly kind: AccessKind;
  /** The shell or command, `sftp`, or the forward's `host:port`. */
  readonly command: string;
}

/** Why an audit record could not be opened: the instance decides whether it can be entered. */
export type AccessRefused = 'not-running' | 'gone';

/**
 * The audit record of one way into an instance, from its open to its close: the bytes each way,
 * and for SFTP the files written and removed. Every record that was opened gets exactly one close.
 */
export class AccessRecord {
  readonly sessionId = randomUUID();
  readonly startedAt = Date.now();
  bytesIn = 0;
  bytesOut = 0;
  connections: number | undefined;
  private files: { written: string[]; writtenCount: number; removed: string[]; removedCount: number } | null = null;
  private closing: Promise<void> | null = null;

  constructor(
    private readonly bus: CommandBus,
    readonly instanceId: string,
    readonly request: AccessRequest,
  ) {}

  fileWritten(path: string): void {
    const files = this.fileActivity();
    files.writtenCount += 1;
    if (files.written.length < FILE_PATHS_KEPT && !files.written.includes(path)) files.written.push(path);
  }

  fileRemoved(path: string): void {
    const files = this.fileActivity();
    files.removedCount += 1;
    if (files.removed.length < FILE_PATHS_KEPT) files.removed.push(path);
  }

  /** Writes the close once; later calls wait for the same write. Never throws: a lost close is logged by the caller's logger. */
  close(reason: string, exitCode: number | null, onError: (err: unknown) => void): Promise<void> {
    this.closing ??= this.writeClose(reason, exitCode).catch(onError);
    return this.closing;
  }

  private fileActivity() {
    this.files ??= { written: [], writtenCount: 0, removed: [], removedCount: 0 };
    return this.files;
  }

  private async writeClose(reason: string, exitCode: number | null): Promise<void> {
    const { actor, clientAddress, via } = this.request;
    const files: FileActivity | undefined = this.files ? { ...this.files } : undefined;
    await oneAtATime(this.bus, this.instanceId, () => this.bus.execute(instanceDecider, instanceStream(this.instanceId), {
      type: 'CloseTerminalSession',
      data: {
        sessionId: this.sessionId,
        via,
        durationMs: Date.now() - this.startedAt,
        bytesIn: this.bytesIn,
        bytesOut: this.bytesOut,
        exitCode,
        reason,
        ...(files ? { files } : {}),
        ...(this.connections !== undefined ? { connections: this.connections } : {}),
      },
    }, { userId: actor.id, clientIp: clientAddress, correlationId: this.sessionId }));
  }
}

/**
 * The audited-session use case every way into an instance shares: the open is written first and
 * decided by the instance (only a running one can be entered), so nobody works in a container
 * unaudited and a stop racing with an open is refused there.
 */
export class AccessAudit {
  constructor(private readonly bus: CommandBus) {}

  async open(instanceId: string, request: AccessRequest): Promise<AccessRecord | AccessRefused> {
    const record = new AccessRecord(this.bus, instanceId, request);
    const { actor, clientAddress, via, kind, command } = request;
    try {
      await oneAtATime(this.bus, instanceId, () => this.bus.execute(instanceDecider, instanceStream(instanceId), {
        type: 'OpenTerminalSession',
        data: { sessionId: record.sessionId, via, userId: actor.id, username: actor.username, clientAddress, command, kind },
      }, { userId: actor.id, clientIp: clientAddress, correlationId: record.sessionId }));
    } catch (err) {
      if (err instanceof DomainError && err.status === 409) return 'not-running';
      if (err instanceof DomainError && err.status === 404) return 'gone';
      throw err;
    }
    return record;
  }
}

/** The audit's writes queued per instance stream, per bus (one event log). */
const queues = new WeakMap<CommandBus, Map<string, Promise<unknown>>>();
/** Attempts at one write when another replica keeps winning the race for the stream. */
const WRITE_ATTEMPTS = 20;

/**
 * One audit write at a time to an instance's stream from this process: 10 sessions and 256
 * forwards of one connection closing together would otherwise race each other for the stream's
 * revision and lose (the bus gives up after 5 conflicts). A conflict with another replica's
 * write is tried again, with a growing random pause, so every open and close lands exactly once.
 */
export function oneAtATime<T>(bus: CommandBus, instanceId: string, write: () => Promise<T>): Promise<T> {
  let byStream = queues.get(bus);
  if (!byStream) queues.set(bus, (byStream = new Map()));
  const queue = byStream;
  const next = (queue.get(instanceId) ?? Promise.resolve()).catch(() => undefined).then(() => retried(write));
  queue.set(instanceId, next);
  const forget = () => {
    if (queue.get(instanceId) === next) queue.delete(instanceId);
  };
  next.then(forget, forget);
  return next;
}

async function retried<T>(write: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await write();
    } catch (err) {
      if (!(err instanceof ConflictError && err.code === 'CONCURRENT_CHANGE') || attempt >= WRITE_ATTEMPTS) throw err;
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 10 * attempt));
    }
  }
}
