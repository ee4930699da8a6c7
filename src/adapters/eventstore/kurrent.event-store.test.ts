import { PassThrough } from 'node:stream';
import {
  ANY,
  NO_STREAM,
  StreamDeletedError,
  StreamNotFoundError,
  UnavailableError,
  WrongExpectedVersionError,
} from '@kurrent/kurrentdb-client';
import type {
  AllStreamResolvedEvent,
  AppendToStreamOptions,
  EventData,
  KurrentDBClient,
  ReadAllOptions,
  ReadStreamOptions,
  ResolvedEvent,
  SubscribeToAllOptions,
} from '@kurrent/kurrentdb-client';
import { firstValueFrom, take, toArray } from 'rxjs';
import { describe, expect, it, vi } from 'vitest';
import type { RecordedEvent } from '../../ports/event-store.port.ts';
import { WrongExpectedRevisionError } from '../../ports/event-store.port.ts';
import {
  KurrentEventStore,
  KurrentEventStoreError,
  commitPositionOf,
  describeTarget,
  isStreamNotFound,
  openKurrentEventStore,
  resubscribeDelay,
  toEventData,
  toKurrentPosition,
  toPortActual,
  toRecordedEvent,
  toStreamState,
  translateAppendError,
} from './kurrent.event-store.ts';

const created = new Date('2026-11-26T08:00:00.000Z');
const meta = { time: '2026-11-26T00:00:00.000Z', userId: 'u-1', correlationId: 'c-1' };

/** A resolved `$all` event shaped as the client returns it (JSON content). */
function resolved(position: number, overrides: Record<string, unknown> = {}): AllStreamResolvedEvent {
  return {
    event: {
      streamId: 'gpu-1',
      id: `00000000-0000-4000-8000-${String(position).padStart(12, '0')}`,
      isJson: true,
      revision: BigInt(position % 7),
      type: 'GpuRegistered',
      created,
      data: { n: position },
      metadata: meta,
      position: { commit: BigInt(position), prepare: BigInt(position) },
      ...overrides,
    },
    commitPosition: BigInt(position),
  } as AllStreamResolvedEvent;
}

describe('toStreamState', () => {
  it('maps the port expected revision onto the client stream state', () => {
    expect(toStreamState('no-stream')).toBe(NO_STREAM);
    expect(toStreamState('any')).toBe(ANY);
    expect(toStreamState(0)).toBe(0n);
    expect(toStreamState(41)).toBe(41n);
  });

  it('rejects revisions that are not non-negative integers', () => {
    for (const bad of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => toStreamState(bad)).toThrow(RangeError);
    }
  });
});

describe('translateAppendError', () => {
  it("turns the client's WrongExpectedVersionError into the port's error with the actual revision", () => {
    const error = new WrongExpectedVersionError(undefined, { streamName: 'gpu-1', expected: 0n, current: 3n });
    const translated = translateAppendError(error, 'gpu-1', 0);
    expect(translated).toBeInstanceOf(WrongExpectedRevisionError);
    expect(translated).toMatchObject({ stream: 'gpu-1', expected: 0, actual: 3 });
  });

  it('reports no-stream when the stream does not exist', () => {
    const error = new WrongExpectedVersionError(undefined, { streamName: 's', expected: 2n, current: 'no_stream' });
    expect(translateAppendError(error, 's', 2)).toMatchObject({ expected: 2, actual: 'no-stream' });
  });

  it('keeps the expected revision the caller gave, and accepts a plain error-shaped object', () => {
    const error = { type: 'wrong-expected-version', actualState: 0n };
    const translated = translateAppendError(error, 's', 'no-stream');
    expect(translated).toBeInstanceOf(WrongExpectedRevisionError);
    expect(translated).toMatchObject({ expected: 'no-stream', actual: 0 });
  });

  it('passes every other error through unchanged', () => {
    const deleted = StreamDeletedError.fromStreamName('s');
    const plain = new Error('boom');
    expect(translateAppendError(deleted, 's', 'any')).toBe(deleted);
    expect(translateAppendError(plain, 's', 'any')).toBe(plain);
    expect(translateAppendError('text', 's', 'any')).toBe('text');
  });
});

