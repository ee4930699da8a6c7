import { PassThrough } from 'node:stream';
import type Dockerode from 'dockerode';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { ContainerEvent } from '../../ports/container-runtime.port.ts';
import {
  BACKOFF_MAX_MS,
  containerEvents,
  formatSince,
  LineSplitter,
  parseContainerEvent,
  PROBE_INTERVAL_MS,
  PROBE_TIMEOUT_MS,
  RecentKeys,
} from './docker-events.ts';

const ID = 'c0ffee'.padEnd(64, '0');

/** A line as dockerd 20.10 writes it (field order and all). */
function eventLine(action: string, timeNano: bigint, attributes: Record<string, string> = {}): string {
  const time = Number(timeNano / 1_000_000_000n);
  return `${JSON.stringify({
    status: action,
    id: ID,
    from: 'tianqi-test/busybox:1',
    Type: 'container',
    Action: action,
    Actor: { ID: ID, Attributes: { image: 'tianqi-test/busybox:1', 'managed-by': 'tianqi', name: 'job-1', ...attributes } },
    scope: 'local',
    time,
  }).slice(0, -1)},"timeNano":${timeNano}}\n`;
}

describe('parseContainerEvent', () => {
  it('reads a die event: labels without Docker attributes, exit code, exact timeNano', () => {
    const parsed = parseContainerEvent(eventLine('die', 1714557605123456789n, { exitCode: '137', execDuration: '3' }).trim());
    expect(parsed).toEqual({
      key: `1714557605123456789|${ID}|die`,
      event: {
        containerId: ID,
        name: 'job-1',
        labels: { 'managed-by': 'tianqi' },
        action: 'die',
        exitCode: 137,
        timeNano: 1714557605123456789n,
      },
    });
  });

  it('cuts `exec_start: …` style actions to their name, but keys by the full action', () => {
    const parsed = parseContainerEvent(eventLine('exec_start: sh -c echo hi', 1n, { execID: 'abc' }).trim());
    expect(parsed?.event).toMatchObject({ action: 'exec_start', exitCode: null, labels: { 'managed-by': 'tianqi' } });
    expect(parsed?.key).toBe(`1|${ID}|exec_start: sh -c echo hi`);
  });

  it('skips what is not a container event', () => {
    expect(parseContainerEvent('{"Type":"network","Action":"connect","Actor":{"ID":"n"},"timeNano":1}')).toBeUndefined();
    expect(parseContainerEvent('not json')).toBeUndefined();
    expect(parseContainerEvent('null')).toBeUndefined();
  });
});

describe('formatSince', () => {
  it('writes seconds and nine digits of nanoseconds', () => {
    expect(formatSince(1714557605123456789n)).toBe('1714557605.123456789');
    expect(formatSince(5n)).toBe('0.000000005');
  });
});

describe('LineSplitter', () => {
  it('joins lines and characters split across chunks, and keeps an unfinished line back', () => {
    const bytes = Buffer.from('{"a":"显存"}\n\n{"b":1}\n{"c"', 'utf8');
    for (let offset = 0; offset <= bytes.length; offset += 1) {
      const splitter = new LineSplitter();
      const lines = [...splitter.push(bytes.subarray(0, offset)), ...splitter.push(bytes.subarray(offset))];
      expect(lines, `split at ${offset}`).toEqual(['{"a":"显存"}', '{"b":1}']);
    }
  });
});

describe('RecentKeys', () => {
  it('refuses a key it holds and forgets the oldest beyond its capacity', () => {
    const keys = new RecentKeys(2);
    expect([keys.add('a'), keys.add('a'), keys.add('b'), keys.add('c'), keys.add('b'), keys.add('a')]).toEqual([
      true,
      false,
      true,
      true,
      false,
      true,
    ]);
  });
});

interface Dial {
  readonly path: string;
  readonly query: Record<string, unknown>;
  readonly signal: AbortSignal;
  accept(date?: string): PassThrough;
  refuse(error: Error): void;
}

/** Stands in for docker-modem: each request waits for the test to answer it. */
class FakeEngine {
  readonly dials: Dial[] = [];
  readonly ping = vi.fn<(options: { abortSignal: AbortSignal }) => Promise<unknown>>(() => Promise.resolve('OK'));
  readonly docker = {
    modem: {
      socketPath: '/run/fake-docker.sock',
      dial: (options: { path: string; options: Record<string, unknown>; abortSignal: AbortSignal }, callback: (error: Error | null, result: unknown) => void) => {
        this.dials.push({
          path: options.path,
          query: options.options,
          signal: options.abortSignal,
          accept: (date = 'Wed, 01 May 2024 10:00:00 GMT') => {
            const stream = Object.assign(new PassThrough(), { headers: { date }, socket: { setKeepAlive: vi.fn() } });
            callback(null, stream);
            return stream;
          },
          refuse: (error) => callback(error, null),
        });
      },
    },
    ping: this.ping,
  } as unknown as Dockerode;

  get last(): Dial {
    return this.dials.at(-1)!;
  }
}

function refused(): Error {
  return Object.assign(new Error('connect ECONNREFUSED /run/fake-docker.sock'), { code: 'ECONNREFUSED' });
}

