import { Duplex } from 'node:stream';
import type Docker from 'dockerode';
import { describe, expect, it, vi } from 'vitest';
import { EXEC_MARK_VARIABLE, ExecFrameReader, HANG_UP_SCRIPT, openExec } from './docker-exec.ts';

function frame(type: number, payload: string | Buffer): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const header = Buffer.alloc(8);
  header[0] = type;
  header.writeUInt32BE(body.length, 4);
  return Buffer.concat([header, body]);
}

const body = Buffer.concat([frame(1, 'out 显存\n'), frame(2, 'err\n'), frame(1, ''), frame(1, 'more')]);

function read(chunks: Buffer[]): { stdout: string; stderr: string } {
  const reader = new ExecFrameReader();
  const out = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
  for (const chunk of chunks) for (const { stream, payload } of reader.push(chunk)) out[stream].push(payload);
  return { stdout: Buffer.concat(out.stdout).toString('utf8'), stderr: Buffer.concat(out.stderr).toString('utf8') };
}

describe('ExecFrameReader', () => {
  it('splits stdout from stderr, wherever the body is cut in two', () => {
    for (let cut = 0; cut <= body.length; cut += 1) {
      expect(read([body.subarray(0, cut), body.subarray(cut)])).toEqual({ stdout: 'out 显存\nmore', stderr: 'err\n' });
    }
  });

  it('reads a body that arrives a byte at a time', () => {
    expect(read([...body].map((byte) => Buffer.from([byte])))).toEqual({ stdout: 'out 显存\nmore', stderr: 'err\n' });
  });

  it('passes a frame on as the parts that arrive, slices of what was read, not copies', () => {
    const big = frame(1, Buffer.alloc(32 * 1024, 7));
    const first = Buffer.from(big.subarray(0, 10_000));
    const second = Buffer.from(big.subarray(10_000));
    const reader = new ExecFrameReader();
    const parts = [...reader.push(first), ...reader.push(second)];
    expect(parts.map((p) => p.payload.length)).toEqual([10_000 - 8, 32 * 1024 - 10_000 + 8]);
    expect(parts[0]!.payload.buffer).toBe(first.buffer);
    expect(parts[1]!.payload.buffer).toBe(second.buffer);
  });

  it('refuses a body that is not multiplexed, and passes on an engine error', () => {
    expect(() => new ExecFrameReader().push(Buffer.from('plain text, not frames'))).toThrow(/multiplexed/);
    expect(() => new ExecFrameReader().push(frame(3, 'broken pipe\n'))).toThrow(/broken pipe/);
    // an error's text cut in two is given whole
    const error = frame(3, 'no such container\n');
    const reader = new ExecFrameReader();
    expect(reader.push(error.subarray(0, 12))).toEqual([]);
    expect(() => reader.push(error.subarray(12))).toThrow(/the engine failed during the exec: no such container$/);
  });
});

/** The engine's side of a hijacked connection, as far as a test drives it. */
class FakeConnection extends Duplex {
  readonly written: Buffer[] = [];
  constructor() {
    super({ allowHalfOpen: false });
  }
  override _read(): void {}
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.written.push(chunk);
    callback();
  }
}

interface FakeEngine {
  docker: Docker;
  connection: FakeConnection;
  created: Docker.ExecCreateOptions[];
  started: unknown[];
  resized: unknown[];
  exitCode: number | null;
}

function fakeEngine(): FakeEngine {
  const engine: FakeEngine = { docker: undefined as never, connection: new FakeConnection(), created: [], started: [], resized: [], exitCode: 7 };
  const exec = {
    start: async (options: unknown) => {
      engine.started.push(options);
      return engine.connection;
    },
    resize: async (size: unknown) => {
      engine.resized.push(size);
    },
    inspect: async () => ({ Running: false, ExitCode: engine.exitCode }),
  };
  const container = {
    exec: async (options: Docker.ExecCreateOptions) => {
      engine.created.push(options);
      return exec;
    },
  };
  engine.docker = { getContainer: () => container } as unknown as Docker;
  return engine;
}

const keep = (error: unknown) => error;

