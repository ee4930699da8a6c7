import type { Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { waitFor } from '../support/fixtures.ts';
import { connected, newSocket } from '../support/sockets.ts';

/**
 * 退出登录 ends the sign-in on the server: the token stops working at once, and so do the live
 * channels opened with it; the user's other sign-ins go on. 退出所有设备 ends every sign-in issued
 * until then; a new sign-in works. State in the event log (user stream), so every replica agrees
 * (replicas.test.ts).
 */
describe('sign-out on the server', () => {
  let t: TestApp;
  let admin: string;
  const sockets: Socket[] = [];
  const me = (token: string) => t.api('GET', '/api/v1/auth/me', { token }).then((r) => r.status);
  const live = async (token: string) => {
    const socket = newSocket(t.url, '/live', token);
    sockets.push(socket);
    const seen = { errors: [] as { code: string }[], disconnectedAt: null as number | null };
    socket.on('error', (e: { code: string }) => seen.errors.push(e));
    socket.on('disconnect', () => (seen.disconnectedAt ??= Date.now()));
    await connected(socket);
    return seen;
  };

  beforeAll(async () => {
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000' });
    admin = await t.login('admin', ADMIN_PASSWORD);
    await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'alice', password: 'alice-password' } });
  });
  afterAll(async () => {
    for (const s of sockets) s.disconnect();
    await t?.stop();
  });

  it('ends this sign-in and its live channel at once; the other sign-in goes on', async () => {
    const laptop = await t.login('alice', 'alice-password');
    const phone = await t.login('alice', 'alice-password');
    const laptopLive = await live(laptop);
    const phoneLive = await live(phone);

    const before = Date.now();
    expect((await t.api('POST', '/api/v1/auth/logout', { token: laptop })).status).toBe(204);
    expect(await me(laptop)).toBe(401);
    expect(await me(phone)).toBe(200);
    await waitFor(async () => laptopLive.disconnectedAt, (at) => at !== null, 2_000);
    expect(laptopLive.disconnectedAt! - before).toBeLessThan(1_000);
    expect(laptopLive.errors.map((e) => e.code)).toContain('SIGNED_OUT');
    expect(phoneLive.disconnectedAt).toBeNull();
    // A second sign-out of the same token is a 401: it is signed out already.
    expect((await t.api('POST', '/api/v1/auth/logout', { token: laptop })).status).toBe(401);
  });

  it('ends every sign-in until now with 退出所有设备, and a new sign-in works', async () => {
    const a = await t.login('alice', 'alice-password');
    const b = await t.login('alice', 'alice-password');
    const bLive = await live(b);
    expect((await t.api('POST', '/api/v1/auth/logout-everywhere', { token: a })).status).toBe(204);
    expect([await me(a), await me(b)]).toEqual([401, 401]);
    await waitFor(async () => bLive.disconnectedAt, (at) => at !== null, 2_000);
    const again = await t.login('alice', 'alice-password');
    expect(await me(again)).toBe(200);
    // The admin's sign-ins are the admin's own.
    expect(await me(admin)).toBe(200);
    const history = await t.api<{ events: { type: string }[] }>('GET', '/api/v1/events?stream=user-', { token: admin });
    expect(history.body.events.map((e) => e.type)).toEqual(expect.arrayContaining(['UserSessionEnded', 'UserSignedOutEverywhere']));
  });
});
