import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, setUpLab, waitFor } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;

interface View {
  id: string;
  status: string;
  pending: string | null;
  statusReason: string;
}
interface NodeView {
  used: { cpuCores: number; memoryGb: number; dataDiskGb: number };
  reservations: { instanceId: string }[];
}

/**
 * Stopped instances hold no compute: a stop gives the instance's cards, CPU and memory back (its
 * data disk stays held), a start takes the same again or is refused with the reason. Against a
 * real engine, with a node of 2 cores and 2-core instances (this machine has no GPU: the cards
 * follow the same ledger, see the node decider's tests). TIANQI_KEEP_GPUS_WHEN_STOPPED=1 keeps
 * them.
 */
describeWithService('Docker engine', Boolean(socketPath), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'stopped instances hold no compute', () => {
  const labs: TestApp[] = [];
  afterAll(async () => {
    for (const t of labs) {
      await removeContainersOf(t, socketPath);
      await t.stop();
    }
  });

  /** A lab whose only node has 2 cores, and a spec that takes both. */
  const twoCoreLab = async (env: Record<string, string> = {}) => {
    const t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000', ...env });
    labs.push(t);
    const lab = await setUpLab(t, socketPath!, ['alice', 'bob']);
    expect((await t.api('PATCH', `/api/v1/nodes/${lab.nodeId}`, { token: lab.admin, body: { cpuCores: 2, memoryGb: 8, dataDiskGb: 100 } })).status).toBe(200);
    const spec = await t.api<{ id: string }>('POST', '/api/v1/specs', { token: lab.admin, body: { name: 'cpu-2c', cpuCores: 2, memoryGb: 2, dataDiskGb: 10, pricePerHour: 1 } });
    expect(spec.status).toBe(201);
    const create = async (owner: 'alice' | 'bob', name: string) =>
      t.api<View & { error?: { code: string; message: string } }>('POST', '/api/v1/instances', { token: lab.tokens[owner], body: { name, imageId: lab.imageId, specId: spec.body.id } });
    const view = (owner: 'alice' | 'bob', id: string) => t.api<View>('GET', `/api/v1/instances/${id}`, { token: lab.tokens[owner] }).then((r) => r.body);
    const running = (owner: 'alice' | 'bob', id: string) => waitFor(() => view(owner, id), (v) => v.status === 'running' && v.pending === null, 60_000);
    const node = () => t.api<NodeView>('GET', `/api/v1/nodes/${lab.nodeId}`, { token: lab.admin }).then((r) => r.body);
    return { t, lab, create, view, running, node };
  };

  let l: Awaited<ReturnType<typeof twoCoreLab>>;
  beforeAll(async () => {
    l = await twoCoreLab();
  }, 120_000);

  it('a stop gives the cores back (the disk stays held), another user may take them, and the start is refused by name until they are free', async () => {
    const a = await l.create('alice', 'a-train');
    expect(a.status).toBe(201);
    await l.running('alice', a.body.id);
    expect((await l.create('bob', 'b-wait')).body.error!.code).toBe('NO_CAPACITY');
    expect((await l.node()).used).toEqual({ cpuCores: 2, memoryGb: 2, dataDiskGb: 10, publicPorts: 0 });

    expect((await l.t.api('POST', `/api/v1/instances/${a.body.id}/stop?wait=true`, { token: l.lab.tokens.alice })).status).toBe(200);
    expect((await l.node()).used).toEqual({ cpuCores: 0, memoryGb: 0, dataDiskGb: 10, publicPorts: 0 });

    const b = await l.create('bob', 'b-train');
    expect(b.status).toBe(201);
    await l.running('bob', b.body.id);
    const refused = await l.t.api<{ error: { code: string; message: string } }>('POST', `/api/v1/instances/${a.body.id}/start`, { token: l.lab.tokens.alice });
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('NO_CAPACITY');
    expect(refused.body.error.message).toMatch(/not enough free CPU cores.*gave its CPU and memory back.*node local/);
    // refused whole: nothing half done, the instance stays stopped
    expect(await l.view('alice', a.body.id)).toMatchObject({ status: 'exited', pending: null });

    expect((await l.t.api('POST', `/api/v1/instances/${b.body.id}/stop?wait=true`, { token: l.lab.tokens.bob })).status).toBe(200);
    expect((await l.t.api('POST', `/api/v1/instances/${a.body.id}/start`, { token: l.lab.tokens.alice })).status).toBe(200);
    await l.running('alice', a.body.id);
    expect((await l.node()).used).toEqual({ cpuCores: 2, memoryGb: 2, dataDiskGb: 20, publicPorts: 0 });
    // a restart keeps what it holds
    expect((await l.t.api('POST', `/api/v1/instances/${a.body.id}/restart?wait=true`, { token: l.lab.tokens.alice })).status).toBe(200);
    await l.running('alice', a.body.id);
    expect((await l.node()).used.cpuCores).toBe(2);
  }, 120_000);

  it('keeps them held with TIANQI_KEEP_GPUS_WHEN_STOPPED=1', async () => {
    const kept = await twoCoreLab({ TIANQI_KEEP_GPUS_WHEN_STOPPED: '1' });
    const a = await kept.create('alice', 'a-keep');
    await kept.running('alice', a.body.id);
    expect((await kept.t.api('POST', `/api/v1/instances/${a.body.id}/stop?wait=true`, { token: kept.lab.tokens.alice })).status).toBe(200);
    expect((await kept.node()).used).toEqual({ cpuCores: 2, memoryGb: 2, dataDiskGb: 10, publicPorts: 0 });
    expect((await kept.create('bob', 'b-keep')).body.error!.code).toBe('NO_CAPACITY');
    expect((await kept.t.api('POST', `/api/v1/instances/${a.body.id}/start`, { token: kept.lab.tokens.alice })).status).toBe(200);
    await kept.running('alice', a.body.id);
  }, 120_000);
});
