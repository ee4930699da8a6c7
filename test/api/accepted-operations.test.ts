import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { afterAll, expect, it } from 'vitest';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, waitFor } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';
import { ensureStubbornImage } from '../support/test-image.ts';

const socket = process.env.TIANQI_TEST_DOCKER_SOCKET;

interface Instance { id: string; status: string; pending: string | null; containerId: string | null; statusReason: string }

/**
 * A stop is answered (202) before the engine's work is done: when the platform goes down within
 * the grace period, the accepted stop is on the instance's stream, and the platform that comes
 * up runs it on its first pass — it is neither lost nor done twice.
 */
describeWithService('Docker engine', Boolean(socket), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'accepted operations across a restart', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'tianqi-accepted-'));
  const env = { TIANQI_MASTER_KEY: randomBytes(32).toString('base64'), TIANQI_POLL_INTERVAL_MS: '600000' };
  let t: TestApp | undefined;

  afterAll(async () => {
    await removeContainersOf(t, socket);
    await t?.stop();
  });

  it('runs a stop accepted before a restart on the first pass after it', async () => {
    t = await startTestApp(env, { dataDir });
    const admin = await t.login('admin', ADMIN_PASSWORD);
    const image = (await t.api<{ id: string }>('POST', '/api/v1/images', { token: admin, body: { name: 'ignores-term', address: ensureStubbornImage(socket) } })).body.id;
    const spec = (await t.api<{ id: string }>('POST', '/api/v1/specs', { token: admin, body: { name: 'cpu-grace-30', cpuCores: 1, memoryGb: 1, stopGraceSeconds: 30 } })).body.id;
    await t.api('POST', '/api/v1/nodes', { token: admin, body: { name: 'local', publicIp: '127.0.0.1', privateIp: '127.0.0.1', dockerEndpoint: `unix://${socket}` } });
    const created = await t.api<Instance>('POST', '/api/v1/instances', { token: admin, body: { name: 'stubborn', imageId: image, specId: spec } });
    const id = created.body.id;
    const running = await waitFor(() => t!.api<Instance>('GET', `/api/v1/instances/${id}`, { token: admin }).then((r) => r.body), (i) => i.status === 'running' && i.containerId !== null, 30_000);

    const stop = await t.api<Instance>('POST', `/api/v1/instances/${id}/stop`, { token: admin });
    expect([stop.status, stop.body.pending]).toEqual([202, 'stop']);
    // Down within the grace period: the engine is still waiting for the process to exit.
    const gone = t.stop({ keepData: true });
    t = undefined;
    await gone;
    const docker = new Dockerode({ socketPath: socket });
    t = await startTestApp(env, { dataDir });
    const after = await t.api<Instance>('GET', `/api/v1/instances/${id}`, { token: admin });
    expect(after.body.pending === 'stop' || after.body.status === 'exited').toBe(true);
    const stopped = await waitFor(() => t!.api<Instance>('GET', `/api/v1/instances/${id}`, { token: admin }).then((r) => r.body), (i) => i.status === 'exited' && i.pending === null, 60_000);
    expect(stopped.status).toBe('exited');
    expect((await docker.getContainer(running.containerId!).inspect()).State.Running).toBe(false);
    const history = (await t.api<{ summary: string }[]>('GET', `/api/v1/instances/${id}/history`, { token: admin })).body.map((h) => h.summary);
    expect(history.filter((h) => /^stop done/.test(h))).toHaveLength(1);
  }, 120_000);
});
