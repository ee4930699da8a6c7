import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { json, raw } from '../support/raw-http.ts';
import { describeWithService } from '../support/services.ts';
import { ensureWebServiceImage } from '../support/test-image.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
const helperBuilt = existsSync(join(loadConfig({}).helperDir, 'linux-amd64', 'tianqi-helper'));
const RANGE_SIZE = 4;

interface Instance { id: string; status: string; statusReason: string; containerId: string | null; publicPorts: { port: number; hostPort: number }[] }
interface Service { port: number; publicAddress: string | null }
interface Failure { error: { code: string; fields?: Record<string, string> } }

/** Whether nothing listens on the port on any address, as Docker needs to publish it. */
const bindable = (port: number) => new Promise<boolean>((resolve) => {
  const server = createServer();
  server.once('error', () => resolve(false));
  server.listen(port, () => server.close(() => resolve(true)));
});

/** `size` consecutive ports nobody holds now, below Linux's ephemeral ports so no client takes them meanwhile. */
async function freeRange(size = RANGE_SIZE): Promise<number> {
  for (;;) {
    const start = 20_000 + Math.floor(Math.random() * 9_000);
    const ports = Array.from({ length: size }, (_, i) => start + i);
    if ((await Promise.all(ports.map(bindable))).every(Boolean)) return start;
  }
}

