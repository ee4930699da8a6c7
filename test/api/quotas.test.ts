import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;

interface Quota {
  userId: string;
  groupId: string | null;
  limits: { maxInstances: number | null; maxGpus: number | null; maxGpuHoursPerMonth: number | null };
  used: { instances: number; gpus: number; gpuHoursThisMonth: number };
  holdings: { instanceId: string; instanceName: string; gpus: number }[];
}
interface Failure {
  error: { code: string; message: string; fields?: Record<string, string> };
}

/**
 * Quotas (配额) against a real engine: an admin sets a user's limit on instances at once; creates
 * racing for the last place get it once, the others 409 QUOTA_EXCEEDED naming the quota; a stop
 * frees a place, a start takes one, and a refused start changes nothing.
 */
describeWithService('Docker engine', Boolean(socketPath), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'quotas', () => {
  let t: TestApp;
  let lab: Lab;
  let aliceId: string;

  const quota = (userId: string, token: string) => t.api<Quota & Failure>('GET', `/api/v1/users/${userId}/quota`, { token });
  const setQuota = (userId: string, body: unknown, token = lab.admin) => t.api<Quota & Failure>('PUT', `/api/v1/users/${userId}/quota`, { token, body });
  const create = (name: string) => t.api<{ id: string } & Failure>('POST', '/api/v1/instances', { token: lab.tokens.alice, body: { name, imageId: lab.imageId, specId: lab.specId } });
  const status = (id: string) => t.api<{ status: string; pending: string | null }>('GET', `/api/v1/instances/${id}`, { token: lab.tokens.alice }).then((r) => r.body);

  beforeAll(async () => {
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000' });
    lab = await setUpLab(t, socketPath!, ['alice', 'bob']);
    aliceId = (await t.api<{ id: string }>('GET', '/api/v1/auth/me', { token: lab.tokens.alice })).body.id;
  }, 120_000);

  afterAll(async () => {
    await removeContainersOf(t, socketPath);
    await t?.stop();
  });

  it('is set by admins only, read by the user and admins, and refuses bad limits whole', async () => {
    expect((await quota(aliceId, lab.tokens.alice!)).body).toEqual({
      userId: aliceId, groupId: null, limits: { maxInstances: null, maxGpus: null, maxGpuHoursPerMonth: null }, used: { instances: 0, gpus: 0, gpuHoursThisMonth: 0 }, holdings: [],
    });
    expect((await quota(aliceId, lab.tokens.bob!)).status).toBe(404);
    expect((await setQuota(aliceId, { maxInstances: 5, maxGpus: null }, lab.tokens.alice)).status).toBe(403);
    for (const body of [{}, { maxInstances: 1.5, maxGpus: null }, { maxInstances: -1, maxGpus: null }, { maxInstances: 2, maxGpus: 0.125 }, { maxInstances: 2, maxGpus: 2, extra: 1 }, { maxInstances: '2', maxGpus: null }, { maxInstances: 2, maxGpus: null, maxGpuHoursPerMonth: -5 }]) {
      const refused = await setQuota(aliceId, body);
      expect(refused.status, JSON.stringify(body)).toBe(400);
      expect(refused.body.error.code).toBe('VALIDATION_FAILED');
    }
    expect((await setQuota('no-such-user', { maxInstances: 1, maxGpus: null })).status).toBe(404);
    const set = await setQuota(aliceId, { maxInstances: 2, maxGpus: 1.5, maxGpuHoursPerMonth: 720 });
    expect(set.status).toBe(200);
    expect(set.body.limits).toEqual({ maxInstances: 2, maxGpus: 1.5, maxGpuHoursPerMonth: 720 });
  });

  it('lets exactly as many concurrent creates through as the quota has places; the rest get 409 QUOTA_EXCEEDED naming it', async () => {
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => create(`race-${i}`)));
    const created = answers.filter((a) => a.status === 201);
    const refused = answers.filter((a) => a.status === 409);
    console.log(`concurrent creates against a quota of 2: ${created.length} created, ${refused.length} refused (QUOTA_EXCEEDED)`);
    expect(created).toHaveLength(2);
    expect(refused).toHaveLength(4);
    for (const r of refused) {
      expect(r.body.error.code).toBe('QUOTA_EXCEEDED');
      expect(r.body.error.fields).toEqual({ quota: 'maxInstances' });
      expect(r.body.error.message).toContain('2 instances at once');
    }
    const held = (await quota(aliceId, lab.tokens.alice!)).body;
    expect(held.used).toEqual({ instances: 2, gpus: 0, gpuHoursThisMonth: 0 });
    expect(held.holdings.map((h) => h.instanceId).sort()).toEqual(created.map((c) => c.body.id).sort());
    // the refused ones left nothing: no instance, no node reservation, no name taken
    const names = (await t.api<{ name: string }[]>('GET', '/api/v1/instances', { token: lab.tokens.alice })).body.map((i) => i.name);
    expect(names).toHaveLength(2);
    const node = (await t.api<{ reservations: unknown[] }>('GET', `/api/v1/nodes/${lab.nodeId}`, { token: lab.admin })).body;
    expect(node.reservations).toHaveLength(2);
    for (const c of created) await waitFor(() => status(c.body.id), (v) => v.status === 'running', 60_000);
  }, 120_000);

  it('a stop frees a place and a start takes one; a start over the quota is refused and changes nothing', async () => {
    const [first, second] = (await quota(aliceId, lab.tokens.alice!)).body.holdings;
    expect((await t.api('POST', `/api/v1/instances/${first!.instanceId}/stop?wait=true`, { token: lab.tokens.alice })).status).toBe(200);
    expect((await quota(aliceId, lab.tokens.alice!)).body.used.instances).toBe(1);
    const third = await create('third');
    expect(third.status).toBe(201);
    await waitFor(() => status(third.body.id), (v) => v.status === 'running', 60_000);

    const history = async () => (await t.api<unknown[]>('GET', `/api/v1/instances/${first!.instanceId}/history`, { token: lab.tokens.alice })).body.length;
    const before = await history();
    const refused = await t.api<Failure>('POST', `/api/v1/instances/${first!.instanceId}/start`, { token: lab.tokens.alice });
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('QUOTA_EXCEEDED');
    expect(await status(first!.instanceId)).toMatchObject({ status: 'exited', pending: null });
    expect(await history()).toBe(before);

    // a raised quota lets it start; a deleted instance frees its place too
    expect((await setQuota(aliceId, { maxInstances: 3, maxGpus: 1.5 })).status).toBe(200);
    expect((await t.api('POST', `/api/v1/instances/${first!.instanceId}/start`, { token: lab.tokens.alice })).status).toBe(200);
    expect((await quota(aliceId, lab.tokens.alice!)).body.used.instances).toBe(3);
    expect((await t.api('DELETE', `/api/v1/instances/${second!.instanceId}`, { token: lab.tokens.alice })).status).toBe(204);
    expect((await quota(aliceId, lab.tokens.alice!)).body.used.instances).toBe(2);
  }, 120_000);

  it('a group shares one quota among its members: concurrent creates of two members get its places once; a refusal names the group', async () => {
    const bobId = (await t.api<{ id: string }>('GET', '/api/v1/auth/me', { token: lab.tokens.bob })).body.id;
    // alice's own quota out of the way: only the group's counts here
    expect((await setQuota(aliceId, { maxInstances: null, maxGpus: null })).status).toBe(200);
    const group = await t.api<{ id: string; name: string }>('POST', '/api/v1/groups', { token: lab.admin, body: { name: 'NLP 组' } });
    expect(group.status).toBe(201);
    expect((await t.api('POST', '/api/v1/groups', { token: lab.admin, body: { name: 'nlp 组' } })).status).toBe(409);
    expect((await t.api('POST', '/api/v1/groups', { token: lab.tokens.alice, body: { name: 'mine' } })).status).toBe(403);
    for (const id of [aliceId, bobId]) expect((await t.api('PUT', `/api/v1/users/${id}/group`, { token: lab.admin, body: { groupId: group.body.id } })).status).toBe(200);
    expect((await t.api('PUT', `/api/v1/users/${bobId}/group`, { token: lab.admin, body: { groupId: 'no-such-group' } })).status).toBe(400);
    const held = (await quota(aliceId, lab.tokens.alice!)).body.used.instances;
    // room for two more in the group, whoever asks
    expect((await t.api('PUT', `/api/v1/groups/${group.body.id}/quota`, { token: lab.admin, body: { maxInstances: 2, maxGpus: null } })).status).toBe(200);
    const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => t.api<{ id: string } & Failure>('POST', '/api/v1/instances', {
      token: i % 2 === 0 ? lab.tokens.alice : lab.tokens.bob, body: { name: `g-${i}`, imageId: lab.imageId, specId: lab.specId },
    })));
    const created = answers.filter((a) => a.status === 201);
    const refused = answers.filter((a) => a.status === 409);
    console.log(`concurrent creates of two members against a group quota of 2: ${created.length} created, ${refused.length} refused`);
    expect(created).toHaveLength(2);
    expect(refused).toHaveLength(4);
    for (const r of refused) {
      expect(r.body.error.fields).toEqual({ quota: 'group.maxInstances' });
      expect(r.body.error.message).toContain('NLP 组');
    }
    // what alice held before she joined stays counted where it was: her own quota only
    expect((await quota(aliceId, lab.tokens.alice!)).body.used.instances).toBe(held + created.filter((c) => answers.indexOf(c) % 2 === 0).length);
    const groupView = (await t.api<{ id: string; members: { userId: string }[]; quota: { used: { instances: number } } }[]>('GET', '/api/v1/groups', { token: lab.admin })).body
      .find((g) => g.id === group.body.id)!;
    expect(groupView.quota.used.instances).toBe(2);
    expect(groupView.members.map((m) => m.userId).sort()).toEqual([aliceId, bobId].sort());

    // a group with members stays; emptied, it goes
    expect((await t.api<Failure>('DELETE', `/api/v1/groups/${group.body.id}`, { token: lab.admin })).body.error.code).toBe('GROUP_IN_USE');
    for (const c of created) expect((await t.api('DELETE', `/api/v1/instances/${c.body.id}`, { token: lab.admin })).status).toBe(204);
    for (const id of [aliceId, bobId]) expect((await t.api('PUT', `/api/v1/users/${id}/group`, { token: lab.admin, body: { groupId: null } })).status).toBe(200);
    expect((await t.api('DELETE', `/api/v1/groups/${group.body.id}`, { token: lab.admin })).status).toBe(204);
  }, 120_000);
});
