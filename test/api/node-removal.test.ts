import { existsSync } from 'node:fs';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { startTestApp, type TestApp } from '../support/app.ts';
import { runningInstance, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { SecondEngine, dockerd } from '../support/second-engine.ts';
import { describeWithService } from '../support/services.ts';
import { SERVICE_IMAGE } from '../support/test-image.ts';

const helperBuilt = existsSync(join(loadConfig({}).helperDir, 'linux-amd64', 'tianqi-helper'));
const canRun = Boolean(dockerd) && process.getuid?.() === 0 && existsSync('/usr/sbin/nft') && helperBuilt;

/**
 * A node taken out of the platform takes the node guard with it: its container and its nftables
 * table (the rules outlive a stopped guard on purpose, so they need removing on their own). The
 * engine is a second dockerd in a network namespace of its own: the guard's rules there touch
 * neither this machine's firewall nor the other test files, which share one guard on the shared
 * engine.
 */
describeWithService(
  'root, dockerd and nft installed, and a tianqi-helper build',
  canRun,
  'run as root with docker.io and nftables installed, and build helper/ (npm run build:helper)',
  'Deleting a node removes its guard and the guard\'s rules',
  () => {
    const engine = new SecondEngine();
    let t: TestApp;
    let lab: Lab;
    const docker = () => new Dockerode({ socketPath: engine.socket });
    const guards = async () => (await docker().listContainers({ all: true, filters: { label: ['tianqi.role'] } })).map((c) => c.Labels['tianqi.role']);
    const rules = () => engine.inNetns(['nft', 'list', 'table', 'inet', 'tianqi']);
    const instanceGone = (id: string) => waitFor(() => t.api('GET', `/api/v1/instances/${id}`, { token: lab.admin }), (r) => r.status === 404, 30_000);
    const addNode = async (name: string) => {
      const node = await t.api<{ id: string; dockerStatus: string }>('POST', '/api/v1/nodes', {
        token: lab.admin,
        body: { name, publicIp: '127.0.0.1', privateIp: '127.0.0.1', dockerEndpoint: `unix://${engine.socket}`, cpuCores: 8, memoryGb: 8 },
      });
      expect(node.body.dockerStatus).toBe('connected');
      return node.body.id;
    };

    beforeAll(async () => {
      await engine.start();
      t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000' });
      lab = await setUpLab(t, engine.socket, ['alice']);
    }, 120_000);

    afterAll(async () => {
      await t?.stop();
      await engine.destroy();
    });

    it('keeps the guard while a tenant container is left on the engine, removes it and its rules when the last node goes', async () => {
      const alice = lab.tokens.alice!;
      const first = await runningInstance(t, alice, lab, 'guarded');
      expect(first.status).toBe('running');
      expect(await guards()).toEqual(['node-guard']);
      expect(rules().output).toContain('iifname "tqn*"');

      // A node with a live instance is not deleted; nothing is touched.
      expect((await t.api('DELETE', `/api/v1/nodes/${lab.nodeId}`, { token: lab.admin })).status).toBe(409);
      expect(await guards()).toEqual(['node-guard']);

      // A tenant container of someone else's (another deployment, a leftover) keeps the guard up.
      expect((await t.api('DELETE', `/api/v1/instances/${first.id}`, { token: alice })).status).toBeLessThan(300);
      await instanceGone(first.id);
      const stray = await docker().createContainer({ Image: SERVICE_IMAGE, Cmd: ['sleep', '600'], Labels: { 'managed-by': 'tianqi' } });
      expect((await t.api('DELETE', `/api/v1/nodes/${lab.nodeId}`, { token: lab.admin })).status).toBe(204);
      expect(await guards()).toEqual(['node-guard']);
      expect(rules().ok).toBe(true);
      await stray.remove({ force: true });

      // The engine joins again as another node, runs a tenant, and then leaves for good.
      const again = await addNode('again');
      const second = await runningInstance(t, alice, { ...lab, nodeId: again }, 'guarded-again');
      expect(second.status).toBe('running');
      expect((await t.api('DELETE', `/api/v1/instances/${second.id}`, { token: alice })).status).toBeLessThan(300);
      await instanceGone(second.id);
      expect((await t.api('DELETE', `/api/v1/nodes/${again}`, { token: lab.admin })).status).toBe(204);

      expect(await guards(), 'no guard and no removal task left behind').toEqual([]);
      const after = rules();
      expect(after.ok, after.output).toBe(false);
      expect(after.output).toMatch(/No such file|does not exist/i);
    }, 120_000);
  },
);