describeWithService(
  'Docker engine and a tianqi-helper build',
  Boolean(socketPath) && helperBuilt,
  'start dockerd (see .ci/run), set TIANQI_TEST_DOCKER_SOCKET, and have Go 1.23+ on PATH so helper/ builds',
  'Public ports (公网端口): host ports from the node\'s ledger, where the spec allows',
  () => {
    let t: TestApp;
    let lab: Lab;
    let imageId: string;
    let publicSpec: string;
    let first: number;
    const docker = new Dockerode({ socketPath });

    const create = (owner: string, name: string, body: Record<string, unknown>) =>
      t.api<Instance & Failure>('POST', '/api/v1/instances', { token: lab.tokens[owner], body: { name, imageId, specId: publicSpec, ...body } });
    const settled = (owner: string, id: string) => waitFor(
      () => t.api<Instance>('GET', `/api/v1/instances/${id}`, { token: lab.tokens[owner] }).then((r) => r.body),
      (i) => i.status !== 'creating' && (i.status !== 'running' || i.containerId !== null),
      60_000,
    );
    /** What the web service in the container answers on the node's port, with no credentials at all. */
    const direct = async (hostPort: number) => (await waitFor(
      () => raw(hostPort, 'GET', '/hello', { timeoutMs: 2_000 }).then((a) => a.status === 200 ? json<{ port: number; url: string }>(a) : null, () => null),
      (answer) => answer !== null,
      30_000,
    ))!;
    const bindings = async (containerId: string) => (await docker.getContainer(containerId).inspect()).HostConfig.PortBindings ?? {};

    beforeAll(async () => {
      t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000' });
      lab = await setUpLab(t, socketPath!, ['alice', 'bob']);
      first = await freeRange();
      const node = await t.api('PATCH', `/api/v1/nodes/${lab.nodeId}`, {
        token: lab.admin, body: { publicPortMin: first, publicPortMax: first + RANGE_SIZE - 1 },
      });
      expect(node.status, JSON.stringify(node.body)).toBe(200);
      const image = await t.api<{ id: string }>('POST', '/api/v1/images', {
        token: lab.admin,
        body: { name: 'notebook', address: ensureWebServiceImage(socketPath), ports: [{ port: 8888, name: 'JupyterLab' }, { port: 6006, name: 'TensorBoard' }] },
      });
      imageId = image.body.id;
      const spec = await t.api<{ id: string; publicPorts: number }>('POST', '/api/v1/specs', {
        token: lab.admin, body: { name: 'cpu-public', cpuCores: 1, memoryGb: 1, pricePerHour: 0.6, publicPorts: 2 },
      });
      expect([spec.status, spec.body.publicPorts]).toEqual([201, 2]);
      publicSpec = spec.body.id;
    }, 240_000);

    afterAll(async () => {
      await removeContainersOf(t, socketPath);
      await t?.stop();
    });

    it('refuses public ports the spec does not allow, too many, twice, or on a port that is not a service', async () => {
      const cases: [Record<string, unknown>, string][] = [
        [{ specId: lab.specId, publicPorts: [8888] }, 'this spec publishes no ports; ask an admin for a spec with public ports'],
        [{ publicPorts: [8888, 6006, 7860], servicePorts: [{ port: 7860, name: 'Gradio' }] }, 'this spec publishes at most 2 ports'],
        [{ publicPorts: [9999] }, 'port 9999 is not one of the instance\'s service ports (the image\'s or servicePorts)'],
        [{ publicPorts: [8888, 8888] }, 'each port may be published once'],
        [{ publicPorts: [0] }, 'must be 1–65535'],
      ];
      for (const [body, reason] of cases) {
        const refused = await create('alice', 'refused', body);
        expect([refused.status, refused.body.error.code], JSON.stringify(body)).toEqual([400, 'VALIDATION_FAILED']);
        expect(Object.values(refused.body.error.fields ?? {}).join(' ')).toContain(reason);
      }
      // nothing was reserved or appended for any of them
      const node = await t.api<{ used: { publicPorts: number; cpuCores: number } }>('GET', `/api/v1/nodes/${lab.nodeId}`, { token: lab.admin });
      expect(node.body.used).toMatchObject({ publicPorts: 0, cpuCores: 0 });
      expect((await t.api<unknown[]>('GET', '/api/v1/instances', { token: lab.tokens.alice })).body).toEqual([]);
    });

    it('maps a service port to the lowest free host port, reachable at publicIp:hostPort by anyone, and shows it', async () => {
      const created = await create('alice', 'web', { publicPorts: [8888] });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      expect(created.body.publicPorts).toEqual([{ port: 8888, hostPort: first }]);
      const ready = await settled('alice', created.body.id);
      expect(ready.status, ready.statusReason).toBe('running');
      expect(await bindings(ready.containerId!)).toEqual({ '8888/tcp': [{ HostIp: '', HostPort: String(first) }] });
      // no sign-in: a public port is the node's own
      expect(await direct(first)).toMatchObject({ port: 8888, url: '/hello' });

      const services = await t.api<Service[]>('GET', `/api/v1/instances/${created.body.id}/services`, { token: lab.tokens.alice });
      expect(services.body.map((s) => [s.port, s.publicAddress])).toEqual([[8888, `127.0.0.1:${first}`], [6006, null]]);
      const node = await t.api<{ used: { publicPorts: number }; reservations: { instanceId: string; hostPorts?: unknown }[] }>('GET', `/api/v1/nodes/${lab.nodeId}`, { token: lab.admin });
      expect(node.body.used.publicPorts).toBe(1);
      expect(node.body.reservations.find((r) => r.instanceId === created.body.id)!.hostPorts).toEqual([{ port: 8888, hostPort: first }]);
      const history = await t.api<{ type: string; summary: string }[]>('GET', `/api/v1/instances/${created.body.id}/history`, { token: lab.tokens.alice });
      expect(history.body.find((e) => e.type === 'InstancePlaced')!.summary).toContain(`public ports 8888 → host port ${first}`);
    });

    it('publishes nothing for an instance whose spec has no public ports', async () => {
      const created = await t.api<Instance>('POST', '/api/v1/instances', { token: lab.tokens.bob, body: { name: 'private', imageId, specId: lab.specId } });
      const ready = await settled('bob', created.body.id);
      expect(ready.publicPorts).toEqual([]);
      expect(await bindings(ready.containerId!)).toEqual({});
    });

    it('keeps a published port of the instance\'s own for the container\'s life', async () => {
      const created = await create('alice', 'gradio', { servicePorts: [{ port: 7860, name: 'Gradio' }], publicPorts: [7860] });
      expect(created.body.publicPorts).toEqual([{ port: 7860, hostPort: first + 1 }]);
      const removal = await t.api<Failure>('DELETE', `/api/v1/instances/${created.body.id}/services/7860`, { token: lab.tokens.alice });
      expect([removal.status, removal.body.error.code]).toEqual([409, 'PORT_PUBLISHED']);
      expect((await settled('alice', created.body.id)).status).toBe('running');
    });

    it('never books a host port twice under concurrent creates: the range runs out with a clear 409', async () => {
      // two ports of four are held; five creates race for the other two
      const answers = await Promise.all(Array.from({ length: 5 }, (_, i) => create('bob', `race-${i}`, { publicPorts: [8888] })));
      const won = answers.filter((a) => a.status === 201);
      const lost = answers.filter((a) => a.status !== 201);
      expect(won).toHaveLength(2);
      expect(lost.map((a) => [a.status, a.body.error.code])).toEqual([[409, 'NO_CAPACITY'], [409, 'NO_CAPACITY'], [409, 'NO_CAPACITY']]);
      expect(lost[0]!.body).toMatchObject({ error: { message: expect.stringContaining('1 public port') } });
      const ports = won.map((a) => a.body.publicPorts[0]!.hostPort).sort();
      expect(ports).toEqual([first + 2, first + 3]);
      // each container got its own binding from the engine, none failed on "port is already allocated"
      for (const a of won) {
        const ready = await settled('bob', a.body.id);
        expect(ready.status, ready.statusReason).toBe('running');
        expect((await direct(a.body.publicPorts[0]!.hostPort)).port).toBe(8888);
      }
      const node = await t.api<{ used: { publicPorts: number } }>('GET', `/api/v1/nodes/${lab.nodeId}`, { token: lab.admin });
      expect(node.body.used.publicPorts).toBe(RANGE_SIZE);
      const placements = await t.api<{ freePublicPorts: number }[]>('GET', `/api/v1/placements?imageId=${imageId}&specId=${publicSpec}`, { token: lab.tokens.bob });
      expect(placements.body.map((p) => p.freePublicPorts)).toEqual([0]);
    });

    it('keeps the host port across stop and start, and gives it back when the instance is deleted', async () => {
      const list = await t.api<(Instance & { name: string })[]>('GET', '/api/v1/instances', { token: lab.tokens.alice });
      const web = list.body.find((i) => i.name === 'web')!;
      expect((await t.api('POST', `/api/v1/instances/${web.id}/stop?wait=true`, { token: lab.tokens.alice })).status).toBe(200);
      expect(await raw(first, 'GET', '/hello', { timeoutMs: 2_000 }).then(() => 'answered', () => 'closed')).toBe('closed');
      expect((await t.api('POST', `/api/v1/instances/${web.id}/start`, { token: lab.tokens.alice })).status).toBe(200);
      expect((await direct(first)).port).toBe(8888);

      expect((await t.api('DELETE', `/api/v1/instances/${web.id}`, { token: lab.tokens.alice })).status).toBe(204);
      const again = await create('bob', 'after', { publicPorts: [8888] });
      expect(again.status, JSON.stringify(again.body)).toBe(201);
      expect(again.body.publicPorts).toEqual([{ port: 8888, hostPort: first }]);
      expect((await settled('bob', again.body.id)).status).toBe('running');
      expect((await direct(first)).port).toBe(8888);
    });

    it('50 concurrent creates on a range of 20 ports: 20 placed, each on a port of its own that the engine binds, 30 refused', async () => {
      for (const owner of ['alice', 'bob']) {
        for (const i of (await t.api<Instance[]>('GET', '/api/v1/instances', { token: lab.tokens[owner] })).body) {
          expect((await t.api('DELETE', `/api/v1/instances/${i.id}`, { token: lab.tokens[owner] })).status).toBe(204);
        }
      }
      const start = await freeRange(20);
      expect((await t.api('PATCH', `/api/v1/nodes/${lab.nodeId}`, { token: lab.admin, body: { publicPortMin: start, publicPortMax: start + 19 } })).status).toBe(200);
      const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => create(i % 2 ? 'alice' : 'bob', `many-${i}`, { publicPorts: [8888] })));
      const won = answers.filter((a) => a.status === 201);
      expect(won.map((a) => a.body.publicPorts), JSON.stringify({ start, ports: won.map((a) => a.body.publicPorts) })).toHaveLength(20);
      expect(answers.filter((a) => a.status === 409 && a.body.error.code === 'NO_CAPACITY')).toHaveLength(30);
      const ports = won.map((a) => a.body.publicPorts[0]!.hostPort).sort((a, b) => a - b);
      expect(ports).toEqual(Array.from({ length: 20 }, (_, i) => start + i));
      // The engine took every binding: no "port is already allocated" anywhere.
      for (const a of won) {
        const ready = await settled(a.body.id && won.indexOf(a) >= 0 ? (answers.indexOf(a) % 2 ? 'alice' : 'bob') : 'bob', a.body.id);
        expect(ready.status, ready.statusReason).toBe('running');
      }
      const node = await t.api<{ used: { publicPorts: number } }>('GET', `/api/v1/nodes/${lab.nodeId}`, { token: lab.admin });
      expect(node.body.used.publicPorts).toBe(20);
    }, 180_000);
  },
);
