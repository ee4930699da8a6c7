import { randomUUID } from 'node:crypto';
import { filter, firstValueFrom, take, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventStore, NewEvent, RecordedEvent } from '../../src/ports/event-store.port.ts';
import { WrongExpectedRevisionError } from '../../src/ports/event-store.port.ts';

const meta = { time: '2026-11-26T00:00:00.000Z', userId: 'u-1', correlationId: 'c-1', causationId: 'c-0' };
const ev = (type: string, n: number): NewEvent => ({ type, data: { n, text: '显存切分' }, metadata: meta });
/** Stream names unique per run, so the suite can share a long-lived server. */
const streamName = (prefix: string) => `${prefix}-${randomUUID().replaceAll('-', '')}`;

/**
 * One behaviour contract for every EventStore adapter. `open` gives a store over a fresh (or
 * shared, long-lived) log; tests only rely on positions relative to what they appended.
 */
export function eventStoreContract(name: string, open: () => Promise<EventStore>) {
  describe(`EventStore contract: ${name}`, () => {
    let store: EventStore;
    beforeAll(async () => {
      store = await open();
    });
    afterAll(async () => {
      await store?.close();
    });

    it('appends to a new stream with no-stream and reads it back with 0-based revisions', async () => {
      const s = streamName('contract');
      const result = await store.append(s, [ev('A', 1), ev('B', 2)], 'no-stream');
      expect(result.nextExpectedRevision).toBe(1);
      const events = await store.readStream(s);
      expect(events.map((e) => [e.type, e.revision, e.stream])).toEqual([
        ['A', 0, s],
        ['B', 1, s],
      ]);
      expect(events[1]!.position).toBe(result.position);
      expect(events[0]!.position).toBeLessThan(events[1]!.position);
      expect(events[0]!.data).toEqual({ n: 1, text: '显存切分' });
      expect(events[0]!.metadata).toMatchObject(meta);
      expect(events[0]!.id).toMatch(/^[0-9a-f-]{36}$/);
    });

    it('keeps the id a caller gave an event', async () => {
      const s = streamName('contract');
      const id = randomUUID();
      await store.append(s, [{ ...ev('A', 1), id }], 'no-stream');
      expect((await store.readStream(s))[0]!.id).toBe(id);
    });

    it('returns an empty array for a stream that does not exist', async () => {
      expect(await store.readStream(streamName('missing'))).toEqual([]);
    });

    it('reads a stream from a revision', async () => {
      const s = streamName('contract');
      await store.append(s, [ev('A', 1), ev('B', 2), ev('C', 3)], 'no-stream');
      expect((await store.readStream(s, { fromRevision: 1 })).map((e) => e.type)).toEqual(['B', 'C']);
    });

    it('rejects no-stream when the stream exists', async () => {
      const s = streamName('contract');
      await store.append(s, [ev('A', 1)], 'no-stream');
      await expect(store.append(s, [ev('B', 2)], 'no-stream')).rejects.toBeInstanceOf(WrongExpectedRevisionError);
      expect(await store.readStream(s)).toHaveLength(1);
    });

    it('rejects a stale expected revision and appends nothing', async () => {
      const s = streamName('contract');
      await store.append(s, [ev('A', 1), ev('B', 2)], 'no-stream');
      await expect(store.append(s, [ev('C', 3)], 0)).rejects.toBeInstanceOf(WrongExpectedRevisionError);
      await expect(store.append(s, [ev('C', 3)], 5)).rejects.toBeInstanceOf(WrongExpectedRevisionError);
      const ok = await store.append(s, [ev('C', 3)], 1);
      expect(ok.nextExpectedRevision).toBe(2);
      expect((await store.readStream(s)).map((e) => e.type)).toEqual(['A', 'B', 'C']);
    });

    it('rejects an expected revision on a stream that does not exist', async () => {
      await expect(store.append(streamName('contract'), [ev('A', 1)], 0)).rejects.toBeInstanceOf(
        WrongExpectedRevisionError,
      );
    });

    it('appends with any whether or not the stream exists', async () => {
      const s = streamName('contract');
      await store.append(s, [ev('A', 1)], 'any');
      const r = await store.append(s, [ev('B', 2)], 'any');
      expect(r.nextExpectedRevision).toBe(1);
    });

    it('lets exactly one of two concurrent appends with the same expected revision win', async () => {
      const s = streamName('contract');
      await store.append(s, [ev('A', 1)], 'no-stream');
      const results = await Promise.allSettled([store.append(s, [ev('B', 2)], 0), store.append(s, [ev('C', 3)], 0)]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const rejected = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(rejected.reason).toBeInstanceOf(WrongExpectedRevisionError);
      expect(await store.readStream(s)).toHaveLength(2);
    });

    it('reads all events after a position, in position order, in pages', async () => {
      const before = (await store.headPosition()) ?? undefined;
      const a = streamName('all-a');
      const b = streamName('all-b');
      await store.append(a, [ev('A', 1)], 'no-stream');
      await store.append(b, [ev('B', 1), ev('B', 2)], 'no-stream');
      await store.append(a, [ev('A', 2)], 0);
      const page1 = (await store.readAll({ after: before, limit: 2 })).filter((e) => e.stream === a || e.stream === b);
      const mine: RecordedEvent[] = [];
      let after = before;
      for (;;) {
        const page = await store.readAll({ after, limit: 2 });
        if (page.length === 0) break;
        expect(page.length).toBeLessThanOrEqual(2);
        mine.push(...page.filter((e) => e.stream === a || e.stream === b));
        after = page.at(-1)!.position;
      }
      expect(mine.map((e) => `${e.stream === a ? 'a' : 'b'}:${e.type}${(e.data as { n: number }).n}`)).toEqual([
        'a:A1',
        'b:B1',
        'b:B2',
        'a:A2',
      ]);
      expect(page1.length).toBeGreaterThan(0);
      const positions = mine.map((e) => e.position);
      expect([...positions].sort((x, y) => x - y)).toEqual(positions);
      expect(await store.headPosition()).toBe(mine.at(-1)!.position);
    });

    it('subscribes: catches up, then follows live appends with no gap and no duplicate', async () => {
      const s = streamName('sub');
      const start = await store.headPosition();
      await store.append(s, [ev('E', 0), ev('E', 1), ev('E', 2)], 'no-stream');
      const total = 60;
      const received = firstValueFrom(store.subscribe(start).pipe(
        // another suite may append to a shared server at the same time: keep only ours
        filter((e) => e.stream === s),
        take(total),
        toArray(),
      ));
      // Appends race the catch-up read: the switch to live must neither drop nor repeat one.
      let revision = 2;
      for (let i = 3; i < total; i += 3) {
        const r = await store.append(s, [ev('E', i), ev('E', i + 1), ev('E', i + 2)], revision);
        revision = r.nextExpectedRevision;
      }
      const events = await received;
      expect(events.map((e) => (e.data as { n: number }).n)).toEqual(Array.from({ length: total }, (_, i) => i));
      expect(new Set(events.map((e) => e.id)).size).toBe(total);
    });

    it('subscribes from a position exclusively', async () => {
      const s = streamName('sub');
      const first = await store.append(s, [ev('E', 0)], 'no-stream');
      await store.append(s, [ev('E', 1)], 0);
      const [next] = await firstValueFrom(store.subscribe(first.position).pipe(filter((e) => e.stream === s), take(1), toArray()));
      expect((next!.data as { n: number }).n).toBe(1);
    });

    it('stops delivering when unsubscribed', async () => {
      const s = streamName('sub');
      const seen: RecordedEvent[] = [];
      const sub = store.subscribe(await store.headPosition()).subscribe((e) => {
        if (e.stream === s) seen.push(e);
      });
      await store.append(s, [ev('E', 0)], 'no-stream');
      await waitUntil(() => seen.length === 1);
      sub.unsubscribe();
      await store.append(s, [ev('E', 1)], 0);
      await new Promise((r) => setTimeout(r, 100));
      expect(seen).toHaveLength(1);
    });
  });
}

export async function waitUntil(check: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}
