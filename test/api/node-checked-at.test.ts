import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.ts';
import { setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;

/** 检测时间 advances with every reconcile pass, also the passes that find nothing new (those record no event). */
describeWithService('Docker engine', Boolean(socketPath), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'the node\'s last check time', () => {
  let t: TestApp;
  let lab: Lab;
  beforeAll(async () => {
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '1000' });
    lab = await setUpLab(t, socketPath!, []);
  }, 60_000);
  afterAll(() => t?.stop());

  it('moves on with each pass while the node stays connected, without an event per pass', async () => {
    const node = () => t.api<{ dockerCheckedAt: string; dockerStatus: string }>('GET', `/api/v1/nodes/${lab.nodeId}`, { token: lab.admin }).then((r) => r.body);
    const events = async () => (await t.api<{ events: unknown[] }>('GET', `/api/v1/events?stream=node-${lab.nodeId}&limit=500`, { token: lab.admin })).body.events.length;
    const first = await node();
    const recorded = await events();
    const later = await waitFor(node, (n) => n.dockerCheckedAt > first.dockerCheckedAt, 5_000);
    expect(later.dockerStatus).toBe('connected');
    const list = await t.api<{ id: string; dockerCheckedAt: string }[]>('GET', '/api/v1/nodes', { token: lab.admin });
    expect(list.body.find((n) => n.id === lab.nodeId)!.dockerCheckedAt >= later.dockerCheckedAt).toBe(true);
    expect(await events()).toBe(recorded);
  });
});
