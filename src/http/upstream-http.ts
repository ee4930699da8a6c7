import type { Duplex } from 'node:stream';
import { Transform, type TransformCallback } from 'node:stream';

/**
 * The service proxy's side of HTTP/1.1 towards an instance's service: the answer's framing read
 * here, on the connection's own bytes, so that a body goes on to the browser as the slices the
 * socket read (Node's HTTP client copies every body chunk once more, and the copies keep the
 * garbage collector busy: a download ran at 0.6-0.7 of nginx's in front of the same service).
 * What it reads: a status line and headers, 1xx answers skipped, a body framed by Content-Length,
 * by chunked coding (extensions and trailers read and dropped) or by the close of the connection
 * (RFC 9112 §6). What is not HTTP/1.x is an UpstreamProtocolError, never passed on.
 */

/** The most a service's status line and headers, or its trailers, may take. */
export const MAX_HEAD_BYTES = 64 * 1024;
/** The longest chunk-size line (size and extensions) accepted. */
const MAX_CHUNK_LINE = 4096;

/** The service's bytes are not an HTTP/1.x answer (or not the one this request can have). */
export class UpstreamProtocolError extends Error {
  constructor(reason: string) {
    super(`the service did not answer in HTTP (${reason})`);
    this.name = 'UpstreamProtocolError';
  }
}

export interface UpstreamHead {
  readonly statusCode: number;
  readonly statusMessage: string;
  /**
   * Names lower-cased; a name sent once has its value, a name sent more than once the list of
   * them (each goes on as a line of its own).
   */
  readonly headers: Record<string, string | string[]>;
  /** How the body is framed: the browser's answer is framed by its own HTTP server. */
  readonly framing: 'none' | 'length' | 'chunked' | 'close';
}

export interface AnswerSink {
  /** The final answer's head (1xx ones are not given). */
  head(head: UpstreamHead): void;
  /** A part of the body: a slice of what the socket read, not a copy. */
  body(chunk: Buffer): void;
  /** The body is complete; `reusable`: the connection may carry another request. */
  end(reusable: boolean): void;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9][0-9]{2})(?: ([^\r\n]*))?$/;
const FORBIDDEN_IN_VALUE = /[\0\r\n]/;
const CRLF = Buffer.from('\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');

type State =
  | { readonly kind: 'head' }
  | { readonly kind: 'length'; remaining: number }
  | { readonly kind: 'chunk-size' }
  | { readonly kind: 'chunk-data'; remaining: number }
  | { readonly kind: 'chunk-end' }
  | { readonly kind: 'trailers' }
  | { readonly kind: 'close' }
  | { readonly kind: 'done' };

/**
 * Reads one answer from a connection's bytes (`push`, then `close` when the service closed it).
 * Synchronous and without I/O: the proxy feeds it, and the tests feed it bytes split anywhere.
 */
export class AnswerReader {
  private state: State = { kind: 'head' };
  /** Bytes of a head, chunk-size line or trailer section not complete yet. */
  private pending: Buffer | null = null;
  private reusable = true;
  private reported = false;

  constructor(private readonly method: string, private readonly sink: AnswerSink) {}

  /** Whether the final answer's head was read. */
  get started(): boolean {
    return this.state.kind !== 'head';
  }

  get done(): boolean {
    return this.state.kind === 'done';
  }

  /** Bytes from the service, in order. Throws UpstreamProtocolError. */
  push(chunk: Buffer): void {
    let data = chunk;
    while (data.length > 0 && this.state.kind !== 'done') {
      switch (this.state.kind) {
        case 'head': data = this.readHead(data); break;
        case 'length': data = this.readFixed(data, this.state); break;
        case 'chunk-size': data = this.readChunkSize(data); break;
        case 'chunk-data': data = this.readChunkData(data, this.state); break;
        case 'chunk-end': data = this.readChunkEnd(data); break;
        case 'trailers': data = this.readTrailers(data); break;
        case 'close':
          this.sink.body(data);
          data = data.subarray(data.length);
          break;
      }
    }
    // More than the answer: not a connection to send anything else on.
    if (data.length > 0) this.reusable = false;
    this.report();
  }

