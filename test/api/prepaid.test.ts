import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;

interface Statement {
  balance: number; credited: number; usage: number; openedAt: string | null; warned: boolean; exhausted: boolean;
  adjustments: { amount: number; reason: string; byUsername: string }[];
  instances: { instanceId: string; seconds: number; cost: number }[];
}
interface Problem { error: { code: string; message: string; fields?: Record<string, string> } }

/**
 * 预付费 against a real engine: no balance, no instance; a credit lets one run; the meter runs
 * the balance down (a spec at 1,800 an hour: 0.5 a second), the owner is warned below the line, the
 * instance is stopped when it is used up and the history says why; a start is refused until the
 * next credit. The statement is the same after a restart.
 */
describeWithService('Docker engine', Boolean(socketPath), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'prepaid balance (预付费, 欠费停机)', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'tianqi-prepaid-'));
  const env = { TIANQI_PREPAID: '1', TIANQI_LOW_BALANCE: '2', TIANQI_BILLING_TICK_MS: '200', TIANQI_POLL_INTERVAL_MS: '60000', TIANQI_MASTER_KEY: randomBytes(32).toString('base64') };
  let t: TestApp;
  let lab: Lab;
  let aliceId: string;
  let specId: string;

  const statement = async () => (await t.api<Statement>('GET', `/api/v1/users/${aliceId}/balance`, { token: lab.tokens.alice })).body;
  const credit = (amount: unknown, reason: unknown = '充值', token = lab.admin) =>
    t.api<Statement & Problem>('POST', `/api/v1/users/${aliceId}/balance/adjustments`, { token, body: { amount, reason } });
  const create = (name: string) => t.api<{ id: string } & Problem>('POST', '/api/v1/instances', { token: lab.tokens.alice, body: { name, imageId: lab.imageId, specId } });

  beforeAll(async () => {
    t = await startTestApp(env, { dataDir });
    lab = await setUpLab(t, socketPath!, ['alice', 'bob']);
    aliceId = (await t.api<{ id: string }[]>('GET', '/api/v1/users?q=alice', { token: lab.admin })).body[0]!.id;
    specId = (await t.api<{ id: string }>('POST', '/api/v1/specs', { token: lab.admin, body: { name: 'by-the-second', cpuCores: 1, memoryGb: 1, pricePerHour: 1800 } })).body.id;
  }, 120_000);

  afterAll(async () => {
    await removeContainersOf(t, socketPath);
    await t?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('refuses a create without a balance, and bad credits, changing nothing', async () => {
    const refused = await create('too-early');
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('BALANCE_EXHAUSTED');
    expect(refused.body.error.message).toMatch(/no balance yet/);
    for (const [amount, reason, field] of [[0, 'x', 'amount'], [1.00001, 'x', 'amount'], [1e9, 'x', 'amount'], ['5', 'x', 'amount'], [5, '', 'reason'], [5, 'x'.repeat(201), 'reason']] as const) {
      const bad = await credit(amount, reason);
      expect(bad.status, JSON.stringify([amount, reason])).toBe(400);
      expect(Object.keys(bad.body.error.fields ?? {})).toContain(field);
    }
    expect((await credit(5, 'self-service', lab.tokens.alice)).status).toBe(403);
    expect((await t.api('GET', `/api/v1/users/${aliceId}/balance`, { token: lab.tokens.bob })).status).toBe(404);
    expect(await statement()).toMatchObject({ openedAt: null, balance: 0, adjustments: [] });
  });

  it('runs the balance down by the meter, warns, stops the instance when it is used up, and refuses a start until the next credit', async () => {
    const opened = await credit(4, '首次充值');
    expect(opened.status).toBe(201);
    expect(opened.body).toMatchObject({ balance: 4, credited: 4, usage: 0, adjustments: [{ amount: 4, reason: '首次充值', byUsername: 'admin' }] });
    const created = await create('metered');
    expect(created.status).toBe(201);
    const id = created.body.id;
    const instance = () => t.api<{ status: string; pending: string | null }>('GET', `/api/v1/instances/${id}`, { token: lab.tokens.alice }).then((r) => r.body);
    await waitFor(instance, (i) => i.status === 'running', 30_000);

    const warned = await waitFor(statement, (s) => s.warned, 15_000);
    expect(warned.balance).toBeLessThan(2);
    const stopped = await waitFor(instance, (i) => i.status === 'exited' && !i.pending, 20_000);
    expect(stopped.status).toBe('exited');
    const history = (await t.api<{ summary: string }[]>('GET', `/api/v1/instances/${id}/history`, { token: lab.tokens.alice })).body.map((h) => h.summary);
    expect(history.some((line) => /prepaid balance is used up/.test(line)), history.join('\n')).toBe(true);

    const types = (await t.api<{ events: { type: string }[] }>('GET', `/api/v1/events?stream=balance-${aliceId}`, { token: lab.admin })).body.events.map((e) => e.type);
    expect(types).toEqual(['BalanceAdjusted', 'BalanceLowWarned', 'BalanceExhausted']);

    const after = await statement();
    expect(after.exhausted).toBe(true);
    expect(after.balance).toBeLessThanOrEqual(0);
    // The meter and the statement agree: balance = credits − usage, usage = Σ the instance's cost.
    expect(after.balance).toBeCloseTo(after.credited - after.usage, 4);
    expect(after.usage).toBeCloseTo(after.instances.reduce((sum, i) => sum + i.cost, 0), 4);

    const start = await t.api<Problem>('POST', `/api/v1/instances/${id}/start`, { token: lab.tokens.alice });
    expect(start.status).toBe(409);
    expect(start.body.error.code).toBe('BALANCE_EXHAUSTED');
    expect((await instance()).status).toBe('exited');

    // The same statement after a restart: nothing is posted twice or lost.
    await t.stop();
    t = await startTestApp(env, { dataDir });
    const replayed = await statement();
    expect({ ...replayed, asOf: null }).toEqual({ ...after, asOf: null });

    expect((await credit(100, '续费')).status).toBe(201);
    expect((await t.api('POST', `/api/v1/instances/${id}/start`, { token: lab.tokens.alice })).status).toBe(200);
    expect((await instance()).status).toBe('running');
    expect((await t.api('POST', `/api/v1/instances/${id}/stop?wait=true`, { token: lab.tokens.alice })).status).toBeLessThan(300);
  }, 120_000);
});
