import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';
import { SERVICE_IMAGE } from '../support/test-image.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;

interface View { id: string; status: string; statusReason: string; containerId: string | null; error?: { code: string; message: string } }

/**
 * 重试创建: an instance that failed to be created (its image was not on the node yet) is created
 * again once the cause is gone, on its node, with its data volume; a running one is not.
 */
describeWithService('Docker engine', Boolean(socketPath), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'retry a failed instance (重试创建)', () => {
  let t: TestApp;
  let lab: Lab;
  const image = `tianqi-test/arrives-later:${randomBytes(4).toString('hex')}`;
  const docker = (...args: string[]) => execFileSync('docker', args, { env: { ...process.env, DOCKER_HOST: `unix://${socketPath}` }, stdio: 'pipe' });
  const view = (id: string, token = lab.tokens.alice) => t.api<View>('GET', `/api/v1/instances/${id}`, { token }).then((r) => r.body);

  beforeAll(async () => {
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000' });
    lab = await setUpLab(t, socketPath!, ['alice', 'bob']);
  }, 120_000);
  afterAll(async () => {
    await removeContainersOf(t, socketPath);
    await t?.stop();
    try {
      docker('rmi', image);
    } catch {
      // not tagged
    }
  });

  it('creates a failed instance again once its image is there; others get 404; a running one is refused', async () => {
    const imageId = (await t.api<{ id: string }>('POST', '/api/v1/images', { token: lab.admin, body: { name: 'later', address: image } })).body.id;
    const created = await t.api<View>('POST', '/api/v1/instances', { token: lab.tokens.alice, body: { name: 'early', imageId, specId: lab.specId } });
    expect(created.status).toBe(201);
    const failed = await waitFor(() => view(created.body.id), (i) => i.status === 'failed', 60_000);
    expect(failed.statusReason.length).toBeGreaterThan(10);

    expect((await t.api('POST', `/api/v1/instances/${created.body.id}/retry`, { token: lab.tokens.bob })).status).toBe(404);
    docker('tag', SERVICE_IMAGE, image);
    const retried = await t.api<View>('POST', `/api/v1/instances/${created.body.id}/retry`, { token: lab.tokens.alice });
    expect(retried.status, JSON.stringify(retried.body)).toBe(200);
    expect(retried.body.status).toBe('creating');
    const running = await waitFor(() => view(created.body.id), (i) => i.status !== 'creating', 60_000);
    expect(running.status, running.statusReason).toBe('running');
    expect(running.containerId).not.toBeNull();

    const again = await t.api<View>('POST', `/api/v1/instances/${created.body.id}/retry`, { token: lab.tokens.alice });
    expect([again.status, again.body.error?.code]).toEqual([409, 'NOT_FAILED']);
    const history = (await t.api<{ summary: string }[]>('GET', `/api/v1/instances/${created.body.id}/history`, { token: lab.tokens.alice })).body.map((h) => h.summary);
    expect(history).toContain('alice had it created again');
  }, 180_000);
});
