import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { App, type AppOptions } from '../../src/app.ts';
import { loadConfig } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { freePortRange } from './ports.ts';

export const ADMIN_PASSWORD = 'admin-password-1';

export interface TestApp {
  readonly app: App;
  readonly url: string;
  readonly dataDir: string;
  /** Every log line the app wrote, for secret scans. */
  readonly logs: string[];
  api<T = unknown>(method: string, path: string, options?: { token?: string; body?: unknown; headers?: Record<string, string> }): Promise<{ status: number; body: T; headers: Headers }>;
  login(username: string, password: string): Promise<string>;
  stop(options?: { keepData?: boolean }): Promise<void>;
}

/** Starts the whole platform in this process on a free port, over a fresh data directory. */
export async function startTestApp(env: Record<string, string> = {}, options: AppOptions & { dataDir?: string } = {}): Promise<TestApp> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'tianqi-app-'));
  const config = loadConfig({
    TIANQI_DATA_DIR: dataDir,
    TIANQI_HTTP_PORT: '0',
    TIANQI_SSH_PORT: '0',
    TIANQI_HOST: '127.0.0.1',
    TIANQI_ADMIN_PASSWORD: ADMIN_PASSWORD,
    TIANQI_MASTER_KEY: randomBytes(32).toString('base64'),
    TIANQI_LOG_LEVEL: 'info',
    // Each app its own few service ports (the port form of service links).
    TIANQI_SERVICE_PORTS: env.TIANQI_SERVICE_PORTS ?? await freePortRange(8),
    ...env,
  });
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      logs.push(chunk.toString());
      callback();
    },
  });
  const app = new App(config, createLogger(config.logLevel, sink), { announce: (m) => logs.push(m), ...options });
  await app.start();
  const url = `http://127.0.0.1:${app.httpPort}`;
  const api: TestApp['api'] = async (method, path, { token, body, headers = {} } = {}) => {
    const response = await fetch(`${url}${path}`, {
      method,
      headers: {
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...headers,
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await response.text();
    // A download (a log file, an install script) is text; everything else is the API's JSON.
    const json = (response.headers.get('content-type') ?? '').includes('json');
    return { status: response.status, body: (text ? (json ? JSON.parse(text) : text) : undefined) as never, headers: response.headers };
  };
  return {
    app,
    url,
    dataDir,
    logs,
    api,
    async login(username, password) {
      const r = await api<{ token: string }>('POST', '/api/v1/auth/login', { body: { username, password } });
      if (r.status !== 200) throw new Error(`login of ${username} failed: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body.token;
    },
    async stop({ keepData = false } = {}) {
      await app.stop();
      if (!keepData && !options.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
