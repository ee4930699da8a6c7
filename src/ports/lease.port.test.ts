import { afterEach, describe, expect, it } from 'vitest';
import { MemoryLeaseStore } from '../adapters/leases/memory.lease-store.ts';
import { LeaseKeeper, type LeaseHolder, type LeaseStore } from './lease.port.ts';

/** A view of a shared store whose answers can be held back, as over a network partition. */
class SlowLink implements LeaseStore {
  /** Delay of each answer; Infinity: none comes. */
  delayMs = 0;

  constructor(private readonly store: LeaseStore) {}

  private answer<T>(value: Promise<T>): Promise<T> {
    if (this.delayMs === 0) return value;
    if (this.delayMs === Number.POSITIVE_INFINITY) return new Promise<T>(() => undefined);
    return value.then((v) => new Promise<T>((resolve) => setTimeout(() => resolve(v), this.delayMs)));
  }

  acquire(name: string, holder: string, ttlMs: number) {
    return this.answer(this.store.acquire(name, holder, ttlMs));
  }
  renew(name: string, holder: string, ttlMs: number) {
    return this.answer(this.store.renew(name, holder, ttlMs));
  }
  async release(name: string, holder: string) {
    if (this.delayMs === 0) await this.store.release(name, holder);
  }
  holderOf(name: string): Promise<LeaseHolder | null> {
    return this.store.holderOf(name);
  }
  async close() {}
}

const timing = { ttlMs: 500, renewEveryMs: 100 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Times (performance.now) at which a keeper's held$ turned true and false. */
function track(keeper: LeaseKeeper) {
  const changes: { held: boolean; at: number }[] = [];
  keeper.held$.subscribe((held) => changes.push({ held, at: performance.now() }));
  return {
    changes,
    get held() {
      return keeper.held;
    },
    firstAt: (held: boolean) => changes.find((c) => c.held === held)?.at,
  };
}

describe('LeaseKeeper', () => {
  const keepers: LeaseKeeper[] = [];
  const keeper = (store: LeaseStore, holder: string) => {
    const k = new LeaseKeeper(store, 'work', holder, timing);
    keepers.push(k);
    return k;
  };
  afterEach(async () => {
    await Promise.all(keepers.splice(0).map((k) => k.stop()));
  });

  it('refuses timings that leave no second renewal before the lease runs out', () => {
    expect(() => new LeaseKeeper(new MemoryLeaseStore(), 'x', 'h', { ttlMs: 1_000, renewEveryMs: 500 })).toThrow(/twice per TTL/);
  });

  it('keeps the lease by renewing it while another keeper waits', async () => {
    const store = new MemoryLeaseStore();
    const a = keeper(store, 'a');
    const b = keeper(store, 'b');
    expect(await a.start()).toBe(true);
    expect(await b.start()).toBe(false);
    await sleep(timing.ttlMs * 3);
    expect([a.held, b.held]).toEqual([true, false]);
  });

  it('hands over at once on stop: the other keeper takes the lease at its next try', async () => {
    const store = new MemoryLeaseStore();
    const a = keeper(store, 'a');
    const b = track(keeper(store, 'b'));
    await a.start();
    await keepers[1]!.start();
    const stopped = performance.now();
    await a.stop();
    while (!b.held) await sleep(5);
    expect(b.firstAt(true)! - stopped).toBeLessThan(timing.renewEveryMs + 50);
  });

  it('stops holding before the lease can run out when the store stops answering; the next holder starts only after', async () => {
    const store = new MemoryLeaseStore();
    const link = new SlowLink(store);
    const a = track(keeper(link, 'a'));
    await keepers[0]!.start();
    const b = track(keeper(store, 'b'));
    await keepers[1]!.start();
    await sleep(150);
    link.delayMs = Number.POSITIVE_INFINITY;
    const cut = performance.now();
    while (!b.held) await sleep(5);
    const lost = a.changes.find((c) => !c.held && c.at > cut)!.at;
    const taken = b.firstAt(true)!;
    // The last renewal went out at most one period before the cut; it is trusted for 4/5 of the TTL.
    expect(lost - cut).toBeLessThan(timing.ttlMs * 0.8 + 20);
    expect(taken).toBeGreaterThan(lost);
    // and the other keeper takes it only once it has run out in the store
    expect(taken - cut).toBeGreaterThan(timing.ttlMs - timing.renewEveryMs - 20);
  });

  it('does not count a renewal that comes back after the lease could have run out', async () => {
    const store = new MemoryLeaseStore();
    const link = new SlowLink(store);
    const a = track(keeper(link, 'a'));
    await keepers[0]!.start();
    link.delayMs = timing.ttlMs;
    const slow = performance.now();
    while (a.held) await sleep(5);
    expect(performance.now() - slow).toBeLessThan(timing.ttlMs * 0.8 + 20);
  });

  it('turns false as soon as a renewal is refused', async () => {
    const store = new MemoryLeaseStore();
    const a = track(keeper(store, 'a'));
    await keepers[0]!.start();
    // taken behind its back (as by a replica that judged it run out)
    await store.release('work', 'a');
    await store.acquire('work', 'intruder', 60_000);
    const taken = performance.now();
    while (a.held) await sleep(5);
    expect(performance.now() - taken).toBeLessThan(timing.renewEveryMs + 50);
  });
});
