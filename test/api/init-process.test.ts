import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';
import { ensureStaticImage } from '../support/test-image.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;

/**
 * Containers run with an init process (Docker's --init): a program that is PID 1 and ignores
 * SIGTERM (`sleep infinity`, most training scripts) no longer holds every stop for the engine's
 * 10 s grace period and a SIGKILL.
 */
describeWithService(
  'Docker engine',
  Boolean(socketPath),
  'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET',
  'instances have an init process',
  () => {
    let t: TestApp;
    let lab: Lab;

    beforeAll(async () => {
      t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000' });
      lab = await setUpLab(t, socketPath!, ['alice']);
    }, 120_000);

    afterAll(async () => {
      await removeContainersOf(t, socketPath);
      await t?.stop();
    });

    it('stops a `sleep` that is the image\'s only process with the SIGTERM, not a SIGKILL after the grace period', async () => {
      const image = await t.api<{ id: string }>('POST', '/api/v1/images', { token: lab.admin, body: { name: 'sleeper', address: ensureStaticImage(socketPath) } });
      const created = await t.api<{ id: string }>('POST', '/api/v1/instances', { token: lab.tokens.alice, body: { name: 'sleeper', imageId: image.body.id, specId: lab.specId } });
      const id = created.body.id;
      const ready = await waitFor(() => t.api<{ status: string; containerId: string | null }>('GET', `/api/v1/instances/${id}`, { token: lab.tokens.alice }).then((r) => r.body),
        (i) => i.status === 'running' && i.containerId !== null, 60_000);
      const { default: Docker } = await import('dockerode');
      const info = await new Docker({ socketPath }).getContainer(ready.containerId!).inspect();
      expect(info.HostConfig.Init).toBe(true);
      const started = Date.now();
      const stop = await t.api('POST', `/api/v1/instances/${id}/stop?wait=true`, { token: lab.tokens.alice });
      expect(stop.status).toBeLessThan(300);
      await waitFor(() => t.api<{ status: string }>('GET', `/api/v1/instances/${id}`, { token: lab.tokens.alice }).then((r) => r.body), (i) => i.status === 'exited', 30_000);
      const ms = Date.now() - started;
      console.log(`stop of a sleep-as-PID-1 instance took ${ms} ms (the engine's grace period is 10 s)`);
      // ended by the SIGTERM the init passed on (143), not by the SIGKILL after the grace period (137)
      const after = await new Docker({ socketPath }).getContainer(ready.containerId!).inspect();
      expect(after.State.ExitCode).toBe(143);
    }, 120_000);
  },
);