describe('containerEvents', () => {
  let engine: FakeEngine;
  let events: ContainerEvent[];
  let connection: ReturnType<typeof vi.fn<(up: boolean, reason?: string) => void>>;

  beforeEach(() => {
    vi.useFakeTimers();
    engine = new FakeEngine();
    events = [];
    connection = vi.fn<(up: boolean, reason?: string) => void>();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  const subscribe = (sinceNano?: bigint) =>
    containerEvents(engine.docker, 'node-1', sinceNano, connection).subscribe((event) => events.push(event));

  it('asks for container events only, from now, and emits them as they come', async () => {
    const subscription = subscribe();
    expect(engine.dials).toHaveLength(1);
    expect(engine.last.path).toBe('/events?');
    expect(engine.last.query).toEqual({ filters: { type: ['container'] } });
    const stream = engine.last.accept();
    await vi.advanceTimersByTimeAsync(0);
    expect(connection.mock.calls).toEqual([[true, undefined]]);
    const line = Buffer.from(eventLine('start', 1714557605000000001n) + eventLine('die', 1714557606000000000n, { exitCode: '0' }));
    stream.write(line.subarray(0, 50));
    stream.write(line.subarray(50));
    await vi.advanceTimersByTimeAsync(0);
    expect(events.map((event) => [event.action, event.timeNano, event.exitCode])).toEqual([
      ['start', 1714557605000000001n, null],
      ['die', 1714557606000000000n, 0],
    ]);
    subscription.unsubscribe();
    expect(stream.destroyed).toBe(true);
  });

  it('reconnects after the stream ends, a second before the last event, and drops what it delivered already', async () => {
    const subscription = subscribe();
    const first = engine.last.accept();
    first.write(eventLine('start', 1714557605000000001n));
    await vi.advanceTimersByTimeAsync(0);
    first.end();
    await vi.advanceTimersByTimeAsync(0);
    expect(connection.mock.calls).toEqual([[true, undefined], [false, 'the engine ended the event stream']]);

    await vi.advanceTimersByTimeAsync(249);
    expect(engine.dials).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(engine.dials).toHaveLength(2);
    expect(engine.last.query).toEqual({ filters: { type: ['container'] }, since: '1714557604.000000001' });

    const second = engine.last.accept();
    second.write(eventLine('start', 1714557605000000001n) + eventLine('kill', 1714557607000000000n, { signal: '9' }));
    await vi.advanceTimersByTimeAsync(0);
    expect(events.map((event) => event.action)).toEqual(['start', 'kill']);
    expect(connection.mock.calls.at(-1)).toEqual([true, undefined]);
    subscription.unsubscribe();
  });

  it('resumes from the engine clock when no event came yet', async () => {
    const subscription = subscribe();
    engine.last.accept('Wed, 01 May 2024 10:00:00 GMT').destroy(new Error('read ECONNRESET'));
    await vi.advanceTimersByTimeAsync(250);
    expect(engine.last.query).toMatchObject({ since: `${Date.UTC(2024, 4, 1, 10) / 1000 - 1}.000000000` });
    expect(connection.mock.calls[1]).toEqual([false, 'the event stream broke: read ECONNRESET']);
    subscription.unsubscribe();
  });

  it('starts at sinceNano exactly and never reaches before it', async () => {
    const subscription = subscribe(1714557605000000000n);
    expect(engine.last.query).toMatchObject({ since: '1714557605.000000000' });
    engine.last.accept().end();
    await vi.advanceTimersByTimeAsync(250);
    expect(engine.last.query).toMatchObject({ since: '1714557605.000000000' });
    subscription.unsubscribe();
  });

  it('backs off, doubling up to its maximum, reports the outage once, and starts over after a healthy connection', async () => {
    const subscription = subscribe();
    const times: number[] = [];
    const start = Date.now();
    for (let attempt = 0; attempt < 9; attempt += 1) {
      times.push(Date.now() - start);
      engine.last.refuse(refused());
      const dials = engine.dials.length;
      while (engine.dials.length === dials) await vi.advanceTimersByTimeAsync(50);
    }
    expect(times).toEqual([0, 250, 750, 1750, 3750, 7750, 15_750, 30_750, 45_750]);
    expect(BACKOFF_MAX_MS).toBe(15_000);
    expect(connection.mock.calls).toEqual([[false, 'nothing listens on /run/fake-docker.sock (is dockerd running?)']]);

    const stream = engine.last.accept();
    await vi.advanceTimersByTimeAsync(10_000);
    stream.end();
    await vi.advanceTimersByTimeAsync(250);
    expect(engine.dials).toHaveLength(11);
    subscription.unsubscribe();
  });

  it('reconnects when the engine stops answering pings, or answers them with an error', async () => {
    const subscription = subscribe();
    const first = engine.last.accept();
    engine.ping.mockImplementationOnce(() => new Promise(() => {}));
    await vi.advanceTimersByTimeAsync(PROBE_INTERVAL_MS);
    expect(engine.ping).toHaveBeenCalledTimes(1);
    expect(first.destroyed).toBe(false);
    await vi.advanceTimersByTimeAsync(PROBE_TIMEOUT_MS);
    expect(first.destroyed).toBe(true);
    expect(connection.mock.calls[1]).toEqual([false, 'the engine did not answer a ping within 10 s']);

    await vi.advanceTimersByTimeAsync(250);
    const second = engine.last.accept();
    engine.ping.mockRejectedValueOnce(refused());
    await vi.advanceTimersByTimeAsync(PROBE_INTERVAL_MS);
    expect(second.destroyed).toBe(true);
    expect(connection.mock.calls[3]).toEqual([
      false,
      'the engine did not answer a ping: nothing listens on /run/fake-docker.sock (is dockerd running?)',
    ]);
    subscription.unsubscribe();
  });

  it('stops for good when unsubscribed: the pending request is aborted and no retry follows', async () => {
    const subscription = subscribe();
    engine.last.refuse(refused());
    await vi.advanceTimersByTimeAsync(250);
    const pending = engine.last;
    subscription.unsubscribe();
    expect(pending.signal.aborted).toBe(true);
    const late = pending.accept();
    await vi.advanceTimersByTimeAsync(0);
    expect(late.destroyed).toBe(true);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(engine.dials).toHaveLength(2);
    expect(connection).toHaveBeenCalledTimes(1);
  });
});
