import { randomUUID } from 'node:crypto';
import type { AccessKind } from '../../domain/instance/access.ts';
import { FILE_PATHS_KEPT, instanceDecider, instanceStream, type FileActivity } from '../../domain/instance/instance.decider.ts';
import { DomainError } from '../../domain/shared/errors.ts';
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
    await this.bus.execute(instanceDecider, instanceStream(this.instanceId), {
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
    }, { userId: actor.id, clientIp: clientAddress, correlationId: this.sessionId });
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
      await this.bus.execute(instanceDecider, instanceStream(instanceId), {
        type: 'OpenTerminalSession',
        data: { sessionId: record.sessionId, via, userId: actor.id, username: actor.username, clientAddress, command, kind },
      }, { userId: actor.id, clientIp: clientAddress, correlationId: record.sessionId });
    } catch (err) {
      if (err instanceof DomainError && err.status === 409) return 'not-running';
      if (err instanceof DomainError && err.status === 404) return 'gone';
      throw err;
    }
    return record;
  }
}
