import { PassThrough } from 'node:stream';
import type Dockerode from 'dockerode';
import { describe, expect, it } from 'vitest';
import type { LogLine } from '../../ports/container-runtime.port.ts';
import { containerLogs, LogDemuxer, MAX_LINE_CHARS } from './docker-logs.ts';

const T1 = '2024-05-01T10:00:00.000000001Z';
const T2 = '2024-05-01T10:00:00.000000002Z';
const T3 = '2024-05-01T10:00:00.100000000Z';
const T4 = '2024-05-01T10:00:00.100000001Z';
const T5 = '2024-05-01T10:00:01.000000000Z';

function frame(type: number, payload: string | Buffer): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const header = Buffer.alloc(8);
  header[0] = type;
  header.writeUInt32BE(body.length, 4);
  return Buffer.concat([header, body]);
}

/** A long line the logging driver cut into two partial messages in the middle of a character. */
const longLine = '显存切分'.repeat(10);
const longBytes = Buffer.from(longLine, 'utf8');
const cut = 16; // inside the sixth character (3 bytes each)

const multiplexed = Buffer.concat([
  frame(1, `${T1} hello stdout\n`),
  frame(2, `${T2} 显存切分 on stderr\n`),
  frame(1, Buffer.concat([Buffer.from(`${T3} `), longBytes.subarray(0, cut)])),
  frame(2, `${T3} crlf\r\n`),
  frame(1, Buffer.concat([Buffer.from(`${T4} `), longBytes.subarray(cut), Buffer.from('\n')])),
  frame(1, `${T5} \n`),
  frame(2, `${T5} no newline at the end`),
]);

const expected: LogLine[] = [
  { stream: 'stdout', time: T1, text: 'hello stdout' },
  { stream: 'stderr', time: T2, text: '显存切分 on stderr' },
  { stream: 'stderr', time: T3, text: 'crlf' },
  { stream: 'stdout', time: T3, text: longLine },
  { stream: 'stdout', time: T5, text: '' },
  { stream: 'stderr', time: T5, text: 'no newline at the end' },
];

function demux(tty: boolean, chunks: Buffer[]): LogLine[] {
  const demuxer = new LogDemuxer(tty);
  return [...chunks.flatMap((chunk) => demuxer.push(chunk)), ...demuxer.end()];
}

function splitAt(buffer: Buffer, offset: number): Buffer[] {
  return [buffer.subarray(0, offset), buffer.subarray(offset)];
}

