import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, runningInstance, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';
import { SERVICE_IMAGE } from '../support/test-image.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
const helperBuilt = existsSync(join(loadConfig({}).helperDir, 'linux-amd64', 'tianqi-helper'));
const run = promisify(execFile);
const canNetns = process.getuid?.() === 0 && existsSync('/usr/sbin/ip');

/** A third octet of our own, so that two runs on one machine do not share addresses. */
const R = 100 + Math.floor(Math.random() * 150);
const LAN = `10.231.${R}`;
const LINK = `10.232.${R}`;
/** Stand-ins reached through the LAN host: another node's engine port, a CGNAT address, a link-local one. */
const LAN_HOST = `${LAN}.2`;
const CGNAT = `100.64.${R}.9`;
const LINK_LOCAL = `169.254.${R}.9`;
/** The internet side: an address no rule refuses, routed beyond a link network, as the internet is beyond a gateway. */
const INTERNET = `203.0.113.${R}`;
const PORT = 7000;

/**
 * Tenants kept off the operator's private networks: from tenant bridges the node guard drops what
 * is addressed to private, CGNAT, link-local and the node's own subnets, and lets the internet
 * through. Stand-ins live in network namespaces of this machine: a LAN host on a private address
 * (with a CGNAT and a link-local address routed to it), and an "internet" host beyond a link
 * network. A container on Docker's default bridge (unguarded) reaches them all, so a refused
 * probe means the guard, not a broken probe.
 */
