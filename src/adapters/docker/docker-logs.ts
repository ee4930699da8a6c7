import type { IncomingMessage } from 'node:http';
import { StringDecoder } from 'node:string_decoder';
import type Dockerode from 'dockerode';
import { Observable, type Subscription } from 'rxjs';
import type { LogLine, LogOptions } from '../../ports/container-runtime.port.ts';
import { openStream } from './docker-events.ts';

const HEADER_BYTES = 8;
const NEWLINE = 0x0a;
const SPACE = 0x20;
/**
 * A line longer than this is handed out in pieces. A progress bar redrawn with `\r` (tqdm and
 * the like, common in GPU jobs) never ends its line, and would otherwise grow without bound.
 */
export const MAX_LINE_CHARS = 64 * 1024;

type StreamName = LogLine['stream'];

/** Stream type bytes of Docker's multiplexed format (moby's stdcopy); 0, stdin, never comes with logs. */
const STREAM_OF_TYPE: Readonly<Record<number, StreamName | 'systemerr'>> = { 1: 'stdout', 2: 'stderr', 3: 'systemerr' };

/**
 * Turns the body of `GET /containers/{id}/logs?timestamps=true` into lines. Pure: bytes in,
 * lines out, in the order Docker sent them.
 *
 * Without a TTY the body is multiplexed: frames of an 8-byte header (stream type, three zero
 * bytes, big-endian payload length) and a payload, split across chunks or packed into one as the
 * network pleases. The engine writes one frame per log message: `<RFC3339Nano> <text>`, the text
 * ending in `\n` unless the logging driver cut a long line (16 KiB) into partial messages. Each
 * part then has its own timestamp, which is taken off before the bytes join the line, so that a
 * character cut in two by the driver comes out whole; the line keeps the time of its first part.
 *
 * With a TTY the body is the messages as they are, all of them stdout. Nothing marks where a
 * partial message ends there, so the timestamp of a continuation stays in the text.
 */
export class LogDemuxer {
  private readonly lines: Readonly<Record<StreamName, LineAssembler>> = {
    stdout: new LineAssembler('stdout'),
    stderr: new LineAssembler('stderr'),
  };
  /** Multiplexed: the start of a frame that has not fully arrived. */
  private pending: Buffer = Buffer.alloc(0);
  /** TTY: the timestamp of the message being read; undefined while the timestamp itself is. */
  private stamp: string | undefined;
  private partialStamp = '';

  constructor(private readonly tty: boolean) {}

  /** Lines completed by `chunk`. Throws when the body is not in the expected format, or carries an engine error. */
  push(chunk: Buffer): LogLine[] {
    const out: LogLine[] = [];
    if (this.tty) this.pushRaw(chunk, out);
    else this.pushFrames(chunk, out);
    return out;
  }

  /** The last lines, those without a final newline, once the body has ended. */
  end(): LogLine[] {
    const out: LogLine[] = [];
    this.lines.stdout.flush(out);
    this.lines.stderr.flush(out);
    return out;
  }

  private pushFrames(chunk: Buffer, out: LogLine[]): void {
    const buffer = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    let offset = 0;
    while (buffer.length - offset >= HEADER_BYTES) {
      const type = STREAM_OF_TYPE[buffer[offset]!];
      if (type === undefined || buffer[offset + 1] !== 0 || buffer[offset + 2] !== 0 || buffer[offset + 3] !== 0) {
        throw new Error('the log stream is not in Docker\'s multiplexed format');
      }
      const end = offset + HEADER_BYTES + buffer.readUInt32BE(offset + 4);
      if (buffer.length < end) break;
      const payload = buffer.subarray(offset + HEADER_BYTES, end);
      offset = end;
      if (type === 'systemerr') throw new Error(`the engine failed while sending the logs: ${payload.toString('utf8').trim()}`);
      const space = payload.indexOf(SPACE);
      if (space === -1) this.lines[type].append(payload, '', out);
      else this.lines[type].append(payload.subarray(space + 1), payload.toString('latin1', 0, space), out);
    }
    this.pending = buffer.subarray(offset);
  }

