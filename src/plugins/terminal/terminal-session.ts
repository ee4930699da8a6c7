import { randomUUID } from 'node:crypto';
import type { Socket } from 'socket.io';
import type { AccessAudit, AccessRecord } from '../../commands/instance/access-audit.ts';
import type { ExecSession, NodeTarget } from '../../ports/container-runtime.port.ts';
import type { InstanceView } from '../../projections/instances.projection.ts';
import type { PluginContext } from '../plugin-host.ts';
import { emitError, recheck } from '../live/socket-auth.ts';
import { ShellOutput } from './shell-output.ts';

export const BASH = '/bin/bash';
export const SH = '/bin/sh';
const SHELLS: ReadonlySet<string> = new Set([BASH, SH]);

/** Columns and rows a client may ask for: generous for any screen, small enough to be a size. */
const MAX_CELLS = 1_000;

/**
 * Input the shell has not read yet, kept here before the writes fail: a paste is far below it,
 * and a client that keeps sending to a shell that does not read loses what is over it.
 */
const MAX_INPUT_BACKLOG = 1024 * 1024;

export interface TerminalSize {
  readonly cols: number;
  readonly rows: number;
}

export interface OpenRequest extends TerminalSize {
  readonly instanceId: string;
  /** The shell the client asked for; bash falls back to sh where the image has no bash. */
  readonly shell: string | undefined;
  /**
   * The client acknowledges each `data` (xterm.js: `(text, ack) => term.write(text, ack)`), so
   * output waits for the browser's drawing. Without it, output waits for the socket to drain.
   */
  readonly ack: boolean;
}

/** Why a session ends: `reason` goes into the audit record, the rest to the client. */
export interface Ending {
  readonly reason: string;
  /** The shell ended by itself: the client gets `exit {code}`. */
  readonly exitCode?: number | null;
  /** The client gets `error {code, message}`. */
  readonly error?: { readonly code: string; readonly message: string };
}

const NO_SUCH_INSTANCE: Ending = { reason: 'no such instance', error: { code: 'NOT_FOUND', message: 'Instance not found.' } };

function execFailed(err: unknown): Ending {
  const message = err instanceof Error ? err.message : String(err);
  return { reason: 'the shell did not start', error: { code: 'EXEC_FAILED', message: `The shell could not be started: ${message}` } };
}

/** The `open` payload, or what is wrong with it. Pure. */
export function parseOpen(payload: unknown): OpenRequest | string {
  const { instanceId, shell, ack } = (payload ?? {}) as { instanceId?: unknown; shell?: unknown; ack?: unknown };
  if (typeof instanceId !== 'string' || instanceId.length === 0) return 'instanceId is required';
  const size = parseSize(payload);
  if (!size) return `cols and rows must be whole numbers from 1 to ${MAX_CELLS}`;
  if (shell !== undefined && (typeof shell !== 'string' || !SHELLS.has(shell))) return `shell must be ${BASH} or ${SH}`;
  if (ack !== undefined && typeof ack !== 'boolean') return 'ack must be true or false';
  return { instanceId, ...size, shell, ack: ack === true };
}

/** `{cols, rows}` when both are whole numbers from 1 to 1000, else null. Pure. */
export function parseSize(payload: unknown): TerminalSize | null {
  const { cols, rows } = (payload ?? {}) as { cols?: unknown; rows?: unknown };
  const valid = (n: unknown): n is number => Number.isInteger(n) && (n as number) >= 1 && (n as number) <= MAX_CELLS;
  return valid(cols) && valid(rows) ? { cols, rows } : null;
}

/**
 * One web terminal: a shell in the instance's container behind one socket.io socket. Every shell
 * that started gets exactly one audit open and one audit close, however it ends.
 */
export class TerminalSession {
  readonly id = randomUUID();
  private exec: ExecSession | null = null;
  private output: ShellOutput | null = null;
  private size: TerminalSize;
  /** Input that came while the shell was starting. */
  private queued: string[] = [];
  private queuedBytes = 0;
  /** Set once the audit open is recorded: it counts the bytes and writes the close. */
  private record: AccessRecord | null = null;
  /** The instance's owner, once looked up: an admin made a user keeps only their own instances' terminals. */
  ownerId: string | null = null;
  private started: Promise<void> = Promise.resolve();
  private closing: Promise<void> | null = null;

  constructor(
    private readonly ctx: PluginContext,
    private readonly audit: AccessAudit,
    private readonly socket: Socket,
    private readonly request: OpenRequest,
  ) {
    this.size = { cols: request.cols, rows: request.rows };
  }

  /** Starts the shell; a refusal or a failure ends the session with an error for the client. */
  start(): void {
    this.started = this.run().catch((err: unknown) => {
      this.ctx.logger.error({ err, sessionId: this.id }, 'web terminal failed to start');
      void this.end({ reason: 'the shell did not start', error: { code: 'INTERNAL', message: 'The terminal could not be opened.' } });
    });
  }

  input(text: string): void {
    if (this.closing) return;
    const bytes = Buffer.byteLength(text, 'utf8');
    if (!this.exec) {
      if (this.queuedBytes + bytes > MAX_INPUT_BACKLOG) {
        this.dropped();
      } else {
        this.queued.push(text);
        this.queuedBytes += bytes;
      }
    } else if (this.exec.stream.writableLength + bytes > MAX_INPUT_BACKLOG) {
      this.dropped();
    } else {
      if (this.record) this.record.bytesIn += bytes;
      this.exec.stream.write(text, 'utf8');
    }
  }

