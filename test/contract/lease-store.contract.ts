import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LeaseStore } from '../../src/ports/lease.port.ts';

/** A wall clock the test moves by hand; both stores of a contract run read the same one. */
export class TestClock {
  ms = Date.parse('2026-01-01T00:00:00Z');
  readonly now = () => this.ms;
  advance(ms: number): void {
    this.ms += ms;
  }
}

const TTL = 10_000;

/**
 * One behaviour contract for every LeaseStore adapter. `open` returns two stores over the same
 * leases (for a server-backed adapter: two separate connections), both on `clock`.
 */
export function leaseStoreContract(name: string, open: (clock: TestClock) => Promise<[LeaseStore, LeaseStore]>) {
  describe(`LeaseStore contract: ${name}`, () => {
    const clock = new TestClock();
    let a: LeaseStore;
    let b: LeaseStore;
    beforeAll(async () => {
      [a, b] = await open(clock);
    });
    afterAll(async () => {
      await a?.close();
      if (b !== a) await b?.close();
    });
    const lease = () => `lease-${randomUUID().slice(0, 8)}`;

    it('grants a free lease to the first holder and refuses a second while it is held', async () => {
      const name = lease();
      expect(await a.holderOf(name)).toBeNull();
      expect(await a.acquire(name, 'one', TTL)).toBe(true);
      expect(await b.acquire(name, 'two', TTL)).toBe(false);
      expect(await b.holderOf(name)).toEqual({ holder: 'one', expiresAt: clock.ms + TTL });
      expect(await b.renew(name, 'two', TTL)).toBe(false);
    });

    it('keeps the lease with its holder while it renews it, past the first TTL', async () => {
      const name = lease();
      expect(await a.acquire(name, 'one', TTL)).toBe(true);
      for (let i = 0; i < 5; i++) {
        clock.advance(TTL / 2);
        expect(await a.renew(name, 'one', TTL)).toBe(true);
        expect(await b.acquire(name, 'two', TTL)).toBe(false);
      }
      // taking a lease one already holds renews it
      clock.advance(TTL / 2);
      expect(await a.acquire(name, 'one', TTL)).toBe(true);
      expect((await b.holderOf(name))?.expiresAt).toBe(clock.ms + TTL);
    });

    it('hands a lease that ran out to the next holder; the old holder can no longer renew it', async () => {
      const name = lease();
      expect(await a.acquire(name, 'one', TTL)).toBe(true);
      clock.advance(TTL - 1);
      expect(await b.acquire(name, 'two', TTL)).toBe(false);
      clock.advance(1);
      expect(await a.holderOf(name)).toBeNull();
      expect(await b.acquire(name, 'two', TTL)).toBe(true);
      expect(await a.renew(name, 'one', TTL)).toBe(false);
      expect(await a.acquire(name, 'one', TTL)).toBe(false);
      expect((await a.holderOf(name))?.holder).toBe('two');
    });

    it('hands a released lease over at once; a release by another holder changes nothing', async () => {
      const name = lease();
      expect(await a.acquire(name, 'one', TTL)).toBe(true);
      await b.release(name, 'two');
      expect((await b.holderOf(name))?.holder).toBe('one');
      await a.release(name, 'one');
      expect(await a.holderOf(name)).toBeNull();
      expect(await a.renew(name, 'one', TTL)).toBe(false);
      expect(await b.acquire(name, 'two', TTL)).toBe(true);
      expect((await a.holderOf(name))?.holder).toBe('two');
    });

    it('keeps leases apart by name', async () => {
      const [x, y] = [lease(), lease()];
      expect(await a.acquire(x, 'one', TTL)).toBe(true);
      expect(await b.acquire(y, 'two', TTL)).toBe(true);
      expect((await a.holderOf(x))?.holder).toBe('one');
      expect((await a.holderOf(y))?.holder).toBe('two');
    });

    it('never grants one lease to two holders racing for it, free or run out', async () => {
      const holders = ['h0', 'h1', 'h2', 'h3', 'h4', 'h5'];
      for (let round = 0; round < 25; round++) {
        const name = lease();
        // a free lease, then the same lease once it ran out, then once it was released
        for (const phase of ['free', 'ran out', 'released']) {
          const answers = await Promise.all(holders.map((h, i) => (i % 2 === 0 ? a : b).acquire(name, h, TTL)));
          const winners = holders.filter((_, i) => answers[i]);
          expect(winners, `round ${round}, ${phase}`).toHaveLength(1);
          expect((await a.holderOf(name))?.holder).toBe(winners[0]);
          if (phase === 'free') clock.advance(TTL);
          else await (holders.indexOf(winners[0]!) % 2 === 0 ? a : b).release(name, winners[0]!);
        }
      }
    });

    it('never lets a renewal race keep a lease another holder took after it ran out', async () => {
      for (let round = 0; round < 25; round++) {
        const name = lease();
        expect(await a.acquire(name, 'old', TTL)).toBe(true);
        clock.advance(TTL);
        const [renewed, taken] = await Promise.all([a.renew(name, 'old', TTL), b.acquire(name, 'new', TTL)]);
        expect(renewed && taken, `round ${round}: both hold it`).toBe(false);
        expect(taken).toBe(true);
        expect((await a.holderOf(name))?.holder).toBe('new');
      }
    });
  });
}
