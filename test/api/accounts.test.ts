import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';

interface User {
  id: string;
  username: string;
  role: string;
  disabled: boolean;
  displayName: string;
}

describe('accounts over HTTP', () => {
  let t: TestApp;
  let admin: string;
  beforeAll(async () => {
    t = await startTestApp();
    admin = await t.login('admin', ADMIN_PASSWORD);
  });
  afterAll(() => t.stop());

  it('answers health once ready', async () => {
    expect(await t.api('GET', '/api/health')).toMatchObject({ status: 200, body: { status: 'ok' } });
  });

  it('lets the bootstrap admin create a user who can then sign in and see themselves', async () => {
    const created = await t.api<User>('POST', '/api/v1/users', { token: admin, body: { username: 'alice', password: 'alice-pass-1', displayName: '爱丽丝' } });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ username: 'alice', role: 'user', disabled: false, displayName: '爱丽丝' });
    expect(JSON.stringify(created.body)).not.toMatch(/password|hash/i);
    // read-your-writes: the list right after the POST shows the user
    const list = await t.api<User[]>('GET', '/api/v1/users', { token: admin });
    expect(list.body.map((u) => u.username)).toContain('alice');
    const token = await t.login('alice', 'alice-pass-1');
    expect((await t.api<User>('GET', '/api/v1/auth/me', { token })).body).toMatchObject({ id: created.body.id, role: 'user' });
  });

  it('refuses a wrong password, an unknown user and an anonymous call with 401', async () => {
    const wrong = await t.api('POST', '/api/v1/auth/login', { body: { username: 'admin', password: 'nope-nope' } });
    expect(wrong).toMatchObject({ status: 401, body: { error: { code: 'INVALID_CREDENTIALS' } } });
    expect((await t.api('POST', '/api/v1/auth/login', { body: { username: 'ghost', password: 'whatever1' } })).status).toBe(401);
    expect((await t.api('GET', '/api/v1/auth/me')).status).toBe(401);
    expect((await t.api('GET', '/api/v1/auth/me', { token: `${admin.slice(0, -3)}abc` })).status).toBe(401);
  });

  it('rejects a taken username, case-insensitively, naming the field', async () => {
    await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'bob', password: 'bob-pass-1' } });
    const again = await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'BOB', password: 'bob-pass-2' } });
    expect(again.status).toBe(400);
    expect(again.body).toMatchObject({ error: { fields: { username: 'is taken' } } });
  });

  it('registers a name exactly once under concurrent creates', async () => {
    const results = await Promise.all(
      Array.from({ length: 6 }, () => t.api('POST', '/api/v1/users', { token: admin, body: { username: 'racer', password: 'racer-pass' } })),
    );
    expect(results.filter((r) => r.status === 201)).toHaveLength(1);
    expect(results.every((r) => r.status === 201 || r.status === 400 || r.status === 409)).toBe(true);
  });

  it('answers bad input with 400 and the fields, never 500', async () => {
    const bad = await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'x', password: 'short', role: 'root', extra: 1 } });
    expect(bad.status).toBe(400);
    expect(Object.keys((bad.body as { error: { fields: object } }).error.fields).sort()).toEqual(['extra', 'password', 'role', 'username']);
    expect((await t.api('POST', '/api/v1/users', { token: admin, body: '{"username":' })).status).toBe(400);
    expect((await t.api('POST', '/api/v1/users', { token: admin, body: '[1,2]' })).status).toBe(400);
    expect((await t.api('POST', '/api/v1/users', { token: admin, body: 'null' })).status).toBe(400);
    const huge = await t.api('POST', '/api/v1/users', { token: admin, body: JSON.stringify({ username: 'a'.repeat(1_100_000) }) });
    expect(huge.status).toBe(413);
    expect((await t.api('GET', '/api/v1/nope', { token: admin })).status).toBe(404);
  });

  it('keeps admin calls from users: 403, and other users read as 404', async () => {
    const carol = await t.api<User>('POST', '/api/v1/users', { token: admin, body: { username: 'carol', password: 'carol-pass' } });
    const dave = await t.api<User>('POST', '/api/v1/users', { token: admin, body: { username: 'dave', password: 'dave-pass-1' } });
    const token = await t.login('carol', 'carol-pass');
    expect((await t.api('GET', '/api/v1/users', { token })).status).toBe(403);
    expect((await t.api('POST', '/api/v1/users', { token, body: { username: 'mallory', password: 'mallory-1' } })).status).toBe(403);
    expect((await t.api('GET', `/api/v1/users/${dave.body.id}`, { token })).status).toBe(404);
    expect((await t.api('PATCH', `/api/v1/users/${carol.body.id}`, { token, body: { role: 'admin' } })).status).toBe(403);
    const renamed = await t.api<User>('PATCH', `/api/v1/users/${carol.body.id}`, { token, body: { displayName: '卡罗尔' } });
    expect(renamed).toMatchObject({ status: 200, body: { displayName: '卡罗尔', role: 'user' } });
  });

  it('stops a disabled user’s token at once and refuses their login', async () => {
    const erin = await t.api<User>('POST', '/api/v1/users', { token: admin, body: { username: 'erin', password: 'erin-pass-1' } });
    const token = await t.login('erin', 'erin-pass-1');
    expect((await t.api('GET', '/api/v1/auth/me', { token })).status).toBe(200);
    expect((await t.api('PATCH', `/api/v1/users/${erin.body.id}`, { token: admin, body: { disabled: true } })).status).toBe(200);
    expect((await t.api('GET', '/api/v1/auth/me', { token })).status).toBe(401);
    expect((await t.api('POST', '/api/v1/auth/login', { body: { username: 'erin', password: 'erin-pass-1' } })).status).toBe(401);
    await t.api('PATCH', `/api/v1/users/${erin.body.id}`, { token: admin, body: { disabled: false } });
    expect((await t.api('GET', '/api/v1/auth/me', { token })).status).toBe(200);
  });

  it('changes a password: old password and old tokens stop working', async () => {
    await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'frank', password: 'frank-pass-1' } });
    const token = await t.login('frank', 'frank-pass-1');
    const wrong = await t.api('POST', '/api/v1/auth/password', { token, body: { currentPassword: 'nope-nope', newPassword: 'frank-pass-2' } });
    expect(wrong).toMatchObject({ status: 400, body: { error: { fields: { currentPassword: 'is wrong' } } } });
    await new Promise((r) => setTimeout(r, 5));
    const ok = await t.api('POST', '/api/v1/auth/password', { token, body: { currentPassword: 'frank-pass-1', newPassword: 'frank-pass-2' } });
    expect(ok.status).toBe(204);
    expect((await t.api('GET', '/api/v1/auth/me', { token })).status).toBe(401);
    expect((await t.api('POST', '/api/v1/auth/login', { body: { username: 'frank', password: 'frank-pass-1' } })).status).toBe(401);
    await t.login('frank', 'frank-pass-2');
  });

  it('stops a deleted user’s token and frees the name', async () => {
    const gina = await t.api<User>('POST', '/api/v1/users', { token: admin, body: { username: 'gina', password: 'gina-pass-1' } });
    const token = await t.login('gina', 'gina-pass-1');
    expect((await t.api('DELETE', `/api/v1/users/${gina.body.id}`, { token: admin })).status).toBe(204);
    expect((await t.api('GET', '/api/v1/auth/me', { token })).status).toBe(401);
    expect((await t.api('GET', `/api/v1/users/${gina.body.id}`, { token: admin })).status).toBe(404);
    expect((await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'gina', password: 'gina-pass-2' } })).status).toBe(201);
  });

  it('refuses to let the admin disable or delete their own account', async () => {
    const me = await t.api<User>('GET', '/api/v1/auth/me', { token: admin });
    expect((await t.api('PATCH', `/api/v1/users/${me.body.id}`, { token: admin, body: { disabled: true } })).status).toBe(403);
    expect((await t.api('DELETE', `/api/v1/users/${me.body.id}`, { token: admin })).status).toBe(403);
  });

  it('registers SSH keys with the fingerprint ssh-keygen shows, and rejects bad ones', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tianqi-sshkey-'));
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'me@lab', '-f', join(dir, 'id')]);
    const line = readFileSync(join(dir, 'id.pub'), 'utf8');
    const fingerprint = execFileSync('ssh-keygen', ['-lf', join(dir, 'id.pub')]).toString().split(' ')[1];
    const added = await t.api<{ id: string; fingerprint: string; name: string }>('POST', '/api/v1/users/me/ssh-keys', { token: admin, body: { publicKey: line } });
    expect(added).toMatchObject({ status: 201, body: { fingerprint, name: 'me@lab' } });
    expect((await t.api('POST', '/api/v1/users/me/ssh-keys', { token: admin, body: { publicKey: line } })).status).toBe(409);
    const bad = await t.api('POST', '/api/v1/users/me/ssh-keys', { token: admin, body: { publicKey: 'ssh-rsa AAAA' } });
    expect(bad).toMatchObject({ status: 400, body: { error: { fields: { publicKey: expect.any(String) } } } });
    expect((await t.api<unknown[]>('GET', '/api/v1/users/me/ssh-keys', { token: admin })).body).toHaveLength(1);
    expect((await t.api('DELETE', `/api/v1/users/me/ssh-keys/${added.body.id}`, { token: admin })).status).toBe(204);
    expect((await t.api<unknown[]>('GET', '/api/v1/users/me/ssh-keys', { token: admin })).body).toHaveLength(0);
  });

  it('replays the first answer for a repeated Idempotency-Key and appends nothing new', async () => {
    const headers = { 'idempotency-key': 'create-henry-1' };
    const body = { username: 'henry', password: 'henry-pass-1' };
    const first = await t.api<User>('POST', '/api/v1/users', { token: admin, body, headers });
    const head = await t.app.eventStore.headPosition();
    const second = await t.api<User>('POST', '/api/v1/users', { token: admin, body, headers });
    expect(first.status).toBe(201);
    expect(second.status).toBe(201);
    expect(second.body).toEqual(first.body);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    expect(await t.app.eventStore.headPosition()).toBe(head);
    const reused = await t.api('POST', '/api/v1/users', { token: admin, body: { ...body, username: 'henry2' }, headers });
    expect(reused).toMatchObject({ status: 422, body: { error: { code: 'IDEMPOTENCY_KEY_REUSED' } } });
  });

  it('throttles repeated failed logins from one address', async () => {
    let last = 0;
    for (let i = 0; i < 11; i++) {
      last = (await t.api('POST', '/api/v1/auth/login', { body: { username: 'throttled', password: `wrong-${i}` } })).status;
    }
    expect(last).toBe(429);
  });

  it('never writes a password or token into a log line', async () => {
    const text = t.logs.join('');
    for (const secret of [ADMIN_PASSWORD, 'alice-pass-1', 'frank-pass-2', 'eyJ']) expect(text).not.toContain(secret);
  });
});
