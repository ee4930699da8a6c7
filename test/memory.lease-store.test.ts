import { MemoryLeaseStore } from '../src/adapters/leases/memory.lease-store.ts';
import { leaseStoreContract } from './contract/lease-store.contract.ts';

leaseStoreContract('memory', async (clock) => {
  const store = new MemoryLeaseStore(clock.now);
  return [store, store];
});
