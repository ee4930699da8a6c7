import { randomUUID } from 'node:crypto';
import { Duplex, Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import type Docker from 'dockerode';
import type { ExecOptions, ExecSession } from '../../ports/container-runtime.port.ts';

const HEADER_BYTES = 8;

/** Stream type bytes of Docker's multiplexed format (moby's stdcopy); 0, stdin, never comes back. */
const STREAM_OF_TYPE: Readonly<Record<number, 'stdout' | 'stderr' | 'systemerr'>> = { 1: 'stdout', 2: 'stderr', 3: 'systemerr' };

/**
 * Set in every exec's environment, with a value of its own, so that `close` can tell the exec's
 * process apart from the container's others and from other sessions' shells.
 */
export const EXEC_MARK_VARIABLE = 'TIANQI_EXEC';

/**
 * The engine has no call to end an exec, and closing its connection does not hang up the TTY: an
 * idle shell would stay in the container for good (moby#9098). This finds the exec's own process
 * (parent 0: started by the engine, from outside the container's PID namespace; the mark in its
 * environment; argument 1 is `NAME=value`) and sends it the hang-up a closed terminal would. Its
 * foreground job then gets one from the kernel, its background jobs from the shell; a tmux server
 * or a `nohup` job lives on, as after an SSH disconnect. One `grep` reads every candidate's
 * environment: a hang-up costs two processes in the container however many sessions it holds.
 */
export const HANG_UP_SCRIPT = [
  'mark=$1',
  'candidates=',
  'for dir in /proc/[0-9]*; do',
  '  read -r stat 2>/dev/null < "$dir/stat" || continue',
  // Fields after `pid (comm) `, which may itself hold spaces and parentheses: state, ppid, …
  '  set -- ${stat##*) }',
  '  [ "$2" = 0 ] && candidates="$candidates $dir/environ"',
  'done',
  '[ -n "$candidates" ] || exit 0',
  // Not -F: busybox's fixed-string search misses text between the NULs of an environ file. The
  // mark (NAME=uuid) holds no regular-expression characters.
  'for file in $(grep -l -e "$mark" $candidates 2>/dev/null); do',
  '  pid=${file#/proc/}',
  '  kill -HUP "${pid%/environ}"',
  'done',
  'true',
].join('\n');

/** How long `exited` asks the engine for an exit code once the stream is over: 100 × 50 ms. */
const EXIT_POLLS = 100;
const EXIT_POLL_MS = 50;

export interface ExecFrame {
  readonly stream: 'stdout' | 'stderr';
  readonly payload: Buffer;
}

/**
 * Splits the body of a hijacked exec without a TTY into stdout and stderr: frames of an 8-byte
 * header (stream type, three zero bytes, big-endian payload length) and a payload, split across
 * chunks or packed into one as the network pleases. A payload goes on as the parts that arrive,
 * slices of the chunks read (a frame is up to 32 KB and the socket reads less at a time: waiting
 * for whole frames copied every byte of a service proxied through the engine once or twice).
 * Pure: bytes in, parts out, in order.
 */
export class ExecFrameReader {
  /** The part of a header read so far. */
  private header: Buffer | null = null;
  private current: 'stdout' | 'stderr' | 'systemerr' | null = null;
  private remaining = 0;
  /** An engine error's text, gathered whole before it is thrown. */
  private failure: Buffer[] = [];

  /** Parts of frames that `chunk` carries. Throws when the body is not multiplexed, or carries an engine error. */
  push(chunk: Buffer): ExecFrame[] {
    const frames: ExecFrame[] = [];
    let data = chunk;
    while (data.length > 0) {
      if (this.current === null) {
        const buffered = this.header ? Buffer.concat([this.header, data]) : data;
        if (buffered.length < HEADER_BYTES) {
          this.header = Buffer.from(buffered);
          break;
        }
        this.header = null;
        const type = STREAM_OF_TYPE[buffered[0]!];
        if (type === undefined || buffered[1] !== 0 || buffered[2] !== 0 || buffered[3] !== 0) {
          throw new Error('the exec stream is not in Docker\'s multiplexed format');
        }
        this.current = type;
        this.remaining = buffered.readUInt32BE(4);
        data = buffered.subarray(HEADER_BYTES);
      } else {
        const take = Math.min(this.remaining, data.length);
        const part = take === data.length ? data : data.subarray(0, take);
        data = data.subarray(take);
        this.remaining -= take;
        if (this.current === 'systemerr') this.failure.push(part);
        // An empty part carries nothing, and an empty push would read as the end of the stream.
        else if (part.length > 0) frames.push({ stream: this.current, payload: part });
      }
      if (this.current !== null && this.remaining === 0) {
        if (this.current === 'systemerr') throw new Error(`the engine failed during the exec: ${Buffer.concat(this.failure).toString('utf8').trim()}`);
        this.current = null;
      }
    }
    return frames;
  }
}

/**
 * Without a TTY: the process's stdout as the readable side, its stdin as the writable side, and
 * its stderr beside them. Reading stops at the engine's connection when either of the two
 * readables is full and goes on when either asks for more (at most a chunk beyond the other's
 * limit), so both must be read, as with a child process's pipes.
 */
class DemultiplexedStream extends Duplex {
  readonly stderr: Readable;
  private readonly frames = new ExecFrameReader();

  constructor(private readonly raw: Duplex) {
    // Open for writing after stdout ended: a process may close stdout and still read stdin.
    super({ allowHalfOpen: true });
    this.stderr = new Readable({ read: () => this.raw.resume() });
    raw.on('data', (chunk: Buffer) => this.split(chunk));
    raw.on('end', () => {
      this.push(null);
      this.stderr.push(null);
    });
    raw.on('error', (error) => this.destroy(error));
    // Cut off without an end (destroyed, reset): no clean end to hand on.
    raw.on('close', () => {
      if (!raw.readableEnded) this.destroy();
    });
  }

  override _read(): void {
    this.raw.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.raw.write(chunk, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    // A half-close: the process reads the end of its stdin, and its output still comes back.
    this.raw.end();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.raw.destroy();
    this.stderr.destroy();
    callback(error);
  }

  private split(chunk: Buffer): void {
    let frames: ExecFrame[];
    try {
      frames = this.frames.push(chunk);
    } catch (error) {
      this.destroy(error as Error);
      return;
    }
    for (const { stream, payload } of frames) {
      const readable = stream === 'stdout' ? this : this.stderr;
      if (!readable.push(payload)) this.raw.pause();
    }
  }
}

/** What `exec.start` gets: docker-modem's own options and the engine's, ConsoleSize included. */
interface HijackedStartOptions extends Docker.ExecStartOptions {
  readonly ConsoleSize?: [number, number];
}

/**
 * Starts `options.cmd` in the container and attaches to it over a hijacked connection. Errors
 * come as dockerode throws them; the caller maps them (and `mapError` maps those of the session).
 */
export async function openExec(
  docker: Docker,
  containerId: string,
  options: ExecOptions,
  mapError: (error: unknown) => unknown,
): Promise<ExecSession> {
  const container = docker.getContainer(containerId);
  const mark = `${EXEC_MARK_VARIABLE}=${randomUUID()}`;
  const size = options.tty && options.cols !== undefined && options.rows !== undefined
    ? { cols: options.cols, rows: options.rows }
    : null;
  // ConsoleSize is [rows, cols]; engines before API 1.42 (Docker 23) ignore it.
  const consoleSize: [number, number] | undefined = size ? [size.rows, size.cols] : undefined;
  const exec = await container.exec({
    Cmd: [...options.cmd],
    Tty: options.tty,
    AttachStdin: true,
    AttachStdout: true,
    AttachStderr: true,
    Env: [...(options.env ?? []), mark],
    ...(options.workingDir !== undefined ? { WorkingDir: options.workingDir } : {}),
    ...(consoleSize ? { ConsoleSize: consoleSize } : {}),
  });
  const start: HijackedStartOptions = { hijack: true, stdin: true, Detach: false, Tty: options.tty, ...(consoleSize ? { ConsoleSize: consoleSize } : {}) };
  const raw = (await exec.start(start)) as unknown as Duplex;
  // A dropped connection (the engine restarted, the container was removed) ends the session with
  // 'close'; its error must not take the process down where the caller does not listen for one.
  raw.on('error', () => undefined);
  const over = new Promise<void>((resolve) => raw.once('close', resolve));
  let ended = false;
  raw.once('end', () => {
    ended = true;
  });
  try {
    // On engines that ignore ConsoleSize the TTY starts at 0×0. The engine waits for the process
    // to have started before it resizes, and nothing the client types is written before this.
    if (size) await exec.resize({ h: size.rows, w: size.cols });
  } catch (error) {
    // A quick command (`ssh -t host 'ls'`) may be over before the resize: its output is in the
    // stream already, and its exit status with the engine. Anything else ends the session.
    const finished = await exec.inspect().then((info) => !info.Running, () => false);
    if (!finished) {
      raw.destroy();
      throw error;
    }
  }

  const stream = options.tty ? raw : new DemultiplexedStream(raw);
  let exitCode: Promise<number | null> | undefined;
  return {
    stream,
    ...(stream instanceof DemultiplexedStream ? { stderr: stream.stderr } : {}),
    async resize(cols, rows) {
      try {
        await exec.resize({ h: rows, w: cols });
      } catch (error) {
        throw mapError(error);
      }
    },
    exited() {
      exitCode ??= over.then(() => exitCodeOf(exec));
      return exitCode;
    },
    close() {
      stream.destroy();
      // A process that ended closed the connection itself: nothing left to hang up.
      if (!ended) void hangUp(container, mark);
    },
  };
}

/** How long `test -x` (the image's own program) may take before the answer is no. */
export const PROBE_TIMEOUT_MS = 5_000;

/** Whether `path` is an executable file in the container, by `test -x` there, within PROBE_TIMEOUT_MS. */
export async function isExecutable(docker: Docker, containerId: string, path: string): Promise<boolean> {
  const probe = await openExec(docker, containerId, { cmd: ['test', '-x', path], tty: false }, (error) => error);
  // Both outputs must flow for the stream to end; an image without `test` says so on stdout.
  probe.stream.resume();
  probe.stderr?.resume();
  probe.stream.end();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => resolve('late'), PROBE_TIMEOUT_MS);
  });
  const code = await Promise.race([probe.exited(), late]);
  clearTimeout(timer);
  if (code === 'late') {
    // A `test` that hangs (the tenant's image may ship anything under that name): no, and hang it up.
    probe.close();
    return false;
  }
  return code === 0;
}

/**
 * The engine marks an exec as ended a moment after its output is over; a process that outlives
 * its connection (a shell nobody hung up) has no exit code to wait for, hence null after a while.
 */
async function exitCodeOf(exec: Docker.Exec): Promise<number | null> {
  for (let poll = 0; poll < EXIT_POLLS; poll += 1) {
    try {
      const info = await exec.inspect();
      if (!info.Running) return info.ExitCode;
    } catch {
      // The container went away with the exec: there is no code to be had.
      return null;
    }
    await delay(EXIT_POLL_MS);
  }
  return null;
}

/**
 * Best effort: an image without `grep`, or a container that stopped meanwhile, keeps what
 * `docker exec` would keep, and the session is over for the caller either way.
 */
async function hangUp(container: Docker.Container, mark: string): Promise<void> {
  try {
    const exec = await container.exec({ Cmd: ['/bin/sh', '-c', HANG_UP_SCRIPT, 'sh', mark] });
    const response = (await exec.start({ Detach: true })) as unknown as Readable;
    response.resume();
  } catch {
    // See above: nothing more can be done from outside the container.
  }
}
