import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { startTestApp } from '../support/app.ts';
import { removeContainersOf, runningInstance, setUpLab } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;

interface Report {
  users: { username: string; seconds: number; cost: number; instances: { name: string; seconds: number; cost: number }[] }[];
  totalSeconds: number;
  totalCost: number;
}

describeWithService('Docker engine', Boolean(socketPath), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'usage metering end to end', () => {


  it('bills the seconds a real container ran, per user, and gives the same bill after a restart', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'tianqi-usage-'));
    const env = { TIANQI_MASTER_KEY: randomBytes(32).toString('base64'), TIANQI_POLL_INTERVAL_MS: '60000' };
    const t = await startTestApp(env, { dataDir });
    let report: Report;
    let lab;
    try {
      lab = await setUpLab(t, socketPath!);
      const instance = await runningInstance(t, lab.tokens.alice!, lab, 'metered');
      expect(instance.status).toBe('running');
      await new Promise((r) => setTimeout(r, 2_300));
      await t.api('POST', `/api/v1/instances/${instance.id}/stop?wait=true`, { token: lab.tokens.alice });
      const stoppedAt = Date.now();
      report = (await t.api<Report>('GET', '/api/v1/usage', { token: lab.tokens.alice })).body;
      expect(report.users).toHaveLength(1);
      const line = report.users[0]!.instances[0]!;
      expect(line.name).toBe('metered');
      expect(line.seconds).toBeGreaterThanOrEqual(2);
      expect(line.seconds).toBeLessThanOrEqual(4);
      expect(line.cost).toBeCloseTo((line.seconds * 0.5) / 3600, 4);
      // stopped: the meter does not run on
      await new Promise((r) => setTimeout(r, 1_100));
      expect((await t.api<Report>('GET', '/api/v1/usage', { token: lab.tokens.alice })).body.totalSeconds).toBe(report.totalSeconds);
      expect(Date.now() - stoppedAt).toBeGreaterThan(1_000);
      expect((await t.api<Report>('GET', '/api/v1/usage', { token: lab.tokens.bob })).body.users).toEqual([]);
      const all = (await t.api<Report>('GET', '/api/v1/usage', { token: lab.admin })).body;
      expect(all.users.map((u) => u.username)).toEqual(['alice']);
      expect((await t.api('GET', '/api/v1/usage?from=2026-12-01T00:00:00Z&to=2026-11-01T00:00:00Z', { token: lab.admin })).status).toBe(400);
    } finally {
      await t.stop({ keepData: true });
    }
    const again = await startTestApp(env, { dataDir });
    try {
      const alice = await again.login('alice', 'alice-password');
      expect((await again.api<Report>('GET', '/api/v1/usage', { token: alice })).body.totalSeconds).toBe(report!.totalSeconds);
    } finally {
      await removeContainersOf(again, socketPath);
      await again.stop();
    }
  }, 60_000);
});