describe('toPortActual', () => {
  it('maps revisions, no_stream and the negative sentinel states', () => {
    expect(toPortActual(5n)).toBe(5);
    expect(toPortActual(0n)).toBe(0);
    expect(toPortActual('no_stream')).toBe('no-stream');
    expect(toPortActual(-1n)).toBe('no-stream');
    expect(toPortActual(-5n)).toBe('no-stream');
    expect(toPortActual(undefined)).toBe('no-stream');
  });
});

describe('isStreamNotFound', () => {
  it("recognises the client's StreamNotFoundError only", () => {
    expect(isStreamNotFound(new StreamNotFoundError(undefined, 's'))).toBe(true);
    expect(isStreamNotFound({ type: 'stream-not-found' })).toBe(true);
    expect(isStreamNotFound(new UnavailableError())).toBe(false);
    expect(isStreamNotFound(new Error('stream-not-found'))).toBe(false);
    expect(isStreamNotFound(undefined)).toBe(false);
  });
});

describe('toRecordedEvent', () => {
  it('maps a resolved event onto the port RecordedEvent', () => {
    expect(toRecordedEvent(resolved(1234))).toEqual<RecordedEvent>({
      id: '00000000-0000-4000-8000-000000001234',
      stream: 'gpu-1',
      revision: 1234 % 7,
      position: 1234,
      type: 'GpuRegistered',
      data: { n: 1234 },
      metadata: meta,
    });
  });

  it("takes the position from the event's own record, else from the resolved event", () => {
    const own = resolved(10, { position: { commit: 11n, prepare: 11n } });
    expect(toRecordedEvent(own)!.position).toBe(11);
    const streamRead: ResolvedEvent = { event: { ...resolved(20).event!, position: undefined }, commitPosition: 20n } as ResolvedEvent;
    expect(toRecordedEvent(streamRead)!.position).toBe(20);
    expect(commitPositionOf(streamRead)).toBe(20n);
  });

  it('fails clearly when the server sent no position at all', () => {
    const bare = { event: { ...resolved(5).event!, position: undefined } } as ResolvedEvent;
    expect(() => toRecordedEvent(bare)).toThrow(/without a log position/);
  });

  it('returns undefined for a resolved event without an event (an unresolved link)', () => {
    expect(toRecordedEvent({ commitPosition: 7n })).toBeUndefined();
  });

  it('decodes binary payloads that hold JSON and keeps other bytes as they are', () => {
    const bytes = new Uint8Array([0xff, 0x00, 0x01]);
    const jsonBytes = new TextEncoder().encode(JSON.stringify({ n: 1, text: '显存切分' }));
    const binary = resolved(3, { isJson: false, data: jsonBytes, metadata: new TextEncoder().encode(JSON.stringify(meta)) });
    expect(toRecordedEvent(binary)).toMatchObject({ data: { n: 1, text: '显存切分' }, metadata: meta });
    expect(toRecordedEvent(resolved(4, { isJson: false, data: bytes }))!.data).toBe(bytes);
  });

  it("fills the port's metadata time from the server's creation time when an event lacks it", () => {
    expect(toRecordedEvent(resolved(1, { metadata: undefined }))!.metadata).toEqual({ time: created.toISOString() });
    expect(toRecordedEvent(resolved(1, { metadata: { userId: 'u-9' } }))!.metadata).toEqual({
      userId: 'u-9',
      time: created.toISOString(),
    });
    expect(toRecordedEvent(resolved(1))!.metadata.time).toBe(meta.time);
  });

  it('refuses positions and revisions a JavaScript number cannot hold exactly', () => {
    const huge = BigInt(Number.MAX_SAFE_INTEGER) + 2n;
    expect(() => toRecordedEvent(resolved(1, { position: { commit: huge, prepare: huge } }))).toThrow(RangeError);
    expect(() => toRecordedEvent(resolved(1, { revision: huge }))).toThrow(RangeError);
  });
});

