import { describe, expect, it } from 'vitest';
import { signInStands } from './accounts.ts';

describe('signInStands: whether a sign-in still counts', () => {
  const issuedAtMs = Date.parse('2026-12-06T10:00:00.500Z');
  it('ends a sign-in ended by itself, and none other', () => {
    const user = { endedSessions: [{ sessionId: 's1', expiresAt: '2026-12-06T22:00:00.000Z' }] };
    expect(signInStands(user, { id: 's1', issuedAtMs })).toBe(false);
    expect(signInStands(user, { id: 's2', issuedAtMs })).toBe(true);
    // Tokens of older versions have no id: only a sign-out everywhere ends them.
    expect(signInStands(user, { issuedAtMs })).toBe(true);
  });

  it('ends every sign-in issued until a sign-out everywhere, to the millisecond, and none after', () => {
    const user = { signedOutEverywhereAt: '2026-12-06T10:00:00.500Z' };
    expect(signInStands(user, { id: 'a', issuedAtMs })).toBe(false);
    expect(signInStands(user, { id: 'b', issuedAtMs: issuedAtMs - 1 })).toBe(false);
    expect(signInStands(user, { id: 'c', issuedAtMs: issuedAtMs + 1 })).toBe(true);
    expect(signInStands({}, { id: 'd', issuedAtMs })).toBe(true);
  });
});
