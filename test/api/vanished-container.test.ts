import Dockerode from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, runningInstance, setUpLab, type Lab } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
type ErrorBody = { error: { code: string; message: string } };

// A container removed behind the platform's back (`docker rm -f` on the node) while the read
// model still says `running`. Normally the engine's events close that window within milliseconds;
// with the reconciler switched off it stays open, so each request below meets the engine's 404.
describeWithService('Docker engine', Boolean(socketPath), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'a container removed behind the read model', () => {
  let t: TestApp;
  let lab: Lab;
  let alice: string;
  let instance: { id: string; containerId: string; status: string };

  beforeAll(async () => {
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '600000', TIANQI_DISABLED_PLUGINS: 'reconciler' });
    lab = await setUpLab(t, socketPath!, ['alice']);
    alice = lab.tokens.alice!;
    instance = await runningInstance(t, alice, lab, 'vanishing');
    expect(instance.status).toBe('running');
    await new Dockerode({ socketPath }).getContainer(instance.containerId).remove({ force: true });
  }, 120_000);
  afterAll(async () => {
    await removeContainersOf(t, socketPath);
    await t?.stop();
  });

  const api = <T>(method: string, path: string) => t.api<T>(method, `/api/v1/instances/${instance.id}${path}`, { token: alice });

  it('the read model has not caught up (the window this file is about)', async () => {
    expect((await api<{ status: string }>('GET', '')).body.status).toBe('running');
  });

  it('stats: 409 NOT_RUNNING, not an engine fault', async () => {
    const stats = await api<ErrorBody>('GET', '/stats');
    expect(stats.status).toBe(409);
    expect(stats.body.error.code).toBe('NOT_RUNNING');
  });

  it('logs: 409 CONTAINER_GONE', async () => {
    const logs = await api<ErrorBody>('GET', '/logs?tail=10');
    expect(logs.status).toBe(409);
    expect(logs.body.error.code).toBe('CONTAINER_GONE');
  });

  it('stop: 409 CONTAINER_GONE, and the instance is marked failed with the reason', async () => {
    const stop = await api<ErrorBody>('POST', '/stop?wait=true');
    expect(stop.status).toBe(409);
    expect(stop.body.error).toMatchObject({ code: 'CONTAINER_GONE', message: expect.stringMatching(/delete the instance/) });
    const after = (await api<{ status: string; statusReason: string; containerId: string | null; pending: string | null }>('GET', '')).body;
    expect(after).toMatchObject({ status: 'failed', statusReason: 'the container is gone from the node', containerId: null, pending: null });
    const again = await api<ErrorBody>('POST', '/start');
    expect(again.body.error.code).toBe('NO_CONTAINER');
  });

  it('delete still works and frees the name', async () => {
    expect((await api('DELETE', '')).status).toBe(204);
    expect((await api('GET', '')).status).toBe(404);
  });
});
