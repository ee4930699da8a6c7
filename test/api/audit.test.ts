import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';

interface AuditPage {
  events: { position: number; type: string; stream: string; username: string | null; clientIp: string | null; time: string; data: Record<string, unknown> }[];
  next: number | null;
}

describe('audit feed', () => {
  let t: TestApp;
  let admin: string;
  beforeAll(async () => {
    t = await startTestApp();
    admin = await t.login('admin', ADMIN_PASSWORD);
    await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'auditee', password: 'auditee-pass' } });
    await t.api('POST', '/api/v1/images', { token: admin, body: { name: 'img', address: 'busybox:1' } });
    await t.api('POST', '/api/v1/nodes', {
      token: admin,
      body: { name: 'n1', publicIp: '10.0.0.1', privateIp: '10.0.0.1', dockerEndpoint: 'unix:///nonexistent.sock', sshPassword: 'node-ssh-password-77' },
    });
  });
  afterAll(() => t.stop());

  it('lists every event with who, what, when and from where, in pages', async () => {
    const first = await t.api<AuditPage>('GET', '/api/v1/events?limit=3', { token: admin });
    expect(first.status).toBe(200);
    expect(first.body.events).toHaveLength(3);
    expect(first.body.next).toBe(first.body.events[2]!.position);
    const rest = await t.api<AuditPage>('GET', `/api/v1/events?after=${first.body.next}&limit=1000`, { token: admin });
    const all = [...first.body.events, ...rest.body.events];
    expect(rest.body.next).toBeNull();
    expect(all.map((e) => e.position)).toEqual([...all.map((e) => e.position)].sort((a, b) => a - b));
    const registered = all.find((e) => e.type === 'UserRegistered' && e.data.username === 'auditee')!;
    expect(registered).toMatchObject({ username: 'admin', clientIp: expect.stringMatching(/127\.0\.0\.1/) });
    expect(registered.time).toMatch(/^\d{4}-\d\d-\d\dT/);
  });

  it('filters by stream prefix, type (or prefix*), user and time range', async () => {
    const types = await t.api<AuditPage>('GET', '/api/v1/events?type=Image*&limit=100', { token: admin });
    expect(types.body.events.map((e) => e.type)).toEqual(['ImageCreated']);
    const streams = await t.api<AuditPage>('GET', '/api/v1/events?stream=node-&limit=100', { token: admin });
    expect(streams.body.events.every((e) => e.stream.startsWith('node-'))).toBe(true);
    expect(streams.body.events.length).toBeGreaterThanOrEqual(2);
    const byUser = await t.api<AuditPage>('GET', '/api/v1/events?user=auditee&limit=100', { token: admin });
    expect(byUser.body.events).toEqual([]);
    const future = await t.api<AuditPage>('GET', '/api/v1/events?from=2100-01-01T00:00:00Z', { token: admin });
    expect(future.body.events).toEqual([]);
    expect((await t.api('GET', '/api/v1/events?from=yesterday', { token: admin })).status).toBe(400);
  });

  it('never shows secrets: ciphertext and password hashes read [redacted]', async () => {
    const page = await t.api<AuditPage>('GET', '/api/v1/events?limit=1000', { token: admin });
    const text = JSON.stringify(page.body);
    expect(text).not.toContain('node-ssh-password-77');
    expect(text).not.toMatch(/scrypt\$/);
    expect(text).not.toMatch(/"v1\.[A-Za-z0-9_-]+\./);
    const node = page.body.events.find((e) => e.type === 'NodeRegistered')!;
    expect(node.data.sshPasswordSealed).toBe('[redacted]');
    const user = page.body.events.find((e) => e.type === 'UserRegistered')!;
    expect(user.data.passwordHash).toBe('[redacted]');
  });

  it('exports CSV', async () => {
    const response = await fetch(`${t.url}/api/v1/events?format=csv&type=UserRegistered`, { headers: { authorization: `Bearer ${admin}` } });
    expect(response.headers.get('content-type')).toMatch(/text\/csv/);
    const lines = (await response.text()).trim().split('\r\n');
    expect(lines[0]).toBe('position,time,username,userId,clientIp,stream,revision,type,data');
    expect(lines).toHaveLength(3);
    expect(lines[2]).toContain('auditee');
  });

  it('is for admins only', async () => {
    const user = await t.login('auditee', 'auditee-pass');
    expect((await t.api('GET', '/api/v1/events', { token: user })).status).toBe(403);
    expect((await t.api('GET', '/api/v1/events')).status).toBe(401);
  });
});
