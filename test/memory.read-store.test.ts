import { MemoryReadStore } from '../src/adapters/readstore/memory.read-store.ts';
import { readStoreContract } from './contract/read-store.contract.ts';

readStoreContract('memory', async () => new MemoryReadStore());
