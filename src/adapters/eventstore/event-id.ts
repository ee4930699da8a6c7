import { randomFillSync } from 'node:crypto';

const BATCH = 256;
const pool = Buffer.alloc(16 * BATCH);
let used = BATCH;
let lastMs = 0;

/**
 * A new event id: a UUIDv7 (RFC 9562), 48 bits of Unix milliseconds then 74 random bits. Ids
 * that grow with time land at the right edge of the unique index on `events.id` instead of at a
 * random page of it, which keeps appends to a large log as cheap as to a small one. The clock
 * never goes back within a process (a step back of the wall clock keeps the last millisecond).
 */
export function newEventId(): string {
  if (used === BATCH) {
    randomFillSync(pool);
    used = 0;
  }
  const bytes = pool.subarray(used * 16, used * 16 + 16);
  used += 1;
  lastMs = Math.max(lastMs, Date.now());
  bytes.writeUIntBE(lastMs, 0, 6);
  bytes[6] = 0x70 | (bytes[6]! & 0x0f); // version 7
  bytes[8] = 0x80 | (bytes[8]! & 0x3f); // variant 10
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
