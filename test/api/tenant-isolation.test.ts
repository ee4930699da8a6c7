import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, runningInstance, setUpLab, type Lab } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';
import { SERVICE_IMAGE } from '../support/test-image.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
const helperBuilt = existsSync(join(loadConfig({}).helperDir, 'linux-amd64', 'tianqi-helper'));
const run = promisify(execFile);

/**
 * Tenants cannot reach the node or each other: every user's instances sit on a bridge of their
 * own, and the node guard drops what tenant bridges send to the node's own addresses. Probed from
 * inside real containers with busybox `nc`, next to a container on Docker's default bridge that
 * reaches the same ports (so a probe that fails means the guard, not a broken probe).
 */
describeWithService(
  'Docker engine with nftables, and a tianqi-helper build',
  Boolean(socketPath) && helperBuilt,
  'start dockerd (see .ci/run), set TIANQI_TEST_DOCKER_SOCKET, and build helper/ (npm run build:helper)',
  'Tenant isolation on a node',
  () => {
    let t: TestApp;
    let lab: Lab;
    let hostServer: Server;
    let hostPort: number;
    const docker = new Docker({ socketPath });
    const ids: Record<string, string> = {};
    let reference: Docker.Container;

    /** `nc` from a container to host:port: what it read, or null when it could not connect. */
    const probe = async (containerId: string, host: string, port: number): Promise<string | null> => {
      try {
        const { stdout } = await run('docker', ['exec', containerId, 'sh', '-c', `echo | nc -w 3 ${host} ${port}`], {
          env: { ...process.env, DOCKER_HOST: `unix://${socketPath}` }, timeout: 20_000,
        });
        return stdout;
      } catch {
        return null;
      }
    };
    const sh = async (containerId: string, script: string) =>
      (await run('docker', ['exec', containerId, 'sh', '-c', script], { env: { ...process.env, DOCKER_HOST: `unix://${socketPath}` } })).stdout.trim();
    const containerOf = async (name: string) =>
      (await t.api<{ containerId: string }>('GET', `/api/v1/instances/${ids[name]}`, { token: lab.admin })).body.containerId;

    beforeAll(async () => {
      hostServer = createServer((socket) => socket.end('host-service\n'));
      await new Promise<void>((resolve) => hostServer.listen(0, '0.0.0.0', resolve));
      hostPort = (hostServer.address() as { port: number }).port;
      // The platform listens on all addresses here, as in production.
      t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000', TIANQI_HOST: '0.0.0.0' });
      lab = await setUpLab(t, socketPath!, ['alice', 'bob']);
      for (const [owner, name] of [['alice', 'a1'], ['alice', 'a2'], ['bob', 'b1']] as const) {
        const instance = await runningInstance(t, lab.tokens[owner]!, lab, name);
        expect(instance.status).toBe('running');
        ids[name] = instance.id;
      }
      reference = await docker.createContainer({ Image: SERVICE_IMAGE, Labels: { 'tianqi-test': 'isolation-reference' }, HostConfig: { NetworkMode: 'bridge' } });
      await reference.start();
    }, 180_000);

    afterAll(async () => {
      await reference?.remove({ force: true }).catch(() => undefined);
      await removeContainersOf(t, socketPath);
      await t?.stop();
      hostServer?.close();
    });

    it('puts each user\'s instances on a bridge of their own, with the guard running on the node', async () => {
      const [a1, a2, b1] = await Promise.all(['a1', 'a2', 'b1'].map(containerOf));
      const networkOf = async (id: string) => Object.keys((await docker.getContainer(id).inspect()).NetworkSettings.Networks);
      const users = await t.api<{ id: string; username: string }[]>('GET', '/api/v1/users', { token: lab.admin });
      const alice = users.body.find((u) => u.username === 'alice')!.id;
      expect(await networkOf(a1!)).toEqual([`tianqi-user-${alice}`]);
      expect(await networkOf(a2!)).toEqual([`tianqi-user-${alice}`]);
      expect(await networkOf(b1!)).not.toEqual(await networkOf(a1!));
      const guards = await docker.listContainers({ filters: { label: ['tianqi.role=node-guard'] } });
      expect(guards.length).toBeGreaterThanOrEqual(1);
      expect(guards[0]!.State).toBe('running');
    });

    it('a tenant cannot reach the node\'s own ports (a host service, the platform), which the default bridge can', async () => {
      const a1 = (await containerOf('a1'))!;
      const referenceGateway = await sh(reference.id, "ip route | awk '/default/ {print $3}'");
      const tenantGateway = await sh(a1, "ip route | awk '/default/ {print $3}'");
      const hostAddresses = Object.values(networkInterfaces()).flat()
        .filter((a) => a && a.family === 'IPv4' && !a.internal && !a.address.startsWith('172.17.')).map((a) => a!.address);
      // the probe works: an unguarded container reaches the host service and the platform
      expect(await probe(reference.id, referenceGateway, hostPort)).toBe('host-service\n');
      expect(await probe(reference.id, referenceGateway, t.app.httpPort)).not.toBeNull();
      // the tenant reaches neither, through its gateway or any other address of the node
      for (const address of [tenantGateway, referenceGateway, ...hostAddresses]) {
        expect(await probe(a1, address, hostPort), `${address}:${hostPort}`).toBeNull();
        expect(await probe(a1, address, t.app.httpPort), `${address}:${t.app.httpPort}`).toBeNull();
      }
    }, 120_000);

    it('a tenant cannot reach another user\'s instance; the same user\'s two instances talk', async () => {
      const [a1, a2, b1] = (await Promise.all(['a1', 'a2', 'b1'].map(containerOf))) as [string, string, string];
      for (const id of [a2, b1]) await sh(id, '(nc -ll -p 9000 -e echo peer &) >/dev/null 2>&1; sleep 0.3');
      const ipOf = (id: string) => sh(id, "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1");
      expect(await probe(a1, await ipOf(a2), 9000)).toBe('peer\n');
      expect(await probe(a1, await ipOf(b1), 9000)).toBeNull();
      expect(await probe(b1, await ipOf(a2), 9000)).toBeNull();
    }, 60_000);

    it('removes a user\'s network with their last instance on the node', async () => {
      const users = await t.api<{ id: string; username: string }[]>('GET', '/api/v1/users', { token: lab.admin });
      const bob = users.body.find((u) => u.username === 'bob')!.id;
      expect((await t.api('DELETE', `/api/v1/instances/${ids.b1}`, { token: lab.tokens.bob })).status).toBeLessThan(300);
      const gone = async () => (await docker.listNetworks({ filters: { name: [`tianqi-user-${bob}`] } })).length === 0;
      const deadline = Date.now() + 20_000;
      while (!(await gone()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
      expect(await gone()).toBe(true);
    }, 30_000);
  },
);
