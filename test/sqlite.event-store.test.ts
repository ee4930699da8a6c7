import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { SqliteEventStore } from '../src/adapters/eventstore/sqlite.event-store.ts';
import { eventStoreContract } from './contract/event-store.contract.ts';

const dir = mkdtempSync(join(tmpdir(), 'tianqi-sqlite-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
eventStoreContract('SQLite', async () => new SqliteEventStore(join(dir, `events-${n++}.db`)));
