import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort } from './support/ports.ts';

const root = join(import.meta.dirname, '..');

function startServer(env: Record<string, string>) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: root,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, output: () => output, exited };
}

async function waitForHealth(url: string, output: () => string) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ok = await fetch(`${url}/api/health`).then((r) => r.status === 200, () => false);
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`server did not become healthy:\n${output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('the server process', () => {
  it('starts on a fresh data dir, prints a generated admin password once, serves logins, and stops cleanly on SIGTERM', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'tianqi-proc-'));
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const server = startServer({ TIANQI_DATA_DIR: dataDir, TIANQI_HTTP_PORT: String(port), TIANQI_HOST: '127.0.0.1', TIANQI_SSH_PORT: '0' });
    try {
      await waitForHealth(url, server.output);
      const password = /password\s+(\S+)/.exec(server.output())?.[1];
      expect(password, server.output()).toBeDefined();
      expect(statSync(join(dataDir, 'master.key')).mode & 0o777).toBe(0o600);
      const post = (path: string, body: unknown, token?: string) =>
        fetch(`${url}${path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
          body: JSON.stringify(body),
        });
      const admin = (await (await post('/api/v1/auth/login', { username: 'admin', password })).json()) as { token: string };
      expect((await post('/api/v1/users', { username: 'lab-user', password: 'lab-user-pw' }, admin.token)).status).toBe(201);
      expect((await post('/api/v1/auth/login', { username: 'lab-user', password: 'lab-user-pw' })).status).toBe(200);
      // JSON log lines, none of them carrying the password
      const logLines = server.output().split('\n').filter((l) => l.startsWith('{'));
      expect(logLines.length).toBeGreaterThan(0);
      for (const line of logLines) expect(line).not.toContain(password!);
    } finally {
      server.child.kill('SIGTERM');
    }
    expect(await server.exited).toBe(0);
    expect(server.output()).toContain('"msg":"stopped"');

    // A second start over the same data dir generates no new password and keeps the accounts.
    const again = startServer({ TIANQI_DATA_DIR: dataDir, TIANQI_HTTP_PORT: String(port), TIANQI_HOST: '127.0.0.1', TIANQI_SSH_PORT: '0' });
    try {
      await waitForHealth(url, again.output);
      expect(again.output()).not.toContain('First start');
      const login = await fetch(`${url}/api/v1/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: 'lab-user', password: 'lab-user-pw' }),
      });
      expect(login.status).toBe(200);
      expect(readFileSync(join(dataDir, 'master.key'), 'utf8').trim()).toHaveLength(44);
    } finally {
      again.child.kill('SIGTERM');
    }
    expect(await again.exited).toBe(0);
  }, 90_000);

  it('refuses to start with a bad setting and names it', async () => {
    const server = startServer({ TIANQI_HTTP_PORT: 'eighty', TIANQI_MONGO_URL: 'http://nope' });
    expect(await server.exited).toBe(2);
    expect(server.output()).toContain('TIANQI_HTTP_PORT');
    expect(server.output()).toContain('TIANQI_MONGO_URL');
  });
});