  /** The service closed its side: ends an answer framed by the close; anything else was cut. */
  close(): void {
    if (this.state.kind === 'done') return;
    if (this.state.kind === 'close') {
      this.state = { kind: 'done' };
      this.report();
      return;
    }
    throw new UpstreamProtocolError(this.state.kind === 'head' ? 'closed before an answer' : 'closed in the middle of the answer');
  }

  private readHead(data: Buffer): Buffer {
    const buffered = this.pending ? Buffer.concat([this.pending, data]) : data;
    const searchFrom = this.pending ? Math.max(0, this.pending.length - 3) : 0;
    const end = buffered.indexOf(HEAD_END, searchFrom);
    if (end === -1) {
      if (buffered.length > MAX_HEAD_BYTES) throw new UpstreamProtocolError('headers over 64 KB');
      this.pending = Buffer.from(buffered);
      return buffered.subarray(buffered.length);
    }
    if (end > MAX_HEAD_BYTES) throw new UpstreamProtocolError('headers over 64 KB');
    this.pending = null;
    const rest = buffered.subarray(end + HEAD_END.length);
    const lines = buffered.subarray(0, end).toString('latin1').split('\r\n');
    const status = STATUS_LINE.exec(lines[0]!);
    if (!status) throw new UpstreamProtocolError('no HTTP/1.x status line');
    const statusCode = Number(status[2]);
    const headers = parseFields(lines.slice(1));
    if (statusCode < 200) {
      // 100 Continue, 102, 103 Early Hints: not the answer (nor is a 101 this request did not ask for).
      if (statusCode === 101) throw new UpstreamProtocolError('switched protocols unasked');
      return rest;
    }
    if (status[1] === '0' || connectionCloses(headers)) this.reusable = false;
    const framing = this.framing(statusCode, headers);
    this.sink.head({ statusCode, statusMessage: status[3] ?? '', headers, framing });
    return rest;
  }

  /** RFC 9112 §6.3, for an answer. */
  private framing(statusCode: number, headers: Record<string, string | string[]>): UpstreamHead['framing'] {
    if (this.method === 'HEAD' || statusCode === 204 || statusCode === 304) {
      this.state = { kind: 'done' };
      return 'none';
    }
    const coding = headers['transfer-encoding'];
    if (coding !== undefined) {
      // Both: the coding wins, and the connection is not used again (§6.3 item 3).
      if (headers['content-length'] !== undefined) this.reusable = false;
      const codings = listOf(coding).flatMap((v) => v.split(',')).map((v) => v.trim().toLowerCase()).filter(Boolean);
      if (codings.at(-1) === 'chunked') {
        this.state = { kind: 'chunk-size' };
        return 'chunked';
      }
      this.state = { kind: 'close' };
      this.reusable = false;
      return 'close';
    }
    const length = headers['content-length'];
    if (length !== undefined) {
      const values = new Set(listOf(length).flatMap((v) => v.split(',')).map((v) => v.trim()));
      const [only] = values;
      if (values.size !== 1 || !/^[0-9]{1,15}$/.test(only!)) throw new UpstreamProtocolError('an invalid Content-Length');
      const remaining = Number(only);
      this.state = remaining === 0 ? { kind: 'done' } : { kind: 'length', remaining };
      return remaining === 0 ? 'none' : 'length';
    }
    this.state = { kind: 'close' };
    this.reusable = false;
    return 'close';
  }

  private readFixed(data: Buffer, state: { remaining: number }): Buffer {
    const take = Math.min(state.remaining, data.length);
    this.sink.body(take === data.length ? data : data.subarray(0, take));
    state.remaining -= take;
    if (state.remaining === 0) this.finish();
    return data.subarray(take);
  }

  private readChunkSize(data: Buffer): Buffer {
    const line = this.line(data, MAX_CHUNK_LINE, 'a chunk size line over 4 KB');
    if (!line) return data.subarray(data.length);
    const size = /^([0-9A-Fa-f]{1,13})[ \t]*(?:;.*)?$/.exec(line.text);
    if (!size) throw new UpstreamProtocolError('an invalid chunk size');
    const remaining = parseInt(size[1]!, 16);
    this.state = remaining === 0 ? { kind: 'trailers' } : { kind: 'chunk-data', remaining };
    return line.rest;
  }

