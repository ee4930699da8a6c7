import type { LeaseHolder, LeaseStore } from '../../ports/lease.port.ts';

/**
 * Leases inside one process: the default without MongoDB, where one process serves the lab and
 * its one holder is always granted every lease. Exclusive among holders of the same store.
 */
export class MemoryLeaseStore implements LeaseStore {
  private readonly leases = new Map<string, { holder: string; expiresAt: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  async acquire(name: string, holder: string, ttlMs: number): Promise<boolean> {
    const current = this.leases.get(name);
    const now = this.now();
    if (current && current.expiresAt > now && current.holder !== holder) return false;
    this.leases.set(name, { holder, expiresAt: now + ttlMs });
    return true;
  }

  async renew(name: string, holder: string, ttlMs: number): Promise<boolean> {
    const current = this.leases.get(name);
    const now = this.now();
    if (!current || current.holder !== holder || current.expiresAt <= now) return false;
    current.expiresAt = now + ttlMs;
    return true;
  }

  async release(name: string, holder: string): Promise<void> {
    if (this.leases.get(name)?.holder === holder) this.leases.delete(name);
  }

  async holderOf(name: string): Promise<LeaseHolder | null> {
    const current = this.leases.get(name);
    return current && current.expiresAt > this.now() ? { ...current } : null;
  }

  async close(): Promise<void> {}
}