describe('LogDemuxer, multiplexed', () => {
  it('reads frames in one chunk: streams, timestamps, partial messages joined, \\r\\n and the last line', () => {
    expect(demux(false, [multiplexed])).toEqual(expected);
  });

  it('gives the same lines wherever the body is split in two', () => {
    for (let offset = 0; offset <= multiplexed.length; offset += 1) {
      expect(demux(false, splitAt(multiplexed, offset)), `split at ${offset}`).toEqual(expected);
    }
  });

  it('gives the same lines when every byte comes alone', () => {
    const bytes = [...multiplexed].map((byte) => Buffer.from([byte]));
    expect(demux(false, bytes)).toEqual(expected);
  });

  it('splits a frame that holds several lines, all with its timestamp', () => {
    expect(demux(false, [frame(1, `${T1} a\nb\n`)])).toEqual([
      { stream: 'stdout', time: T1, text: 'a' },
      { stream: 'stdout', time: T1, text: 'b' },
    ]);
  });

  it('hands out a line that never ends in pieces', () => {
    const lines = demux(false, [frame(1, `${T1} ${'x'.repeat(MAX_LINE_CHARS)}`), frame(1, `${T2} y\n`)]);
    expect(lines).toEqual([
      { stream: 'stdout', time: T1, text: 'x'.repeat(MAX_LINE_CHARS) },
      { stream: 'stdout', time: T2, text: 'y' },
    ]);
  });

  it('fails on an error frame of the engine', () => {
    const demuxer = new LogDemuxer(false);
    expect(() => demuxer.push(frame(3, 'error from daemon in stream: log file rotated'))).toThrow(
      /failed while sending the logs: error from daemon in stream: log file rotated/,
    );
  });

  it('fails on a body that is not multiplexed', () => {
    expect(() => new LogDemuxer(false).push(Buffer.from(`${T1} hello from a TTY\n`))).toThrow(/not in Docker's multiplexed format/);
  });
});

describe('LogDemuxer, TTY', () => {
  const raw = Buffer.from(`${T1} first\r\n${T2} 显存切分\r\n${T3} last, no newline`, 'utf8');
  const rawExpected: LogLine[] = [
    { stream: 'stdout', time: T1, text: 'first' },
    { stream: 'stdout', time: T2, text: '显存切分' },
    { stream: 'stdout', time: T3, text: 'last, no newline' },
  ];

  it('reads the raw body as stdout, wherever it is split', () => {
    for (let offset = 0; offset <= raw.length; offset += 1) {
      expect(demux(true, splitAt(raw, offset)), `split at ${offset}`).toEqual(rawExpected);
    }
    expect(demux(true, [...raw].map((byte) => Buffer.from([byte])))).toEqual(rawExpected);
  });
});

type DialCallback = (error: Error | null, result: unknown) => void;

/** Stands in for dockerode: inspection answers at once, the logs request when the test likes. */
function fakeEngine(tty: boolean) {
  const requests: { path: string; query: unknown; signal: AbortSignal; answer: DialCallback }[] = [];
  const docker = {
    getContainer: () => ({ inspect: () => Promise.resolve({ Config: { Tty: tty } }) }),
    modem: {
      dial: (options: { path: string; options: unknown; abortSignal: AbortSignal }, answer: DialCallback) =>
        requests.push({ path: options.path, query: options.options, signal: options.abortSignal, answer }),
    },
  } as unknown as Dockerode;
  return { docker, requests };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('containerLogs', () => {
  it('asks for both streams with timestamps, emits the lines and completes at the end', async () => {
    const { docker, requests } = fakeEngine(false);
    const lines: LogLine[] = [];
    let completed = false;
    containerLogs(docker, 'job-1', { tail: 100, follow: false }).subscribe({
      next: (line) => lines.push(line),
      complete: () => (completed = true),
    });
    await tick();
    expect(requests[0]).toMatchObject({
      path: '/containers/job-1/logs?',
      query: { stdout: true, stderr: true, timestamps: true, tail: 100, follow: false },
    });
    const body = new PassThrough();
    requests[0]!.answer(null, body);
    await tick();
    body.end(multiplexed);
    await tick();
    expect(lines).toEqual(expected);
    expect(completed).toBe(true);
  });

  it('reads a TTY container as raw stdout', async () => {
    const { docker, requests } = fakeEngine(true);
    const lines: LogLine[] = [];
    containerLogs(docker, 'job-1', { tail: 10, follow: false }).subscribe((line) => lines.push(line));
    await tick();
    const body = new PassThrough();
    requests[0]!.answer(null, body);
    await tick();
    body.end(`${T1} from a tty\r\n`);
    await tick();
    expect(lines).toEqual([{ stream: 'stdout', time: T1, text: 'from a tty' }]);
  });

  it('ends the request when unsubscribed, and asks for nothing when unsubscribed during the inspection', async () => {
    const { docker, requests } = fakeEngine(false);
    const following = containerLogs(docker, 'job-1', { tail: 0, follow: true }).subscribe();
    await tick();
    const body = new PassThrough();
    requests[0]!.answer(null, body);
    await tick();
    following.unsubscribe();
    expect(body.destroyed).toBe(true);
    expect(requests[0]!.signal.aborted).toBe(true);

    containerLogs(docker, 'job-1', { tail: 0, follow: true }).subscribe().unsubscribe();
    await tick();
    expect(requests).toHaveLength(1);
  });
});
