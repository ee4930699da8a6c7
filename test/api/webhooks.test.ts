import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { waitFor } from '../support/fixtures.ts';

interface Delivery {
  readonly raw: string;
  readonly headers: IncomingHttpHeaders;
  readonly event: { id: string; type: string; stream: string; revision: number; position: number; time: string; data: Record<string, unknown> };
  /** The status the receiver answered (set once it answered). */
  status?: number;
}
interface Webhook { id: string; url: string; events: string[]; description: string; hasSecret: boolean; createdAt: string }
interface Attempt { eventId: string; type: string; position: number; attempt: number; status: number | null; error: string | null; durationMs: number; at: string }
type ErrorBody = { error: { code: string; fields?: Record<string, string> } };

/** A real HTTP receiver on 127.0.0.1 that answers with what `answer` says for the n-th request (1-based). */
async function startReceiver(answer: (delivery: Delivery, n: number) => number | Promise<number> = () => 200) {
  const received: Delivery[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const delivery: Delivery = { raw, headers: req.headers, event: JSON.parse(raw) as Delivery['event'] };
      received.push(delivery);
      void Promise.resolve(answer(delivery, received.length)).then((status) => {
        delivery.status = status;
        res.writeHead(status).end();
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    received,
    acknowledged: () => received.filter((d) => d.status !== undefined && d.status < 300).map((d) => d.event.id),
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const SECRET = 'whsec-0123456789-abcdefghij';

beforeAll(() => {
  vi.stubEnv('TIANQI_WEBHOOK_RETRY_BASE_MS', '50');
});
afterAll(() => {
  vi.unstubAllEnvs();
});

describe('webhooks', () => {
  let t: TestApp;
  let admin: string;
  let user: string;
  /** Every response body the tests saw, for the secret scan. */
  const answers: string[] = [];
  const api = async <T>(method: string, path: string, options: { token?: string; body?: unknown } = {}) => {
    const r = await t.api<T>(method, path, { token: admin, ...options });
    answers.push(JSON.stringify(r.body ?? null));
    return r;
  };
  const register = async (url: string, events: string[], secret = SECRET) => {
    const r = await api<Webhook>('POST', '/api/v1/webhooks', { body: { url, events, secret, description: 'test receiver' } });
    expect(r.status).toBe(201);
    return r.body;
  };
  const receivers: Awaited<ReturnType<typeof startReceiver>>[] = [];
  const receiver = async (answer?: Parameters<typeof startReceiver>[0]) => {
    const r = await startReceiver(answer);
    receivers.push(r);
    return r;
  };

  beforeAll(async () => {
    t = await startTestApp();
    admin = await t.login('admin', ADMIN_PASSWORD);
    await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'hookless', password: 'hookless-password' } });
    user = await t.login('hookless', 'hookless-password');
  });
  afterAll(async () => {
    await t.stop();
    await Promise.all(receivers.map((r) => r.close()));
  });

  it('POSTs a matching event signed with the secret, without the secrets of the event', async () => {
    const rx = await receiver();
    const hook = await register(rx.url, ['UserRegistered']);
    expect(hook).toMatchObject({ url: rx.url, events: ['UserRegistered'], hasSecret: true, description: 'test receiver' });
    expect(hook).not.toHaveProperty('secret');
    await api('POST', '/api/v1/users', { body: { username: 'signed', password: 'signed-password' } });
    const [delivery] = await waitFor(async () => rx.received, (r) => r.length >= 1);
    const expected = `sha256=${createHmac('sha256', SECRET).update(delivery!.raw).digest('hex')}`;
    expect(delivery!.headers['x-tianqi-signature']).toBe(expected);
    expect(delivery!.headers['content-type']).toBe('application/json');
    expect(delivery!.headers['x-tianqi-event-id']).toBe(delivery!.event.id);
    expect(Object.keys(delivery!.event).sort()).toEqual(['data', 'id', 'position', 'revision', 'stream', 'time', 'type']);
    expect(delivery!.event).toMatchObject({ type: 'UserRegistered', revision: 0, stream: expect.stringMatching(/^user-/) });
    expect(delivery!.event.data).toMatchObject({ username: 'signed', passwordHash: '[redacted]' });
    expect(rx.received).toHaveLength(1);
  });

  it('redacts sealed node secrets before they leave the platform', async () => {
    const rx = await receiver();
    await register(rx.url, ['Node*']);
    const node = await api<{ id: string }>('POST', '/api/v1/nodes', {
      body: { name: 'hooked', publicIp: '10.0.0.9', privateIp: '10.0.0.9', dockerEndpoint: 'unix:///nonexistent.sock', sshPassword: 'node-ssh-password-91' },
    });
    expect(node.status).toBe(201);
    const registered = await waitFor(async () => rx.received.find((d) => d.event.type === 'NodeRegistered'), Boolean);
    expect(registered!.event.data).toMatchObject({ sshPasswordSealed: '[redacted]', tlsKeySealed: null, publicIp: '10.0.0.9' });
    expect(registered!.raw).not.toContain('node-ssh-password-91');
  });

  it('retries a failing receiver with backoff and keeps the order: 500, 500, 200, then the next event', async () => {
    const rx = await receiver((_d, n) => (n <= 2 ? 500 : 200));
    const hook = await register(rx.url, ['ImageCreated']);
    const a = await api<{ id: string }>('POST', '/api/v1/images', { body: { name: 'first', address: 'busybox:1' } });
    const b = await api<{ id: string }>('POST', '/api/v1/images', { body: { name: 'second', address: 'busybox:2' } });
    await waitFor(async () => rx.received, (r) => r.length >= 4);
    await sleep(300);
    const imageIds = rx.received.map((d) => d.event.data.imageId);
    expect(imageIds).toEqual([a.body.id, a.body.id, a.body.id, b.body.id]);
    expect(rx.received.map((d) => d.status)).toEqual([500, 500, 200, 200]);

    const attempts = await waitFor(
      async () => (await api<Attempt[]>('GET', `/api/v1/webhooks/${hook.id}/deliveries`)).body,
      (list) => list.length === 4,
    );
    expect(attempts.map((x) => [x.attempt, x.status])).toEqual([[1, 200], [3, 200], [2, 500], [1, 500]]);
    expect(attempts[2]!.error).toMatch(/500/);
    expect(attempts[0]!.error).toBeNull();
    expect(attempts[1]!.eventId).toBe(rx.received[0]!.event.id);
    expect(attempts[0]).toMatchObject({ type: 'ImageCreated', eventId: rx.received[3]!.event.id, position: rx.received[3]!.event.position });
  });

  it('never lets a slow receiver delay another webhook or the API', async () => {
    const slow = await receiver(async () => {
      await sleep(3_000);
      return 200;
    });
    const fast = await receiver();
    await register(slow.url, ['SpecCreated']);
    await register(fast.url, ['SpecCreated']);
    const started = Date.now();
    const spec = await api('POST', '/api/v1/specs', { body: { name: 'slow hooks', cpuCores: 1, memoryGb: 1, pricePerHour: 1 } });
    expect(spec.status).toBe(201);
    expect(Date.now() - started).toBeLessThan(1_000);
    await waitFor(async () => fast.acknowledged(), (ids) => ids.length === 1, 2_000);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(slow.received).toHaveLength(1);
    expect(slow.acknowledged()).toEqual([]);
  });

  it('stops delivering to a deleted webhook', async () => {
    const rx = await receiver();
    const hook = await register(rx.url, ['ImageDeleted']);
    expect((await api('DELETE', `/api/v1/webhooks/${hook.id}`)).status).toBe(204);
    const image = await api<{ id: string }>('POST', '/api/v1/images', { body: { name: 'doomed', address: 'busybox:3' } });
    await api('DELETE', `/api/v1/images/${image.body.id}`);
    await sleep(300);
    expect(rx.received).toEqual([]);
    expect((await api('GET', `/api/v1/webhooks/${hook.id}/deliveries`)).status).toBe(404);
    expect((await api('DELETE', `/api/v1/webhooks/${hook.id}`)).status).toBe(404);
    expect((await api<Webhook[]>('GET', '/api/v1/webhooks')).body.some((w) => w.id === hook.id)).toBe(false);
  });

  it('accepts only http and https URLs, at least one event type and a 16–256 character secret', async () => {
    for (const url of ['ftp://example.com/hook', 'file:///etc/passwd', 'javascript:alert(1)', 'not a url', '', 'http://user:pass@example.com/']) {
      const r = await api<ErrorBody>('POST', '/api/v1/webhooks', { body: { url, events: ['*'], secret: SECRET } });
      expect(r.status, url).toBe(400);
      expect(r.body.error.fields, url).toHaveProperty('url');
    }
    const cases: [Record<string, unknown>, string][] = [
      [{ events: [] }, 'events'],
      [{ events: ['Instance**'] }, 'events.0'],
      [{ events: ['has space'] }, 'events.0'],
      [{ secret: 'short' }, 'secret'],
      [{ secret: 'x'.repeat(257) }, 'secret'],
      [{ colour: 'red' }, 'colour'],
    ];
    for (const [change, field] of cases) {
      const r = await api<ErrorBody>('POST', '/api/v1/webhooks', { body: { url: 'https://example.com/hook', events: ['*'], secret: SECRET, ...change } });
      expect(r.status, JSON.stringify(change)).toBe(400);
      expect(r.body.error.fields, JSON.stringify(change)).toHaveProperty([field]);
    }
  });

  it('keeps the platform\'s webhooks the admins\': a user sees none of them, may not add one (403) nor touch one (404), and nothing changes', async () => {
    const hook = (await api<Webhook[]>('GET', '/api/v1/webhooks')).body[0]!;
    const before = await t.app.eventStore.headPosition();
    const seen = await api<Webhook[]>('GET', '/api/v1/webhooks', { token: user });
    expect(seen.status).toBe(200);
    expect(seen.body).toEqual([]);
    expect((await api('POST', '/api/v1/webhooks', { token: user, body: { url: 'https://example.com/', events: ['*'], secret: SECRET, scope: 'platform' } })).status).toBe(403);
    expect((await api('DELETE', `/api/v1/webhooks/${hook.id}`, { token: user })).status).toBe(404);
    expect((await api('GET', `/api/v1/webhooks/${hook.id}/deliveries`, { token: user })).status).toBe(404);
    expect((await t.api('GET', '/api/v1/webhooks')).status).toBe(401);
    expect(await t.app.eventStore.headPosition()).toBe(before);
  });

  it('keeps the secret write-only: never in an answer, a log line or the event log', async () => {
    answers.push(JSON.stringify((await api('GET', '/api/openapi.json')).body));
    expect(answers.join('\n')).not.toContain(SECRET);
    expect(t.logs.join('\n')).not.toContain(SECRET);
    const events = await t.app.eventStore.readAll({ limit: 100_000 });
    const registered = events.filter((e) => e.type === 'WebhookRegistered');
    expect(registered.length).toBeGreaterThan(0);
    expect(JSON.stringify(events)).not.toContain(SECRET);
    expect(JSON.stringify(events)).not.toContain('node-ssh-password-91');
  });
});

describe('webhooks across a restart', () => {
  it('resumes from the checkpoint: nothing acknowledged is sent again, nothing is lost', async () => {
    let down = false;
    const rx = await startReceiver(() => (down ? 503 : 200));
    const dataDir = mkdtempSync(join(tmpdir(), 'tianqi-webhooks-'));
    const env = { TIANQI_MASTER_KEY: randomBytes(32).toString('base64') };
    const userIds: string[] = [];
    const createUser = async (t: TestApp, token: string, name: string) => {
      const r = await t.api<{ id: string }>('POST', '/api/v1/users', { token, body: { username: name, password: `${name}-password` } });
      userIds.push(r.body.id);
    };
    const userIdOf = (d: Delivery) => d.event.data.userId as string;
    try {
      const first = await startTestApp(env, { dataDir });
      const admin = await first.login('admin', ADMIN_PASSWORD);
      const hook = (await first.api<Webhook>('POST', '/api/v1/webhooks', { token: admin, body: { url: rx.url, events: ['UserRegistered'], secret: SECRET } })).body;
      for (const name of ['before1', 'before2', 'before3']) await createUser(first, admin, name);
      // acknowledged as far as the platform knows: its delivery log shows all three answered 200
      await waitFor(
        async () => (await first.api<Attempt[]>('GET', `/api/v1/webhooks/${hook.id}/deliveries`, { token: admin })).body,
        (list) => list.filter((a) => a.status === 200).length === 3,
      );
      down = true;
      await createUser(first, admin, 'pending4');
      await waitFor(async () => rx.received.filter((d) => userIdOf(d) === userIds[3]), (r) => r.length >= 2);
      await first.stop({ keepData: true });

      down = false;
      const second = await startTestApp(env, { dataDir });
      try {
        await createUser(second, admin, 'after5');
        await waitFor(async () => rx.acknowledged(), (ids) => ids.length === 5);
        await sleep(300);
        const timesReceived = (id: string) => rx.received.filter((d) => userIdOf(d) === id).length;
        expect(userIds.slice(0, 3).map(timesReceived)).toEqual([1, 1, 1]);
        expect(timesReceived(userIds[3]!)).toBeGreaterThanOrEqual(3);
        expect(timesReceived(userIds[4]!)).toBe(1);
        const acknowledgedUsers = rx.received.filter((d) => d.status === 200).map(userIdOf);
        expect(acknowledgedUsers).toEqual(userIds);
        // the delivery log survived the restart too
        const attempts = await waitFor(
          async () => (await second.api<Attempt[]>('GET', `/api/v1/webhooks/${hook.id}/deliveries`, { token: admin })).body,
          (list) => list.filter((a) => a.status === 200).length === 5,
        );
        expect(attempts.some((a) => a.status === 503)).toBe(true);
        expect(second.logs.join('\n')).not.toContain(SECRET);
      } finally {
        await second.stop();
      }
    } finally {
      await rx.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