  private readChunkData(data: Buffer, state: { remaining: number }): Buffer {
    const take = Math.min(state.remaining, data.length);
    this.sink.body(take === data.length ? data : data.subarray(0, take));
    state.remaining -= take;
    if (state.remaining === 0) this.state = { kind: 'chunk-end' };
    return data.subarray(take);
  }

  private readChunkEnd(data: Buffer): Buffer {
    const line = this.line(data, 2, 'no line end after a chunk');
    if (!line) return data.subarray(data.length);
    if (line.text !== '') throw new UpstreamProtocolError('no line end after a chunk');
    this.state = { kind: 'chunk-size' };
    return line.rest;
  }

  private readTrailers(data: Buffer): Buffer {
    // Trailer fields are read and dropped; the empty line ends the answer.
    for (;;) {
      const line = this.line(data, MAX_HEAD_BYTES, 'trailers over 64 KB');
      if (!line) return data.subarray(data.length);
      data = line.rest;
      if (line.text === '') {
        this.finish();
        return data;
      }
    }
  }

  /** A line ended by CRLF, from what was pending and `data`; null (kept pending) while incomplete. */
  private line(data: Buffer, max: number, tooLong: string): { text: string; rest: Buffer } | null {
    const buffered = this.pending ? Buffer.concat([this.pending, data]) : data;
    const end = buffered.indexOf(CRLF);
    if (end === -1 || end > max) {
      if (buffered.length > max + 1 || end > max) throw new UpstreamProtocolError(tooLong);
      this.pending = Buffer.from(buffered);
      return null;
    }
    this.pending = null;
    return { text: buffered.subarray(0, end).toString('latin1'), rest: buffered.subarray(end + 2) };
  }

  private finish(): void {
    this.state = { kind: 'done' };
  }

  private report(): void {
    if (this.state.kind !== 'done' || this.reported) return;
    this.reported = true;
    this.sink.end(this.reusable);
  }
}

function parseFields(lines: string[]): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {};
  for (const line of lines) {
    if (line.startsWith(' ') || line.startsWith('\t')) throw new UpstreamProtocolError('a folded header line');
    const colon = line.indexOf(':');
    const name = colon === -1 ? '' : line.slice(0, colon);
    if (!TOKEN.test(name)) throw new UpstreamProtocolError('an invalid header name');
    const value = line.slice(colon + 1).trim();
    if (FORBIDDEN_IN_VALUE.test(value)) throw new UpstreamProtocolError('an invalid header value');
    const key = name.toLowerCase();
    const known = headers[key];
    if (known === undefined) headers[key] = key === 'set-cookie' ? [value] : value;
    else headers[key] = [...listOf(known), value];
  }
  return headers;
}

function listOf(value: string | string[]): string[] {
  return Array.isArray(value) ? value : [value];
}

function connectionCloses(headers: Record<string, string | string[]>): boolean {
  const connection = headers.connection;
  return connection !== undefined && listOf(connection).some((v) => v.split(',').some((t) => t.trim().toLowerCase() === 'close'));
}

/** Header lines, one per value (a line break in a value dropped), each ended by CRLF. */
export function headerLines(headers: Record<string, string | string[]>): string {
  let text = '';
  for (const [name, value] of Object.entries(headers)) {
    for (const v of listOf(value)) text += `${name}: ${v.replace(/[\r\n]/g, '')}\r\n`;
  }
  return text;
}

/** A request head: the request line and header lines, ending with the empty line. */
export function requestHead(method: string, path: string, headers: Record<string, string | string[]>): string {
  return `${method} ${path} HTTP/1.1\r\n${headerLines(headers)}\r\n`;
}

/** A request body in chunked coding (its length not known in advance): the data itself is not copied. */
export class ChunkedEncoder extends Transform {
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (chunk.length > 0) {
      this.push(`${chunk.length.toString(16)}\r\n`);
      this.push(chunk);
      this.push('\r\n');
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    this.push('0\r\n\r\n');
    callback();
  }
}