  resize(size: TerminalSize): void {
    this.size = size;
    this.exec?.resize(size.cols, size.rows).catch((err: unknown) => {
      this.ctx.logger.debug({ err, sessionId: this.id }, 'web terminal resize failed');
    });
  }

  /** Ends the session (once; later calls get the same promise), resolving when it is on record. */
  end(ending: Ending): Promise<void> {
    // Set before any of it runs: closing disconnects the socket, whose handler ends the session again.
    this.closing ??= Promise.resolve().then(() => this.close(ending));
    return this.closing;
  }

  private async run(): Promise<void> {
    const { ctx, request } = this;
    // Checked again at the open: a socket that outlived its user's disable (or token) opens nothing.
    const actor = await recheck(this.socket, ctx.authenticate);
    if (!actor) return void this.end({ reason: 'the sign-in is no longer valid' });
    let instance: InstanceView;
    try {
      instance = await ctx.instances.visible(actor, request.instanceId);
    } catch {
      return void this.end(NO_SUCH_INSTANCE);
    }
    this.ownerId = instance.ownerId;
    const containerId = instance.containerId;
    if (instance.status !== 'running' || !containerId) {
      return void this.end({ reason: 'the instance is not running', error: { code: 'NOT_RUNNING', message: `The instance is ${instance.status}; start it first.` } });
    }
    let target: NodeTarget;
    let shell: string;
    try {
      target = await ctx.nodes.target(instance.nodeId);
      shell = await this.shellFor(target, containerId);
    } catch (err) {
      return void this.end(execFailed(err));
    }
    if (this.closing) return;

    // No record, no shell: the open is written first, and the instance decides whether it can be entered.
    const record = await this.audit.open(request.instanceId, { actor, clientAddress: this.address, via: 'web', kind: 'shell', command: shell });
    if (record === 'not-running') return void this.end({ reason: 'the instance is not running', error: { code: 'NOT_RUNNING', message: 'Only a running instance can be entered.' } });
    if (record === 'gone') return void this.end(NO_SUCH_INSTANCE);
    this.record = record;
    // Ended while the record was on its way: `close` waits for this and records the end.
    if (this.closing) return;

    let exec: ExecSession;
    const size = this.size;
    try {
      exec = await ctx.runtime.exec(target, containerId, { cmd: [shell], tty: true, env: ['TERM=xterm-256color'], ...size });
    } catch (err) {
      return void this.end(execFailed(err));
    }
    if (this.closing) return exec.close();
    this.attach(exec, size);
  }

  /** bash where the image has it, unless the client asked for sh. */
  private async shellFor(target: NodeTarget, containerId: string): Promise<string> {
    if (this.request.shell === SH) return SH;
    return (await this.ctx.runtime.hasExecutable(target, containerId, BASH)) ? BASH : SH;
  }

  /** Pipes the shell both ways; `size` is the one it started with. */
  private attach(exec: ExecSession, size: TerminalSize): void {
    const { socket } = this;
    this.exec = exec;
    // Clients that do not acknowledge (API.md's plain `data`) are paced by the socket's own
    // write buffer: what is sent counts as acknowledged once engine.io has flushed it.
    let flushed: (() => void)[] = [];
    const onDrain = () => {
      const acknowledgements = flushed;
      flushed = [];
      for (const acknowledge of acknowledgements) acknowledge();
    };
    const output = new ShellOutput(exec.stream, (text, acknowledge) => {
      if (this.request.ack) socket.emit('data', text, acknowledge);
      else {
        flushed.push(acknowledge);
        socket.emit('data', text);
      }
    });
    this.output = output;
    if (!this.request.ack) socket.conn.on('drain', onDrain);
    exec.stream.once('close', () => socket.conn.off('drain', onDrain));
    exec.stream.on('data', (chunk: Buffer) => {
      if (this.record) this.record.bytesOut += chunk.length;
      output.write(chunk);
    });
    exec.stream.once('end', () => {
      void exec.exited().then((code) => this.end({
        reason: code === null ? 'the shell ended' : `the shell exited with code ${code}`,
        exitCode: code,
      }));
    });
    exec.stream.once('close', () => {
      // Cut off without an end: the engine or the connection to it went away.
      if (exec.stream.readableEnded) return;
      void this.end({ reason: 'the connection to the container was lost', error: { code: 'EXEC_FAILED', message: 'The connection to the container was lost.' } });
    });
    exec.stream.on('error', (err: Error) => this.ctx.logger.debug({ err, sessionId: this.id }, 'web terminal stream error'));

    // Resized while it was starting.
    if (this.size !== size) this.resize(this.size);
    const queued = this.queued;
    this.queued = [];
    this.queuedBytes = 0;
    for (const text of queued) this.input(text);
  }

  private async close(ending: Ending): Promise<void> {
    const { socket } = this;
    this.exec?.close();
    this.output?.end();
    if (ending.exitCode !== undefined) socket.emit('exit', { code: ending.exitCode });
    else if (ending.error) emitError(socket, ending.error.code, ending.error.message);
    // Not the whole connection: the browser may share it with /live and /logs.
    socket.disconnect();
    await this.started;
    await this.record?.close(ending.reason, ending.exitCode ?? null, (err) =>
      this.ctx.logger.error({ err, sessionId: this.record?.sessionId }, 'could not record the end of a web terminal session'));
  }

  private dropped(): void {
    emitError(this.socket, 'INPUT_DROPPED', 'The shell is not reading its input; what was sent last was dropped.');
  }

  private get address(): string {
    return this.socket.handshake.address;
  }
}
