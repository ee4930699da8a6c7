import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, runningInstance, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
const HOUR = 3_600_000;
const TICK_MS = 100;

interface View {
  id: string;
  status: string;
  pending: string | null;
  scheduledStop: { at: string; byUsername: string } | null;
}

/**
 * 定时关机 against a real engine, on a clock the test moves: the platform's scheduler goes by
 * the app's clock, so an hour passes at once and nothing waits for wall time.
 */
describeWithService('Docker engine', Boolean(socketPath), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'scheduled stop (定时关机)', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'tianqi-schedule-'));
  let now = Date.now();
  const clock = () => now;
  // one master key for both runs of the platform: the users' tokens stay good across the restart
  const env = { TIANQI_POLL_INTERVAL_MS: '60000', TIANQI_SCHEDULER_TICK_MS: String(TICK_MS), TIANQI_MASTER_KEY: randomBytes(32).toString('base64') };
  let t: TestApp;
  let lab: Lab;
  let id: string;

  const view = async (token = lab.tokens.alice!) => (await t.api<View>('GET', `/api/v1/instances/${id}`, { token })).body;
  const schedule = (body: unknown, token = lab.tokens.alice!) => t.api<View & { error?: { code: string; fields?: Record<string, string> } }>('PUT', `/api/v1/instances/${id}/scheduled-stop`, { token, body });
  const history = async () => (await t.api<{ summary: string }[]>('GET', `/api/v1/instances/${id}/history`, { token: lab.tokens.alice })).body.map((h) => h.summary);
  /** A few scheduler passes at the clock as it is now. */
  const passes = () => new Promise((resolve) => setTimeout(resolve, TICK_MS * 5));

  beforeAll(async () => {
    t = await startTestApp(env, { dataDir, clock });
    lab = await setUpLab(t, socketPath!, ['alice', 'bob']);
    const instance = await runningInstance(t, lab.tokens.alice!, lab, 'train');
    expect(instance.status).toBe('running');
    id = instance.id;
  }, 120_000);

  afterAll(async () => {
    await removeContainersOf(t, socketPath);
    await t?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('sets, replaces and cancels a stop by time or by hours, for the owner; others get 404; bad input a 400 naming the field', async () => {
    const inTwoHours = await schedule({ afterHours: 2 });
    expect(inTwoHours.status).toBe(200);
    expect(Date.parse(inTwoHours.body.scheduledStop!.at)).toBe(now + 2 * HOUR);
    expect(inTwoHours.body.scheduledStop!.byUsername).toBe('alice');
    const at = new Date(now + 90 * 60_000).toISOString();
    expect((await schedule({ at })).body.scheduledStop!.at).toBe(at);
    expect((await view()).scheduledStop!.at).toBe(at);

    for (const body of [{}, { at, afterHours: 1 }, { at: new Date(now - 60_000).toISOString() }, { afterHours: -1 }, { afterHours: 9000 }, { at: 'tomorrow' }, { at, extra: 1 }]) {
      const refused = await schedule(body);
      expect(refused.status, JSON.stringify(body)).toBe(400);
      expect(refused.body.error!.code).toBe('VALIDATION_FAILED');
    }
    expect((await schedule({ afterHours: 1 }, lab.tokens.bob!)).status).toBe(404);
    expect((await t.api('DELETE', `/api/v1/instances/${id}/scheduled-stop`, { token: lab.tokens.bob })).status).toBe(404);
    // what was set stays as it was after every refusal
    expect((await view()).scheduledStop!.at).toBe(at);

    expect((await t.api('DELETE', `/api/v1/instances/${id}/scheduled-stop`, { token: lab.tokens.alice })).status).toBe(204);
    expect((await view()).scheduledStop).toBeNull();
    expect((await t.api('DELETE', `/api/v1/instances/${id}/scheduled-stop`, { token: lab.tokens.alice })).status).toBe(204);
    const lines = await history();
    expect(lines).toContain(`alice scheduled a stop at ${at}`);
    expect(lines).toContain('alice cancelled the scheduled stop');
  });

  it('does not fire before its time, fires once the clock reaches it, and survives a restart in between', async () => {
    const at = now + HOUR;
    expect((await schedule({ afterHours: 1 })).status).toBe(200);
    now = at - 1_000;
    await passes();
    expect((await view()).status).toBe('running');

    // the platform goes down with the stop pending, and comes back after its time
    await t.stop({ keepData: true });
    now = at + 30 * 60_000;
    t = await startTestApp(env, { dataDir, clock });
    const stopped = await waitFor(view, (v) => v.status === 'exited' && v.pending === null, 30_000);
    expect(stopped.scheduledStop).toBeNull();
    const lines = await history();
    expect(lines).toContain(`scheduled stop (${new Date(at).toISOString()}) due: stopping`);
    expect(lines.filter((l) => l === 'stop done')).toHaveLength(1);
  }, 60_000);

  it('a stop ends the schedule: started again, the instance keeps running; a stopped instance cannot have one', async () => {
    expect((await schedule({ afterHours: 1 })).status).toBe(409);
    expect((await t.api('POST', `/api/v1/instances/${id}/start`, { token: lab.tokens.alice })).status).toBe(200);
    await waitFor(view, (v) => v.status === 'running', 30_000);
    // set, then the user stops by hand before it is due: the old time must not stop the next run
    expect((await schedule({ afterHours: 1 })).status).toBe(200);
    expect((await t.api('POST', `/api/v1/instances/${id}/stop?wait=true`, { token: lab.tokens.alice })).status).toBe(200);
    expect((await view()).scheduledStop).toBeNull();
    expect((await t.api('POST', `/api/v1/instances/${id}/start`, { token: lab.tokens.alice })).status).toBe(200);
    await waitFor(view, (v) => v.status === 'running', 30_000);
    now += 2 * HOUR;
    await passes();
    expect((await view()).status).toBe('running');
  }, 60_000);
});