/**
 * Connections to services, per service: at most `maxActive` carry requests at once (more wait
 * for one to be over, as an `http.Agent`'s `maxSockets`: a burst of requests to a service behind
 * the engine is not a burst of execs on its node); a connection goes back here after a whole answer
 * that allowed it, and is dropped when idle for `idleMs`, when the service closes it or when it
 * sends anything unasked.
 */
export class UpstreamPool<Target> {
  private readonly idle = new Map<string, Set<Duplex>>();
  private readonly timers = new Map<Duplex, { timer: NodeJS.Timeout; drop: () => void }>();
  private readonly active = new Map<string, number>();
  private readonly waiting = new Map<string, (() => void)[]>();

  constructor(
    private readonly dial: (target: Target) => Promise<Duplex>,
    private readonly keyOf: (target: Target) => string,
    private readonly options: { maxIdle?: number; idleMs?: number; maxActive?: number } = {},
  ) {}

  /** An idle connection to the service (reused: true), or a new one; `done` must follow, once. */
  async acquire(target: Target): Promise<{ socket: Duplex; reused: boolean }> {
    const key = this.keyOf(target);
    while ((this.active.get(key) ?? 0) >= (this.options.maxActive ?? 64)) {
      await new Promise<void>((resolve) => {
        const queue = this.waiting.get(key) ?? [];
        queue.push(resolve);
        this.waiting.set(key, queue);
      });
    }
    this.active.set(key, (this.active.get(key) ?? 0) + 1);
    const set = this.idle.get(key);
    if (set) {
      for (const socket of [...set].reverse()) {
        this.take(socket, set);
        if (!socket.destroyed && socket.writable && socket.readable) return { socket, reused: true };
        socket.destroy();
      }
    }
    try {
      return { socket: await this.dial(target), reused: false };
    } catch (err) {
      this.over(key);
      throw err;
    }
  }

  /** The request on `socket` is over: kept for the next one where `reusable` (its answer read whole, and it allowed that), closed otherwise. */
  done(target: Target, socket: Duplex, reusable: boolean): void {
    const key = this.keyOf(target);
    if (reusable) this.keep(key, socket);
    else socket.destroy();
    this.over(key);
  }

  /** How many connections wait for a request now. */
  get idleConnections(): number {
    let n = 0;
    for (const set of this.idle.values()) n += set.size;
    return n;
  }

  close(): void {
    for (const set of this.idle.values()) for (const socket of set) socket.destroy();
    this.idle.clear();
    for (const { timer } of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
  }

  private keep(key: string, socket: Duplex): void {
    let set = this.idle.get(key);
    if (!set) this.idle.set(key, (set = new Set()));
    if (set.size >= (this.options.maxIdle ?? 16) || socket.destroyed) {
      socket.destroy();
      return;
    }
    const idleSet = set;
    const drop = () => {
      this.take(socket, idleSet);
      socket.destroy();
    };
    socket.on('data', drop).on('end', drop).on('close', drop).on('error', drop);
    // Flowing, so that a close or unasked bytes are seen while it waits.
    socket.resume();
    this.timers.set(socket, { timer: setTimeout(drop, this.options.idleMs ?? 30_000).unref(), drop });
    set.add(socket);
  }

  private over(key: string): void {
    const left = (this.active.get(key) ?? 1) - 1;
    if (left > 0) this.active.set(key, left);
    else this.active.delete(key);
    const queue = this.waiting.get(key);
    const next = queue?.shift();
    if (queue && queue.length === 0) this.waiting.delete(key);
    next?.();
  }

  private take(socket: Duplex, set: Set<Duplex>): void {
    const held = this.timers.get(socket);
    if (held) {
      clearTimeout(held.timer);
      socket.off('data', held.drop).off('end', held.drop).off('close', held.drop).off('error', held.drop);
      this.timers.delete(socket);
      socket.pause();
    }
    set.delete(socket);
    if (set.size === 0) for (const [key, s] of this.idle) if (s === set) this.idle.delete(key);
  }
}