  private pushRaw(chunk: Buffer, out: LogLine[]): void {
    let start = 0;
    while (start < chunk.length) {
      if (this.stamp === undefined) {
        const space = chunk.indexOf(SPACE, start);
        if (space === -1) {
          this.partialStamp += chunk.toString('latin1', start);
          return;
        }
        this.stamp = this.partialStamp + chunk.toString('latin1', start, space);
        this.partialStamp = '';
        start = space + 1;
      }
      const newline = chunk.indexOf(NEWLINE, start);
      const end = newline === -1 ? chunk.length : newline + 1;
      this.lines.stdout.append(chunk.subarray(start, end), this.stamp, out);
      if (newline !== -1) this.stamp = undefined;
      start = end;
    }
  }
}

/** The line one stream is in the middle of. */
class LineAssembler {
  /** Keeps a character whose bytes are split between two appends until it is whole. */
  private readonly decoder = new StringDecoder('utf8');
  private text = '';
  /** The time of the line's first part; undefined between lines. */
  private time: string | undefined;

  constructor(private readonly stream: StreamName) {}

  append(bytes: Buffer, time: string, out: LogLine[]): void {
    let start = 0;
    for (let newline = bytes.indexOf(NEWLINE); newline !== -1; newline = bytes.indexOf(NEWLINE, start)) {
      this.time ??= time;
      // A newline byte is never inside a UTF-8 sequence: whatever the decoder still holds is broken.
      this.text += this.decoder.end(bytes.subarray(start, newline));
      this.emit(out);
      start = newline + 1;
    }
    if (start === bytes.length) return;
    this.time ??= time;
    this.text += this.decoder.write(bytes.subarray(start));
    if (this.text.length >= MAX_LINE_CHARS) this.emit(out);
  }

  flush(out: LogLine[]): void {
    if (this.time === undefined) return;
    this.text += this.decoder.end();
    this.emit(out);
  }

  private emit(out: LogLine[]): void {
    // A TTY ends its lines with \r\n.
    const text = this.text.endsWith('\r') ? this.text.slice(0, -1) : this.text;
    out.push({ stream: this.stream, time: this.time ?? '', text });
    this.text = '';
    this.time = undefined;
  }
}

/**
 * The container's log lines with Docker's timestamps: the last `tail`, then, while `follow`, new
 * ones until the container stops. Completes at the end of the logs; unsubscribing ends the
 * request. Inspects the container first: with a TTY, its logs are not multiplexed. Fails with
 * EngineRejectedError (or dockerode's error, for the inspection) when the engine refuses, and
 * with the connection error as it came otherwise.
 */
export function containerLogs(docker: Dockerode, containerId: string, options: LogOptions): Observable<LogLine> {
  return new Observable<LogLine>((subscriber) => {
    const controller = new AbortController();
    const { signal } = controller;
    let stream: IncomingMessage | undefined;
    let flow: Subscription | undefined;
    docker
      .getContainer(containerId)
      .inspect({ abortSignal: signal })
      .then(async (info) => {
        if (signal.aborted) return;
        const query = { stdout: true, stderr: true, timestamps: true, tail: options.tail, follow: options.follow };
        const response = await openStream(docker, `/containers/${encodeURIComponent(containerId)}/logs`, query, signal);
        if (signal.aborted) {
          response.destroy();
          return;
        }
        stream = response;
        // The consumer's backpressure: a paused response stops reading, and the engine waits.
        flow = options.paused$?.subscribe((paused) => (paused ? response.pause() : response.resume()));
        const demuxer = new LogDemuxer(info.Config.Tty);
        response.on('data', (chunk: Buffer) => {
          let lines: LogLine[];
          try {
            lines = demuxer.push(chunk);
          } catch (error) {
            subscriber.error(error);
            response.destroy();
            return;
          }
          for (const line of lines) subscriber.next(line);
        });
        response.on('end', () => {
          for (const line of demuxer.end()) subscriber.next(line);
          subscriber.complete();
        });
        response.on('error', (error: Error) => subscriber.error(error));
      })
      .catch((error: unknown) => subscriber.error(error));
    return () => {
      controller.abort();
      flow?.unsubscribe();
      stream?.destroy();
    };
  });
}