describeWithService(
  'root with ip netns, a Docker engine with nftables, and a tianqi-helper build',
  Boolean(socketPath) && helperBuilt && canNetns,
  'run as root with iproute2, start dockerd (see .ci/run), set TIANQI_TEST_DOCKER_SOCKET and build helper/ (npm run build:helper)',
  'Tenant egress: private networks refused, the internet kept',
  () => {
    let t: TestApp;
    let lab: Lab;
    let reference: Docker.Container;
    const docker = new Docker({ socketPath });
    const listeners: ChildProcess[] = [];
    const ids: Record<string, string> = {};
    const matrix: Record<string, Record<string, boolean>> = {};

    const ip = (...args: string[]) => run('ip', args);
    const probe = async (containerId: string, host: string): Promise<boolean> => {
      try {
        const { stdout } = await run('docker', ['exec', containerId, 'sh', '-c', `echo | nc -w 2 ${host} ${PORT}`], {
          env: { ...process.env, DOCKER_HOST: `unix://${socketPath}` }, timeout: 20_000,
        });
        return stdout.includes('stand-in');
      } catch {
        return false;
      }
    };
    const containerOf = async (name: string) =>
      (await t.api<{ containerId: string }>('GET', `/api/v1/instances/${ids[name]}`, { token: lab.admin })).body.containerId;
    const targets: Record<string, string> = { 'LAN host (10/8)': LAN_HOST, 'CGNAT (100.64/10)': CGNAT, 'link-local (169.254/16)': LINK_LOCAL, 'internet': INTERNET };
    const reachable = async (containerId: string) => {
      const out: Record<string, boolean> = {};
      for (const [what, host] of Object.entries(targets)) out[what] = await probe(containerId, host);
      return out;
    };

    beforeAll(async () => {
      await cleanUp();
      // the LAN host, with a CGNAT and a link-local address routed to it
      await ip('netns', 'add', `tqlan${R}`);
      await ip('link', 'add', `tqlh${R}`, 'type', 'veth', 'peer', 'name', `tqlp${R}`);
      await ip('link', 'set', `tqlp${R}`, 'netns', `tqlan${R}`);
      await ip('addr', 'add', `${LAN}.1/24`, 'dev', `tqlh${R}`);
      await ip('link', 'set', `tqlh${R}`, 'up');
      for (const args of [['addr', 'add', `${LAN_HOST}/24`, 'dev', `tqlp${R}`], ['link', 'set', `tqlp${R}`, 'up'], ['link', 'set', 'lo', 'up'],
        ['addr', 'add', `${CGNAT}/32`, 'dev', 'lo'], ['addr', 'add', `${LINK_LOCAL}/32`, 'dev', 'lo']]) {
        await ip('netns', 'exec', `tqlan${R}`, 'ip', ...args);
      }
      await ip('route', 'add', `${CGNAT}/32`, 'via', LAN_HOST);
      await ip('route', 'add', `${LINK_LOCAL}/32`, 'via', LAN_HOST);
      // the internet host, beyond a /30 link
      await ip('netns', 'add', `tqinet${R}`);
      await ip('link', 'add', `tqih${R}`, 'type', 'veth', 'peer', 'name', `tqip${R}`);
      await ip('link', 'set', `tqip${R}`, 'netns', `tqinet${R}`);
      await ip('addr', 'add', `${LINK}.1/30`, 'dev', `tqih${R}`);
      await ip('link', 'set', `tqih${R}`, 'up');
      for (const args of [['addr', 'add', `${LINK}.2/30`, 'dev', `tqip${R}`], ['link', 'set', `tqip${R}`, 'up'], ['link', 'set', 'lo', 'up'],
        ['addr', 'add', `${INTERNET}/32`, 'dev', 'lo'], ['route', 'add', 'default', 'via', `${LINK}.1`]]) {
        await ip('netns', 'exec', `tqinet${R}`, 'ip', ...args);
      }
      await ip('route', 'add', `${INTERNET}/32`, 'via', `${LINK}.2`);
      for (const ns of [`tqlan${R}`, `tqinet${R}`]) {
        const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e',
          `require('net').createServer((s) => s.end('stand-in ${ns}\\n')).listen(${PORT}, '0.0.0.0')`], { stdio: 'ignore' });
        listeners.push(child);
      }
      t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000' });
      lab = await setUpLab(t, socketPath!, ['alice']);
      const offline = await t.api<{ id: string }>('POST', '/api/v1/specs', { token: lab.admin, body: { name: 'cpu-offline', cpuCores: 1, memoryGb: 1, pricePerHour: 0.4, internet: false } });
      expect(offline.status).toBe(201);
      ids.online = (await runningInstance(t, lab.tokens.alice!, lab, 'online')).id;
      const created = await t.api<{ id: string }>('POST', '/api/v1/instances', { token: lab.tokens.alice, body: { name: 'offline', imageId: lab.imageId, specId: offline.body.id } });
      ids.offline = created.body.id;
      await waitFor(() => t.api<{ status: string }>('GET', `/api/v1/instances/${ids.offline}`, { token: lab.tokens.alice }).then((r) => r.body), (i) => i.status !== 'creating', 60_000);
      reference = await docker.createContainer({ Image: SERVICE_IMAGE, Labels: { 'tianqi-test': 'egress-reference' }, HostConfig: { NetworkMode: 'bridge' } });
      await reference.start();
      // the stand-ins answer (their listeners may take a moment)
      await waitFor(() => probe(reference.id, INTERNET), (ok) => ok, 20_000);
    }, 240_000);

    afterAll(async () => {
      console.log(`egress matrix (true = reached): ${JSON.stringify(matrix)}`);
      for (const child of listeners) child.kill();
      await reference?.remove({ force: true }).catch(() => undefined);
      await removeContainersOf(t, socketPath);
      await t?.stop();
      await cleanUp();
    });

    it('an unguarded container reaches every stand-in; a tenant only the internet', async () => {
      matrix['default bridge (no guard)'] = await reachable(reference.id);
      expect(Object.values(matrix['default bridge (no guard)']!)).toEqual([true, true, true, true]);
      const tenant = (await containerOf('online'))!;
      matrix.tenant = await reachable(tenant);
      expect(matrix.tenant).toEqual({ 'LAN host (10/8)': false, 'CGNAT (100.64/10)': false, 'link-local (169.254/16)': false, internet: true });
      // DNS keeps working (Docker's resolver answers for the tenant, whatever address the node's own resolver has)
      const { stdout } = await run('docker', ['exec', tenant, 'sh', '-c', 'nslookup example.invalid 2>&1 || true'], { env: { ...process.env, DOCKER_HOST: `unix://${socketPath}` } });
      expect(stdout).toMatch(/NXDOMAIN|can't find/);
      expect(stdout).not.toMatch(/timed out/);
    }, 120_000);

    it('the node\'s allow-list lets a tenant reach one private address, and only that one, until it is taken away', async () => {
      const allow = await t.api('PATCH', `/api/v1/nodes/${lab.nodeId}`, { token: lab.admin, body: { egressAllow: [`${LAN_HOST}/32`] } });
      expect(allow.status).toBe(200);
      const tenant = (await containerOf('online'))!;
      await waitFor(() => probe(tenant, LAN_HOST), (ok) => ok, 30_000);
      matrix['tenant, LAN host allowed'] = await reachable(tenant);
      expect(matrix['tenant, LAN host allowed']).toEqual({ 'LAN host (10/8)': true, 'CGNAT (100.64/10)': false, 'link-local (169.254/16)': false, internet: true });
      // one guard on the node, whatever its settings were
      expect((await docker.listContainers({ all: true, filters: { label: ['tianqi.role=node-guard'] } })).length).toBe(1);
      expect((await t.api('PATCH', `/api/v1/nodes/${lab.nodeId}`, { token: lab.admin, body: { egressAllow: [] } })).status).toBe(200);
      await waitFor(() => probe(tenant, LAN_HOST), (ok) => !ok, 30_000);
      // bad entries are refused whole
      for (const egressAllow of [['10.0.0.0/33'], ['not-an-address'], ['10.0.0.1/8/1'], Array.from({ length: 33 }, (_, i) => `10.0.0.${i}`)]) {
        expect((await t.api('PATCH', `/api/v1/nodes/${lab.nodeId}`, { token: lab.admin, body: { egressAllow } })).status, JSON.stringify(egressAllow)).toBe(400);
      }
    }, 120_000);

    it('the rules come back when the guard starts again after a reboot emptied the firewall (it starts with dockerd: restart policy always)', async () => {
      const [guard] = await docker.listContainers({ all: true, filters: { label: ['tianqi.role=node-guard'] } });
      const container = docker.getContainer(guard!.Id);
      // it comes up with dockerd after a reboot, and with it after a dockerd restart
      expect((await container.inspect()).HostConfig.RestartPolicy?.Name).toBe('always');
      const tenant = (await containerOf('online'))!;
      // what a reboot leaves: no table (and so a tenant reaches the LAN host: the rules are what stops it)
      await run('nft', ['delete', 'table', 'inet', 'tianqi']);
      try {
        matrix['tenant, rules gone (reboot)'] = await reachable(tenant);
        expect(matrix['tenant, rules gone (reboot)']!['LAN host (10/8)']).toBe(true);
      } finally {
        await container.restart();
      }
      await waitFor(() => run('nft', ['list', 'table', 'inet', 'tianqi']).then(() => true, () => false), (ok) => ok, 10_000);
      matrix['tenant, guard restarted'] = await reachable(tenant);
      expect(matrix['tenant, guard restarted']).toEqual({ 'LAN host (10/8)': false, 'CGNAT (100.64/10)': false, 'link-local (169.254/16)': false, internet: true });
    }, 120_000);

    it('a spec without internet reaches nothing beyond its own bridge', async () => {
      const offline = (await containerOf('offline'))!;
      matrix['tenant, spec without internet'] = await reachable(offline);
      expect(Object.values(matrix['tenant, spec without internet']!)).toEqual([false, false, false, false]);
      const instance = await t.api<{ spec: { internet?: boolean } }>('GET', `/api/v1/instances/${ids.offline}`, { token: lab.tokens.alice });
      expect(instance.body.spec.internet).toBe(false);
    }, 60_000);
  },
);

/** Removes this run's namespaces, links and routes (a crashed earlier run may have left them). */
async function cleanUp(): Promise<void> {
  const quiet = (...args: string[]) => run('ip', args).catch(() => undefined);
  await quiet('route', 'del', `${INTERNET}/32`);
  await quiet('route', 'del', `${CGNAT}/32`);
  await quiet('route', 'del', `${LINK_LOCAL}/32`);
  await quiet('link', 'del', `tqlh${R}`);
  await quiet('link', 'del', `tqih${R}`);
  await quiet('netns', 'del', `tqlan${R}`);
  await quiet('netns', 'del', `tqinet${R}`);
}
