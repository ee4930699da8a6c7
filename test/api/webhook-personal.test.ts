import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, runningInstance, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;

/**
 * A user's own webhook (scope mine): with every event type asked for, only the events of the
 * instances that user owns reach it; another user's instance and the platform's other events never do.
 */
describeWithService('Docker engine', Boolean(socketPath), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'a user\'s own webhook', () => {
  let t: TestApp;
  let lab: Lab;
  const received: { type: string; stream: string }[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as { type: string; stream: string });
      res.writeHead(200).end();
    });
  });

  beforeAll(async () => {
    vi.stubEnv('TIANQI_WEBHOOK_RETRY_BASE_MS', '50');
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000' });
    lab = await setUpLab(t, socketPath!, ['alice', 'bob']);
  }, 120_000);

  afterAll(async () => {
    vi.unstubAllEnvs();
    await removeContainersOf(t, socketPath);
    await t?.stop();
    server.closeAllConnections();
    server.close();
  });

  it('gets its owner\'s instance events and nothing of anybody else\'s', async () => {
    const hook = await t.api<{ id: string; scope: string; ownerId: string | null }>('POST', '/api/v1/webhooks', {
      token: lab.tokens.alice, body: { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/mine`, events: ['*'], secret: 'alice-webhook-secret-0123' },
    });
    expect(hook.status).toBe(201);
    expect(hook.body.scope).toBe('mine');
    // bob sees none of it
    expect((await t.api<unknown[]>('GET', '/api/v1/webhooks', { token: lab.tokens.bob })).body).toEqual([]);
    expect((await t.api('GET', `/api/v1/webhooks/${hook.body.id}/deliveries`, { token: lab.tokens.bob })).status).toBe(404);

    const bobs = await runningInstance(t, lab.tokens.bob!, lab, 'bobs');
    const alices = await runningInstance(t, lab.tokens.alice!, lab, 'alices');
    await t.api('POST', '/api/v1/users', { token: lab.admin, body: { username: 'carol', password: 'carol-password' } });
    expect((await t.api('POST', `/api/v1/instances/${bobs.id}/stop?wait=true`, { token: lab.tokens.bob })).status).toBe(200);
    expect((await t.api('POST', `/api/v1/instances/${alices.id}/stop?wait=true`, { token: lab.tokens.alice })).status).toBe(200);

    await waitFor(async () => received.map((e) => e.type), (types) => types.includes('InstanceOperationCompleted'), 20_000);
    // a moment for anything that should not come
    await new Promise((r) => setTimeout(r, 500));
    expect(received.length).toBeGreaterThan(3);
    expect(new Set(received.map((e) => e.stream))).toEqual(new Set([`instance-${alices.id}`]));
  }, 120_000);
});
