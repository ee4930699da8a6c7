import { createConnection, type Socket } from 'node:net';
import ssh2 from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { csvCell } from '../../src/commands/audit/audit.routes.ts';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { freePort } from '../support/ports.ts';
import { MAX_UNAUTHENTICATED_PER_ADDRESS } from '../../src/plugins/jump-host/jump-host.plugin.ts';

/**
 * Attacks from the security review that need no engine: guessing passwords across addresses and
 * across usernames, a spoofed X-Forwarded-For, a formula in a CSV export, a sign-in answer stored
 * by the idempotency layer, a HAMi-core directory of `/`.
 */
describe('Hardening: sign-in throttling, proxies, exports', () => {
  let t: TestApp;
  let admin: string;
  const login = (username: string, password: string, forwardedFor?: string) =>
    t.api<{ token?: string; error?: { code: string } }>('POST', '/api/v1/auth/login', {
      body: { username, password },
      ...(forwardedFor ? { headers: { 'x-forwarded-for': forwardedFor } } : {}),
    });

  let sshPort: number;
  /** An SSH password sign-in from a given loopback address: 'ok', or how it was refused. */
  const sshLogin = (username: string, password: string, localAddress: string) =>
    new Promise<'ok' | 'refused'>((resolve) => {
      const client = new ssh2.Client();
      client.on('ready', () => {
        client.end();
        resolve('ok');
      });
      client.on('error', () => resolve('refused'));
      client.connect({ host: '127.0.0.1', port: sshPort, localAddress, username, password, readyTimeout: 10_000, hostVerifier: () => true, tryKeyboard: false });
    });

  beforeAll(async () => {
    sshPort = await freePort();
    // One trusted proxy in front: the client is the rightmost X-Forwarded-For entry.
    t = await startTestApp({ TIANQI_TRUST_PROXY: '1', TIANQI_SSH_PORT: String(sshPort) });
    admin = await t.login('admin', ADMIN_PASSWORD);
    for (const name of ['victim', 'other', 'spare', 'sshvictim']) {
      await t.api('POST', '/api/v1/users', { token: admin, body: { username: name, password: `${name}-password` } });
    }
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('blocks a username after 20 wrong passwords from 20 addresses, for everyone, while the right one from elsewhere waits too', async () => {
    for (let i = 1; i <= 20; i += 1) {
      const r = await login('victim', 'guess', `10.1.0.${i}`);
      expect(r.status, `attempt ${i}`).toBe(401);
    }
    const blocked = await login('victim', 'victim-password', '10.9.9.9');
    expect(blocked.status).toBe(429);
    expect(blocked.body.error?.code).toBe('TOO_MANY_ATTEMPTS');
    // other users are not affected
    expect((await login('other', 'other-password', '10.9.9.9')).status).toBe(200);
  });

  it('blocks an address after 30 wrong passwords across usernames', async () => {
    for (let i = 1; i <= 30; i += 1) {
      const r = await login(`nobody-${i}`, 'guess', '10.2.0.1');
      expect(r.status, `attempt ${i}`).toBe(401);
    }
    expect((await login('spare', 'spare-password', '10.2.0.1')).status).toBe(429);
    expect((await login('spare', 'spare-password', '10.2.0.2')).status).toBe(200);
  });

  it('takes the rightmost X-Forwarded-For hop: a client rotating what it puts in front stays one address', async () => {
    for (let i = 1; i <= 10; i += 1) {
      // the client writes a new leftmost entry every time; the proxy appends the real address
      const r = await login('spare', 'guess', `203.0.113.${i}, 10.3.0.1`);
      expect(r.status).toBe(401);
    }
    expect((await login('spare', 'spare-password', '198.51.100.7, 10.3.0.1')).status).toBe(429);
    const events = await t.api<{ events: { clientIp: string | null; type: string }[] }>('GET', '/api/v1/events?type=UserRegistered', { token: admin });
    expect(events.status).toBe(200);
  });

  it('counts wrong current passwords at /auth/password like sign-ins', async () => {
    const token = await t.login('other', 'other-password');
    for (let i = 1; i <= 10; i += 1) {
      const r = await t.api('POST', '/api/v1/auth/password', { token, body: { currentPassword: `wrong-${i}`, newPassword: 'a-new-password' } });
      expect(r.status).toBe(400);
    }
    const r = await t.api<{ error: { code: string } }>('POST', '/api/v1/auth/password', { token, body: { currentPassword: 'other-password', newPassword: 'a-new-password' } });
    expect(r.status).toBe(429);
    expect(r.body.error.code).toBe('TOO_MANY_ATTEMPTS');
  });

  it('never stores a sign-in answer under an Idempotency-Key', async () => {
    const headers = { 'idempotency-key': 'login-1', 'x-forwarded-for': '10.4.0.1' };
    const first = await t.api<{ token: string }>('POST', '/api/v1/auth/login', { token: admin, headers, body: { username: 'admin', password: ADMIN_PASSWORD } });
    const second = await t.api<{ token: string }>('POST', '/api/v1/auth/login', { token: admin, headers, body: { username: 'admin', password: ADMIN_PASSWORD } });
    expect(first.status).toBe(200);
    expect(second.headers.get('idempotent-replayed')).toBeNull();
    const log = await t.app.eventStore.readAll({ limit: 100_000 });
    const stored = log.filter((e) => e.stream.startsWith('idempotency-'));
    expect(JSON.stringify(stored)).not.toContain(first.body.token);
    expect(stored).toEqual([]);
  });

  it('records no client address that is not an address (a formula in X-Forwarded-For), and exports formulas as text', async () => {
    await login('spare', 'guess', '=HYPERLINK("http://evil")');
    const log = await t.app.eventStore.readAll({ limit: 100_000 });
    expect(JSON.stringify(log)).not.toContain('HYPERLINK');
    expect(csvCell('=HYPERLINK("http://evil")')).toBe(`"'=HYPERLINK(""http://evil"")"`);
    for (const formula of ['+cmd', '-2+3', '@SUM(A1)', '\tx']) expect(csvCell(formula)).toMatch(/^"?'/);
    expect(csvCell('zhangsan')).toBe('zhangsan');
    expect(csvCell(-3)).toBe('-3');
  });

  it('refuses a HAMi-core directory that is not an absolute directory other than /', async () => {
    for (const hamiCoreDir of ['/', 'relative/dir', '/opt/../', '//']) {
      const r = await t.api<{ error: { fields: Record<string, string> } }>('POST', '/api/v1/nodes', {
        token: admin,
        body: { name: `n-${hamiCoreDir.length}`, publicIp: '127.0.0.1', privateIp: '127.0.0.1', dockerEndpoint: 'unix:///nonexistent.sock', cpuCores: 1, memoryGb: 1, hamiCoreDir },
      });
      expect(r.status, hamiCoreDir).toBe(400);
      expect(r.body.error.fields.hamiCoreDir, hamiCoreDir).toMatch(/absolute directory other than \//);
    }
  });

  it('SSH: password guesses at one username from 20 addresses block it there and over HTTP too', async () => {
    for (let i = 2; i <= 21; i += 1) expect(await sshLogin('sshvictim', 'guess', `127.0.0.${i}`), `attempt ${i}`).toBe('refused');
    expect(await sshLogin('sshvictim', 'sshvictim-password', '127.0.0.40')).toBe('refused');
    expect((await login('sshvictim', 'sshvictim-password', '10.5.0.1')).status).toBe(429);
    expect(await sshLogin('other', 'other-password', '127.0.0.40')).toBe('ok');
  }, 60_000);

  it(`SSH: an address holds at most ${MAX_UNAUTHENTICATED_PER_ADDRESS} connections that have not signed in; one more is closed at once`, async () => {
    const sockets = await Promise.all(Array.from({ length: MAX_UNAUTHENTICATED_PER_ADDRESS }, () => new Promise<Socket>((resolve) => {
      const socket = createConnection({ host: '127.0.0.1', port: sshPort, localAddress: '127.0.0.50' }, () => resolve(socket));
    })));
    // each holds its slot: it sent its banner and nothing more
    for (const socket of sockets) socket.resume().write('SSH-2.0-OpenSSH_9.2\r\n');
    await new Promise((r) => setTimeout(r, 300));
    const openedAt = Date.now();
    const closedAt = await new Promise<number>((resolve) => {
      const extra = createConnection({ host: '127.0.0.1', port: sshPort, localAddress: '127.0.0.50' }, () => extra.write('SSH-2.0-OpenSSH_9.2\r\n'));
      extra.resume();
      extra.on('close', () => resolve(Date.now()));
      extra.on('error', () => undefined);
    });
    expect(closedAt - openedAt).toBeLessThan(1_000);
    expect(sockets.every((socket) => !socket.destroyed)).toBe(true);
    // another address is still served, and the slots come back when those connections go
    expect(await sshLogin('spare', 'spare-password', '127.0.0.51')).toBe('ok');
    for (const socket of sockets) socket.destroy();
    await new Promise((r) => setTimeout(r, 300));
    expect(await sshLogin('other', 'other-password', '127.0.0.50')).toBe('ok');
  }, 30_000);

  it('sends nosniff and no-store on API answers', async () => {
    const r = await t.api('GET', '/api/v1/auth/me', { token: admin });
    expect(r.headers.get('x-content-type-options')).toBe('nosniff');
    expect(r.headers.get('cache-control')).toBe('no-store');
  });
});
