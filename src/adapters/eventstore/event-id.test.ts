import { afterEach, describe, expect, it, vi } from 'vitest';
import { newEventId } from './event-id.ts';

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('newEventId', () => {
  afterEach(() => vi.useRealTimers());

  it('is a UUIDv7 whose first 48 bits are the current Unix milliseconds', () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 10, 26, 12), toFake: ['Date'] });
    const id = newEventId();
    expect(id).toMatch(UUID_V7);
    expect(parseInt(id.replace(/-/g, '').slice(0, 12), 16)).toBe(Date.UTC(2026, 10, 26, 12));
  });

  it('sorts by creation time across milliseconds, and is unique within one (over several random pools)', () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 10, 26, 13), toFake: ['Date'] });
    const ids: string[] = [];
    for (let ms = 0; ms < 4; ms++) {
      for (let i = 0; i < 300; i++) ids.push(newEventId());
      vi.advanceTimersByTime(1);
    }
    expect(new Set(ids).size).toBe(ids.length);
    const prefixes = ids.map((id) => id.slice(0, 13));
    expect([...prefixes].sort()).toEqual(prefixes);
    expect(new Set(prefixes).size).toBe(4);
  });

  it('never goes back when the wall clock does', () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 10, 26, 14), toFake: ['Date'] });
    const before = newEventId();
    vi.setSystemTime(Date.UTC(2026, 10, 26, 13, 59));
    expect(newEventId().slice(0, 13) >= before.slice(0, 13)).toBe(true);
  });
});
