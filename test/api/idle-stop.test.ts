import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2 from 'ssh2';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, runningInstance, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { freePort } from '../support/ports.ts';
import { describeWithService } from '../support/services.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
const MINUTE = 60_000;

interface View {
  id: string;
  status: string;
  pending: string | null;
  idle: { since: string; stopAt: string | null } | null;
  idleOptOut: boolean;
}

/**
 * 空闲自动关机 against a real engine on a clock the test moves: the reconciler samples each
 * running container every second (by the moved clock), the idle check runs every 100 ms. A spec
 * of 10 minutes: an unused instance is found idle, warned 5 minutes before, stopped at 10; one
 * with an SSH session open and one opted out keep running; across a restart the stop still comes.
 */
describeWithService('Docker engine', Boolean(socketPath), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'idle auto-stop', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'tianqi-idle-'));
  // Real time plus the jumps the test makes: never behind the times the engine's events carry.
  let offset = 0;
  const clock = () => Date.now() + offset;
  let env: Record<string, string>;
  let t: TestApp;
  let lab: Lab;
  let specId: string;
  const ids: Record<string, string> = {};
  let session: ssh2.Client | undefined;

  const view = async (name: string) => (await t.api<View>('GET', `/api/v1/instances/${ids[name]}`, { token: lab.tokens.alice })).body;
  const history = async (name: string) => (await t.api<{ summary: string }[]>('GET', `/api/v1/instances/${ids[name]}/history`, { token: lab.tokens.alice })).body.map((h) => h.summary);

  beforeAll(async () => {
    env = {
      TIANQI_POLL_INTERVAL_MS: '1000', TIANQI_IDLE_TICK_MS: '100', TIANQI_SSH_PORT: String(await freePort()),
      TIANQI_MASTER_KEY: randomBytes(32).toString('base64'),
    };
    t = await startTestApp(env, { dataDir, clock });
    lab = await setUpLab(t, socketPath!, ['alice']);
    const spec = await t.api<{ id: string; idleStop: unknown }>('POST', '/api/v1/specs', { token: lab.admin, body: {
      name: 'cpu-idle', cpuCores: 1, memoryGb: 1, idleStop: { minutes: 10, cpuPercent: 50, gpuPercent: 5, optOutAllowed: true },
    } });
    expect(spec.status).toBe(201);
    expect(spec.body.idleStop).toEqual({ minutes: 10, cpuPercent: 50, gpuPercent: 5, optOutAllowed: true });
    specId = spec.body.id;
    for (const name of ['unused', 'in-ssh', 'opted-out']) {
      const created = await t.api<{ id: string }>('POST', '/api/v1/instances', { token: lab.tokens.alice, body: { name, imageId: lab.imageId, specId } });
      expect(created.status).toBe(201);
      ids[name] = created.body.id;
      await waitFor(() => view(name), (v) => v.status === 'running', 60_000);
    }
  }, 180_000);

  afterAll(async () => {
    session?.end();
    await removeContainersOf(t, socketPath);
    await t?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('refuses bad policies whole, and an opt-out where the spec does not allow one', async () => {
    for (const idleStop of [{ minutes: 2, cpuPercent: 5, gpuPercent: 5, optOutAllowed: true }, { minutes: 60, cpuPercent: 120, gpuPercent: 5, optOutAllowed: true }, { minutes: 60 }]) {
      const r = await t.api<{ error: { code: string } }>('POST', '/api/v1/specs', { token: lab.admin, body: { name: 'bad-idle', cpuCores: 1, memoryGb: 1, idleStop } });
      expect(r.status, JSON.stringify(idleStop)).toBe(400);
    }
    const strict = await t.api<{ id: string }>('POST', '/api/v1/specs', { token: lab.admin, body: {
      name: 'strict-idle', cpuCores: 1, memoryGb: 1, idleStop: { minutes: 30, cpuPercent: 5, gpuPercent: 5, optOutAllowed: false },
    } });
    const other = await runningInstance(t, lab.tokens.alice!, { ...lab, specId: strict.body.id }, 'strict');
    const refused = await t.api<{ error: { code: string } }>('PUT', `/api/v1/instances/${other.id}/idle-stop`, { token: lab.tokens.alice, body: { optOut: true } });
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('IDLE_STOP_REQUIRED');
    expect((await t.api('DELETE', `/api/v1/instances/${other.id}`, { token: lab.tokens.alice })).status).toBe(204);
  }, 60_000);

  it('finds the unused one idle, warns it, and stops it after 10 minutes; a session and an opt-out keep the others running', async () => {
    const optOut = await t.api<View>('PUT', `/api/v1/instances/${ids['opted-out']}/idle-stop`, { token: lab.tokens.alice, body: { optOut: true } });
    expect(optOut.status).toBe(200);
    expect(optOut.body.idleOptOut).toBe(true);
    // an SSH command left running into one of them
    session = await new Promise<ssh2.Client>((resolve, reject) => {
      const client = new ssh2.Client();
      client.on('ready', () => client.exec('sleep 3600', (err) => (err ? reject(err) : resolve(client)))).on('error', reject);
      client.connect({ host: '127.0.0.1', port: Number(env.TIANQI_SSH_PORT), username: 'alice+in-ssh', password: 'alice-password', hostVerifier: () => true });
    });

    const idle = await waitFor(() => view('unused'), (v) => v.idle !== null, 30_000);
    expect(Date.parse(idle.idle!.since)).toBeGreaterThanOrEqual(clock() - 5_000);
    offset += 6 * MINUTE;
    const warned = await waitFor(() => view('unused'), (v) => v.idle?.stopAt != null, 30_000);
    expect(Date.parse(warned.idle!.stopAt!)).toBe(Date.parse(idle.idle!.since) + 10 * MINUTE);
    expect(await history('unused')).toContain(`idle: will be stopped at ${warned.idle!.stopAt} unless used`);

    offset += 5 * MINUTE;
    await waitFor(() => view('unused'), (v) => v.status === 'exited' && v.pending === null, 30_000);
    const lines = await history('unused');
    expect(lines).toContain(`idle for 10 minutes since ${idle.idle!.since}: stopping`);
    expect(lines.filter((l) => l === 'stop done')).toHaveLength(1);
    // the others: running, never found idle
    for (const name of ['in-ssh', 'opted-out']) expect(await view(name)).toMatchObject({ status: 'running', idle: null });
  }, 90_000);

  it('keeps its idle period across a restart and stops at its time', async () => {
    session?.end();
    // the SSH session closed: in-ssh goes idle from then
    const idle = await waitFor(() => view('in-ssh'), (v) => v.idle !== null, 30_000);
    await t.stop({ keepData: true });
    offset += 11 * MINUTE;
    t = await startTestApp(env, { dataDir, clock });
    await waitFor(() => view('in-ssh'), (v) => v.status === 'exited' && v.pending === null, 30_000);
    expect(await history('in-ssh')).toContain(`idle for 10 minutes since ${idle.idle!.since}: stopping`);
    expect((await view('opted-out')).status).toBe('running');
  }, 90_000);
});