describe('toEventData', () => {
  it('builds a JSON event that keeps the id a caller gave', () => {
    const id = '3f0c5a7e-6a8f-4a39-9f27-1e2b3c4d5e6f';
    expect(toEventData({ id, type: 'A', data: { n: 1 }, metadata: meta })).toEqual({
      id,
      contentType: 'application/json',
      type: 'A',
      data: { n: 1 },
      metadata: meta,
    });
  });

  it('generates a time-ordered UUID (v7) when the event has none', () => {
    const a = toEventData({ type: 'A', data: {}, metadata: meta });
    const b = toEventData({ type: 'A', data: {}, metadata: meta });
    expect(a.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(a.id).not.toBe(b.id);
  });

  it('rejects undefined data, which JSON cannot carry', () => {
    expect(() => toEventData({ type: 'A', data: undefined, metadata: meta })).toThrow(TypeError);
  });
});

describe('positions, backoff and target', () => {
  it('starts $all reads at the full position of the event at a port position', () => {
    expect(toKurrentPosition(0)).toEqual({ commit: 0n, prepare: 0n });
    expect(toKurrentPosition(98_765)).toEqual({ commit: 98_765n, prepare: 98_765n });
    expect(() => toKurrentPosition(-1)).toThrow(RangeError);
    expect(() => toKurrentPosition(1.5)).toThrow(RangeError);
  });

  it('doubles the resubscription delay up to the cap', () => {
    expect([0, 1, 2, 3, 4, 10, 1000].map((n) => resubscribeDelay(n, 250, 3_000))).toEqual([
      250, 500, 1000, 2000, 3000, 3000, 3000,
    ]);
  });

  it('names the server in messages without credentials or options', () => {
    expect(describeTarget('kurrentdb://admin:changeit@db.local:2113?tls=false')).toBe('kurrentdb://db.local:2113');
    expect(describeTarget('esdb+discover://a:1,b:2?nodePreference=leader')).toBe('esdb+discover://a:1,b:2');
    expect(describeTarget('kurrentdb://127.0.0.1:2113?tls=false')).toBe('kurrentdb://127.0.0.1:2113');
  });
});

// ---- the adapter's use of the client, against a fake client (no server) ----

class FakeSubscription extends PassThrough {
  readonly unsubscribe = vi.fn(async () => {});
  constructor(readonly options: SubscribeToAllOptions) {
    super({ objectMode: true });
  }
}

function fakeClient() {
  const subscriptions: FakeSubscription[] = [];
  const calls = {
    readAll: [] as ReadAllOptions[],
    readStream: [] as { stream: string; options: ReadStreamOptions | undefined }[],
    append: [] as { stream: string; events: EventData[]; options: AppendToStreamOptions | undefined }[],
  };
  let allEvents: AllStreamResolvedEvent[] = [];
  let streamEvents: ResolvedEvent[] | Error = [];
  let appendOutcome: (() => Promise<unknown>) | undefined;
  const client = {
    subscribeToAll(options: SubscribeToAllOptions) {
      const sub = new FakeSubscription(options);
      subscriptions.push(sub);
      return sub;
    },
    async *readAll(options: ReadAllOptions) {
      calls.readAll.push(options);
      let n = 0;
      for (const e of allEvents) {
        if (n++ >= Number(options.maxCount ?? Infinity)) return;
        yield e;
      }
    },
    async *readStream(stream: string, options?: ReadStreamOptions) {
      calls.readStream.push({ stream, options });
      if (streamEvents instanceof Error) throw streamEvents;
      yield* streamEvents;
    },
    async appendToStream(stream: string, events: EventData[], options?: AppendToStreamOptions) {
      calls.append.push({ stream, events, options });
      return appendOutcome!();
    },
    dispose: vi.fn(async () => {}),
  };
  return {
    client: client as unknown as KurrentDBClient,
    dispose: client.dispose,
    subscriptions,
    calls,
    setAll: (events: AllStreamResolvedEvent[]) => (allEvents = events),
    setStream: (events: ResolvedEvent[] | Error) => (streamEvents = events),
    setAppend: (outcome: () => Promise<unknown>) => (appendOutcome = outcome),
  };
}

const quiet = { onSubscriptionDrop: () => {}, resubscribeInitialDelayMs: 1, resubscribeMaxDelayMs: 5 };

async function waitUntil(check: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 2));
  }
}