describe('openExec', () => {
  it('with a TTY: sizes it at creation (ConsoleSize is rows, cols) and again right after the start, and marks the process', async () => {
    const engine = fakeEngine();
    const session = await openExec(engine.docker, 'c1', { cmd: ['/bin/sh'], tty: true, env: ['TERM=xterm-256color'], cols: 100, rows: 40 }, keep);
    expect(engine.created[0]).toMatchObject({ Cmd: ['/bin/sh'], Tty: true, AttachStdin: true, ConsoleSize: [40, 100] });
    expect(engine.created[0]!.Env).toEqual(['TERM=xterm-256color', expect.stringMatching(new RegExp(`^${EXEC_MARK_VARIABLE}=[0-9a-f-]{36}$`))]);
    expect(engine.started[0]).toMatchObject({ hijack: true, stdin: true, Tty: true, ConsoleSize: [40, 100] });
    expect(engine.resized).toEqual([{ h: 40, w: 100 }]);
    expect(session.stream).toBe(engine.connection);
    expect(session.stderr).toBeUndefined();
    await session.resize(120, 30);
    expect(engine.resized[1]).toEqual({ h: 30, w: 120 });
  });

  it('without a TTY: stdout on the stream, stderr beside it, stdin through, and the exit code once it is over', async () => {
    const engine = fakeEngine();
    const session = await openExec(engine.docker, 'c1', { cmd: ['sh', '-c', 'cat'], tty: false }, keep);
    expect(engine.resized).toEqual([]);
    const stdout: string[] = [];
    const stderr: string[] = [];
    session.stream.on('data', (chunk: Buffer) => stdout.push(chunk.toString()));
    session.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
    session.stream.end('input');
    await new Promise((resolve) => setImmediate(resolve));
    expect(Buffer.concat(engine.connection.written).toString()).toBe('input');
    // stdin's end is a half-close: the output still comes back.
    expect(engine.connection.writableEnded).toBe(true);
    engine.connection.push(Buffer.concat([frame(1, 'out'), frame(2, 'err')]));
    engine.connection.push(null);
    expect(await session.exited()).toBe(7);
    expect(stdout.join('')).toBe('out');
    expect(stderr.join('')).toBe('err');
  });

  it('without a TTY: stops reading the engine while stdout is not read, and goes on once it is', async () => {
    const engine = fakeEngine();
    const session = await openExec(engine.docker, 'c1', { cmd: ['yes'], tty: false }, keep);
    session.stderr!.resume();
    const chunk = frame(1, Buffer.alloc(16 * 1024, 0x79));
    for (let i = 0; i < 8; i += 1) engine.connection.push(chunk);
    await new Promise((resolve) => setImmediate(resolve));
    expect(engine.connection.isPaused()).toBe(true);
    let bytes = 0;
    session.stream.on('data', (data: Buffer) => (bytes += data.length));
    await vi.waitFor(() => expect(bytes).toBe(8 * 16 * 1024));
    expect(engine.connection.isPaused()).toBe(false);
  });

  it('close hangs up a process that is still there, by a second exec that finds it by its mark', async () => {
    const engine = fakeEngine();
    const session = await openExec(engine.docker, 'c1', { cmd: ['/bin/sh'], tty: true, cols: 80, rows: 24 }, keep);
    session.close();
    await new Promise((resolve) => setImmediate(resolve));
    expect(engine.connection.destroyed).toBe(true);
    const mark = engine.created[0]!.Env!.at(-1);
    expect(engine.created[1]).toEqual({ Cmd: ['/bin/sh', '-c', HANG_UP_SCRIPT, 'sh', mark] });
  });

  it('close does not hang up a process that ended by itself', async () => {
    const engine = fakeEngine();
    const session = await openExec(engine.docker, 'c1', { cmd: ['/bin/sh'], tty: true, cols: 80, rows: 24 }, keep);
    session.stream.resume();
    engine.connection.push(null);
    await new Promise((resolve) => setImmediate(resolve));
    session.close();
    await new Promise((resolve) => setImmediate(resolve));
    expect(engine.created).toHaveLength(1);
  });
});
