import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, runningInstance, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';

const socket = process.env.TIANQI_TEST_DOCKER_SOCKET;

interface Chart {
  range: string;
  bucketSeconds: number;
  points: { t: string; cpuPercent: number | null; memoryBytes: number | null; gpuMemoryBytes: number | null; rxBytesPerSecond: number | null; txBytesPerSecond: number | null }[];
}

/** The charts' data: the reconcile loop's samples of a real container, kept as a bounded series (not events). */
describeWithService('Docker engine', Boolean(socket), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'instance charts', () => {
  let t: TestApp;
  let lab: Lab;
  let id: string;

  beforeAll(async () => {
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '1000' });
    lab = await setUpLab(t, socket!);
    id = (await runningInstance(t, lab.tokens.alice!, lab, 'charted')).id;
  }, 60_000);

  afterAll(async () => {
    await removeContainersOf(t, socket);
    await t?.stop();
  });

  it('serves the last hour and day of CPU, memory and network, to the owner and admins only', async () => {
    const chart = (range: string, token = lab.tokens.alice) => t.api<Chart>('GET', `/api/v1/instances/${id}/metrics?range=${range}`, { token });
    const hour = await waitFor(() => chart('hour').then((r) => r.body), (c) => c.points.some((p) => p.rxBytesPerSecond !== null), 30_000);
    expect(hour.bucketSeconds).toBe(60);
    const point = hour.points.at(-1)!;
    expect(Date.now() - Date.parse(point.t)).toBeLessThan(2 * 60_000);
    expect(point.cpuPercent).toBeGreaterThanOrEqual(0);
    expect(point.memoryBytes).toBeGreaterThan(0);
    expect(point.gpuMemoryBytes).toBeNull();
    expect(point.rxBytesPerSecond).toBeGreaterThanOrEqual(0);
    const day = (await chart('day')).body;
    expect([day.range, day.bucketSeconds, day.points.length]).toEqual(['day', 900, 1]);
    expect((await chart('hour', lab.admin)).status).toBe(200);
    expect((await chart('hour', lab.tokens.bob)).status).toBe(404);
    expect((await chart('week')).status).toBe(400);
    // Telemetry, not events: sampling appends nothing to the log once the instance runs.
    const head = await t.app.eventStore.headPosition();
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    expect(await t.app.eventStore.headPosition()).toBe(head);
  }, 60_000);
});