describe('KurrentEventStore over the client', () => {
  it('appends JSON events with the mapped stream state and returns revision and commit position', async () => {
    const fake = fakeClient();
    fake.setAppend(async () => ({ success: true, nextExpectedRevision: 4n, position: { commit: 900n, prepare: 900n } }));
    const store = new KurrentEventStore(fake.client, 'kurrentdb://x', quiet);
    const result = await store.append('gpu-1', [{ type: 'A', data: { n: 1 }, metadata: meta }], 3);
    expect(result).toEqual({ nextExpectedRevision: 4, position: 900 });
    expect(fake.calls.append[0]!.options).toEqual({ streamState: 3n });
    expect(fake.calls.append[0]!.events[0]).toMatchObject({ contentType: 'application/json', type: 'A', data: { n: 1 } });
  });

  it("rejects an append conflict with the port's WrongExpectedRevisionError", async () => {
    const fake = fakeClient();
    fake.setAppend(async () => {
      throw new WrongExpectedVersionError(undefined, { streamName: 's', expected: 'no_stream', current: 0n });
    });
    const store = new KurrentEventStore(fake.client, 'kurrentdb://x', quiet);
    const error = await store.append('s', [{ type: 'A', data: {}, metadata: meta }], 'no-stream').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WrongExpectedRevisionError);
    expect(error).toMatchObject({ stream: 's', expected: 'no-stream', actual: 0 });
  });

  it('wraps other failures with the operation and the server, keeping the cause', async () => {
    const fake = fakeClient();
    const cause = new UnavailableError();
    fake.setAppend(async () => {
      throw cause;
    });
    const store = new KurrentEventStore(fake.client, 'kurrentdb://db:2113', quiet);
    const error = await store.append('s', [{ type: 'A', data: {}, metadata: meta }], 'any').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(KurrentEventStoreError);
    expect((error as Error).message).toMatch(/append to s failed against kurrentdb:\/\/db:2113: unavailable/);
    expect((error as Error).cause).toBe(cause);
  });

  it('fails an operation the server does not answer within the timeout', async () => {
    const fake = fakeClient();
    fake.setAppend(() => new Promise(() => {}));
    const store = new KurrentEventStore(fake.client, 'kurrentdb://db:2113', { ...quiet, operationTimeoutMs: 20 });
    await expect(store.append('s', [{ type: 'A', data: {}, metadata: meta }], 'any')).rejects.toThrow(
      /no answer from kurrentdb:\/\/db:2113 within 20 ms/,
    );
  });

  it('sets no time limit when operationTimeoutMs is Infinity', async () => {
    const fake = fakeClient();
    fake.setAppend(async () => {
      await new Promise((r) => setTimeout(r, 10));
      return { success: true, nextExpectedRevision: 0n, position: { commit: 5n, prepare: 5n } };
    });
    const store = new KurrentEventStore(fake.client, 'kurrentdb://x', { ...quiet, operationTimeoutMs: Infinity });
    expect(await store.append('s', [{ type: 'A', data: {}, metadata: meta }], 'no-stream')).toEqual({
      nextExpectedRevision: 0,
      position: 5,
    });
  });

  it('reads a stream from a revision, and a missing stream as empty', async () => {
    const fake = fakeClient();
    const store = new KurrentEventStore(fake.client, 'kurrentdb://x', quiet);
    fake.setStream([resolved(10), resolved(20)]);
    expect((await store.readStream('gpu-1', { fromRevision: 1 })).map((e) => e.position)).toEqual([10, 20]);
    expect(fake.calls.readStream[0]!.options).toMatchObject({ fromRevision: 1n, direction: 'forwards' });
    await store.readStream('gpu-1');
    expect(fake.calls.readStream[1]!.options).toMatchObject({ fromRevision: 'start' });
    fake.setStream(new StreamNotFoundError(undefined, 'gpu-1'));
    expect(await store.readStream('gpu-1')).toEqual([]);
  });

  it('reads $all after a position: inclusive start dropped, system events filtered, page bounded', async () => {
    const fake = fakeClient();
    const store = new KurrentEventStore(fake.client, 'kurrentdb://x', quiet);
    fake.setAll([resolved(100), resolved(150), resolved(200), resolved(250)]);
    const page = await store.readAll({ after: 100, limit: 2 });
    expect(page.map((e) => e.position)).toEqual([150, 200]);
    const options = fake.calls.readAll[0]!;
    expect(options).toMatchObject({ fromPosition: { commit: 100n, prepare: 100n }, direction: 'forwards', maxCount: 3 });
    expect(options.filter).toMatchObject({ filterOn: 'eventType', regex: '^[^$].*' });
    expect((await store.readAll({ limit: 10 })).map((e) => e.position)).toEqual([100, 150, 200, 250]);
    expect(fake.calls.readAll[1]!.fromPosition).toBe('start');
  });

  it('reads the head position backwards from the end, excluding system events', async () => {
    const fake = fakeClient();
    const store = new KurrentEventStore(fake.client, 'kurrentdb://x', quiet);
    expect(await store.headPosition()).toBeUndefined();
    fake.setAll([resolved(777)]);
    expect(await store.headPosition()).toBe(777);
    expect(fake.calls.readAll[1]).toMatchObject({ fromPosition: 'end', direction: 'backwards', maxCount: 1 });
    expect(fake.calls.readAll[1]!.filter).toMatchObject({ regex: '^[^$].*' });
  });

  it('subscribes from a position, skipping what is at or before it and duplicates', async () => {
    const fake = fakeClient();
    const store = new KurrentEventStore(fake.client, 'kurrentdb://x', quiet);
    const received = firstValueFrom(store.subscribe(100).pipe(take(3), toArray()));
    const sub = fake.subscriptions[0]!;
    expect(sub.options.fromPosition).toEqual({ commit: 100n, prepare: 100n });
    expect(sub.options.filter).toMatchObject({ regex: '^[^$].*' });
    for (const p of [100, 150, 150, 120, 200, 300]) sub.write(resolved(p));
    expect((await received).map((e) => e.position)).toEqual([150, 200, 300]);
    await waitUntil(() => sub.unsubscribe.mock.calls.length === 1);
  });

  it('subscribes from the start when no position is given', () => {
    const fake = fakeClient();
    const store = new KurrentEventStore(fake.client, 'kurrentdb://x', quiet);
    const s = store.subscribe().subscribe();
    expect(fake.subscriptions[0]!.options.fromPosition).toBe('start');
    s.unsubscribe();
  });

  it('resubscribes after an error or an end from the last delivered position, with no duplicate', async () => {
    const fake = fakeClient();
    const drops: { error: unknown; after: number | undefined; retryInMs: number }[] = [];
    const store = new KurrentEventStore(fake.client, 'kurrentdb://x', {
      ...quiet,
      onSubscriptionDrop: (error, info) => drops.push({ error, ...info }),
    });
    const seen: number[] = [];
    const s = store.subscribe().subscribe((e) => seen.push(e.position));
    const first = fake.subscriptions[0]!;
    first.write(resolved(10, { position: { commit: 10n, prepare: 10n } }));
    first.write(resolved(20));
    await waitUntil(() => seen.length === 2);
    first.emit('error', new UnavailableError());
    await waitUntil(() => fake.subscriptions.length === 2);
    expect(first.unsubscribe).toHaveBeenCalled();
    expect(drops[0]).toMatchObject({ after: 20, retryInMs: 1 });
    const second = fake.subscriptions[1]!;
    expect(second.options.fromPosition).toEqual({ commit: 20n, prepare: 20n });
    second.emit('confirmation');
    for (const p of [20, 30]) second.write(resolved(p));
    await waitUntil(() => seen.length === 3);
    second.end(); // the server ended it
    await waitUntil(() => fake.subscriptions.length === 3);
    fake.subscriptions[2]!.write(resolved(30));
    fake.subscriptions[2]!.write(resolved(40));
    await waitUntil(() => seen.length === 4);
    expect(seen).toEqual([10, 20, 30, 40]);
    s.unsubscribe();
    expect(fake.subscriptions[2]!.unsubscribe).toHaveBeenCalled();
  });

  it('backs off exponentially while resubscribing keeps failing, and stops when unsubscribed', async () => {
    const fake = fakeClient();
    const delays: number[] = [];
    const store = new KurrentEventStore(fake.client, 'kurrentdb://x', {
      resubscribeInitialDelayMs: 1,
      resubscribeMaxDelayMs: 4,
      onSubscriptionDrop: (_error, { retryInMs }) => delays.push(retryInMs),
    });
    const s = store.subscribe().subscribe();
    for (let i = 0; i < 5; i++) {
      await waitUntil(() => fake.subscriptions.length === i + 1);
      fake.subscriptions[i]!.emit('error', new UnavailableError());
    }
    expect(delays).toEqual([1, 2, 4, 4, 4]);
    await waitUntil(() => fake.subscriptions.length === 6);
    s.unsubscribe();
    expect(fake.subscriptions[5]!.unsubscribe).toHaveBeenCalled();
    fake.subscriptions[5]!.emit('error', new UnavailableError());
    await new Promise((r) => setTimeout(r, 20));
    expect(fake.subscriptions).toHaveLength(6);
  });

  it('retries a subscription the server never confirms', async () => {
    const fake = fakeClient();
    const store = new KurrentEventStore(fake.client, 'kurrentdb://x', { ...quiet, subscriptionConfirmTimeoutMs: 10 });
    const s = store.subscribe().subscribe();
    await waitUntil(() => fake.subscriptions.length >= 2);
    expect(fake.subscriptions[0]!.unsubscribe).toHaveBeenCalled();
    s.unsubscribe();
  });

  it('completes its subscriptions and disposes the client on close, and refuses work after it', async () => {
    const fake = fakeClient();
    const store = new KurrentEventStore(fake.client, 'kurrentdb://x', quiet);
    let completed = false;
    store.subscribe().subscribe({ complete: () => (completed = true) });
    await store.close();
    expect(completed).toBe(true);
    expect(fake.subscriptions[0]!.unsubscribe).toHaveBeenCalled();
    expect(fake.dispose).toHaveBeenCalledTimes(1);
    await expect(store.readAll({ limit: 1 })).rejects.toThrow(/closed/);
    await store.close();
    expect(fake.dispose).toHaveBeenCalledTimes(1);
  });
});

describe('openKurrentEventStore', () => {
  it('accepts the connection string forms the client does, without connecting', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {}); // the client warns that esdb is deprecated
    try {
      for (const cs of [
        'kurrentdb://127.0.0.1:1?tls=false',
        'kurrentdb+discover://127.0.0.1:1?tls=false',
        'esdb://127.0.0.1:1?tls=false',
        'esdb+discover://admin:changeit@a:1,b:1?tls=false',
      ]) {
        const store = await openKurrentEventStore(cs);
        await store.close();
      }
    } finally {
      warn.mockRestore();
    }
  });

  it('rejects a connection string the client cannot parse, without echoing credentials', async () => {
    const error = await openKurrentEventStore('http://admin:secret@db:2113').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(KurrentEventStoreError);
    expect((error as Error).message).toMatch(/invalid KurrentDB connection string \(http:\/\/db:2113\)/);
    expect((error as Error).message).not.toContain('secret');
  });
});
