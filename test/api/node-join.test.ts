import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import Dockerode from 'dockerode';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createCa, createCsr, issueClientCertificate } from '../../src/adapters/pki/platform-pki.ts';
import { loadConfig } from '../../src/config.ts';
import type { DockerConnectionSettings } from '../../src/ports/docker.port.ts';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { waitFor } from '../support/fixtures.ts';
import { SecondEngine, dockerd } from '../support/second-engine.ts';
import { freePort } from '../support/ports.ts';
import { describeWithService } from '../support/services.ts';
import { ensureServiceImage } from '../support/test-image.ts';

const helperDir = loadConfig({}).helperDir;
const helperBuilt = existsSync(join(helperDir, 'linux-amd64', 'tianqi-helper'));
const hasCurl = spawnSync('sh', ['-c', 'command -v curl'], { stdio: 'ignore' }).status === 0;
const canRun = Boolean(dockerd) && process.getuid?.() === 0 && helperBuilt && hasCurl;

interface Node {
  id: string; dockerStatus: string; dockerError: string | null; dockerEndpoint: string; agentPort: number | null;
  engine: { agentVersion?: string } | null;
  readiness: { code: string; ok: boolean | null; detail: string }[];
  join: { agent: { hostname: string; address: string; version: string; clientFingerprint: string; serverFingerprint: string; certExpiresAt: string; rotatedAt: string | null } | null;
    tokens: { tokenId: string; usedAt: string | null; revokedAt: string | null; expiresAt: string }[] } | null;
  error?: { code: string; message: string };
}
interface Issued { tokenId: string; token: string; expiresAt: string; command: string; caSha256: string }
interface Failure { error: { code: string; message: string; fields?: Record<string, string> } }

/** A TLS handshake with the agent as `client`; resolves true when the agent answers an HTTP request. */
function reaches(port: number, client: { cert: string; key: string }, ca: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, ca, cert: client.cert, key: client.key, rejectUnauthorized: true }, () => {
      socket.write('GET /_ping HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n');
    });
    let answer = '';
    socket.on('data', (d: Buffer) => { answer += d.toString(); });
    socket.on('end', () => resolve(answer.startsWith('HTTP/1.1 200')));
    socket.on('error', () => resolve(false));
    socket.setTimeout(5_000, () => { socket.destroy(); resolve(false); });
  });
}

/** Runs a command line as the admin would paste it, with the settings of this machine (the agent in the foreground). */
function runCommand(command: string, env: Record<string, string>): ChildProcess & { stderrText: () => string; exited: Promise<number | null>; killGroup: () => void } {
  // A process group of its own: `curl | sh` runs the agent in a pipeline under this shell, and a kill must reach it.
  const child = spawn('sh', ['-c', command], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  child.stdout!.resume();
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const killGroup = () => { try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ } };
  return Object.assign(child, { stderrText: () => stderr, exited, killGroup });
}

/**
 * 添加节点 with one command, end to end on this machine: the command the API gives is run as is
 * (curl | sh), its script fetches the helper from the platform, joins, and runs the agent in the
 * foreground (TIANQI_AGENT_INIT=none, as there is no systemd here) against a second dockerd; the
 * platform then reaches that engine only through the agent's mutual TLS.
 */
describeWithService('root, dockerd, curl and a tianqi-helper build', canRun, 'run as root with docker.io and curl installed and build helper/ (npm run build:helper)', 'nodes join in one command (the node agent)', () => {
  const engine = new SecondEngine();
  const stateDir = mkdtempSync(join(tmpdir(), 'tianqi-agent-'));
  const agentEnv = {
    TIANQI_AGENT_DIR: stateDir, TIANQI_AGENT_BIN: join(stateDir, 'bin', 'tianqi-helper'), TIANQI_AGENT_INIT: 'none', DOCKER_SOCKET: engine.socket,
  };
  let t: TestApp;
  let admin: string;
  let alice: string;
  let nodeId: string;
  let port: number;
  let agent: ReturnType<typeof runCommand> | undefined;
  let clockOffset = 0;
  let instanceId: string;
  let joinedSettings: DockerConnectionSettings;
  const node = () => t.api<Node>('GET', `/api/v1/nodes/${nodeId}`, { token: admin }).then((r) => r.body);
  const issue = (body: Record<string, unknown> = {}) => t.api<Issued & Failure>('POST', `/api/v1/nodes/${nodeId}/join-tokens`, { token: admin, body });
  const script = async (token: string) => {
    const r = await fetch(`${t.url}/api/v1/join/${token}/install.sh`);
    return { status: r.status, text: await r.text() };
  };

  beforeAll(async () => {
    await engine.start();
    const address = ensureServiceImage(engine.socket);
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000' }, { clock: () => Date.now() + clockOffset });
    admin = await t.login('admin', ADMIN_PASSWORD);
    await t.api('POST', '/api/v1/users', { token: admin, body: { username: 'alice', password: 'alice-password' } });
    alice = await t.login('alice', 'alice-password');
    const image = (await t.api<{ id: string }>('POST', '/api/v1/images', { token: admin, body: { name: 'busybox', address } })).body.id;
    const spec = (await t.api<{ id: string }>('POST', '/api/v1/specs', { token: admin, body: { name: 'cpu', cpuCores: 1, memoryGb: 1 } })).body.id;
    port = await freePort();
    const created = await t.api<Node>('POST', '/api/v1/nodes', {
      token: admin, body: { name: 'gpu-01', publicIp: '127.0.0.1', privateIp: '127.0.0.1', agentPort: port, cpuCores: 2, memoryGb: 2 },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    nodeId = created.body.id;
    // Remembered for the instance test below.
    (globalThis as Record<string, unknown>).__joinLab = { image, spec };
  }, 120_000);

  afterAll(async () => {
    agent?.killGroup();
    await t?.stop();
    await engine.destroy();
  });

  it('waits for its agent before it is tested, and offers a single-use command', async () => {
    const waiting = await node();
    expect(waiting.dockerStatus).toBe('unknown');
    expect(waiting.dockerEndpoint).toBe('');
    expect(waiting.readiness.find((r) => r.code === 'AGENT')).toMatchObject({ ok: null, detail: 'waiting for the join command to be run on the node' });
    const issued = await issue();
    expect(issued.status, JSON.stringify(issued.body)).toBe(201);
    expect(issued.body.command).toBe(`curl -sSL '${t.url}/api/v1/join/${issued.body.token}/install.sh' | sh`);
    expect(Date.parse(issued.body.expiresAt) - Date.now()).toBeGreaterThan(119 * 60_000);
    // The token is shown once: the node lists it by id, without the token or its hash.
    const listed = await node();
    expect(listed.join!.tokens.map((x) => x.tokenId)).toEqual([issued.body.tokenId]);
    expect(JSON.stringify(listed)).not.toContain(issued.body.token.split('.')[2]);
    // Bad input: a node reached through its engine has no join commands; a silly lifetime is a 400.
    expect((await issue({ ttlMinutes: 1 })).body.error.fields).toEqual({ ttlMinutes: 'must be 5–10080 (a week)' });
    (globalThis as Record<string, unknown>).__joinIssued = issued.body;
  });

  it('joins with the command as given: the agent serves the engine over mutual TLS, the node is connected and takes an instance', async () => {
    const issued = (globalThis as Record<string, unknown>).__joinIssued as Issued;
    agent = runCommand(issued.command, agentEnv);
    const joined = await waitFor(node, (n) => n.dockerStatus === 'connected' || agent!.exitCode !== null, 60_000);
    expect(joined.dockerStatus, agent.stderrText()).toBe('connected');
    expect(joined.dockerEndpoint).toBe(`tcp://127.0.0.1:${port}`);
    const helper = readFileSync(join(helperDir, 'linux-amd64', 'tianqi-helper'));
    const digest = createHash('sha256').update(helper).digest('hex').slice(0, 16);
    expect(joined.join!.agent).toMatchObject({ address: '127.0.0.1', version: digest, rotatedAt: null });
    expect(joined.engine!.agentVersion).toBe(digest);
    expect(joined.join!.tokens[0]!.usedAt).not.toBeNull();
    expect(joined.readiness.find((r) => r.code === 'AGENT')).toMatchObject({ ok: true });
    // The binary the script installed is the platform's build, and the key stayed on the node.
    expect(createHash('sha256').update(readFileSync(agentEnv.TIANQI_AGENT_BIN)).digest('hex')).toBe(createHash('sha256').update(helper).digest('hex'));
    expect(readFileSync(join(stateDir, 'agent.key'), 'utf8')).toContain('PRIVATE KEY');

    const { image, spec } = (globalThis as Record<string, unknown>).__joinLab as { image: string; spec: string };
    const created = await t.api<{ id: string }>('POST', '/api/v1/instances', { token: alice, body: { name: 'through-agent', imageId: image, specId: spec } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    instanceId = created.body.id;
    const running = await waitFor(() => t.api<{ status: string; statusReason: string; containerId: string | null }>('GET', `/api/v1/instances/${instanceId}`, { token: alice }).then((r) => r.body), (i) => i.status !== 'creating', 60_000);
    expect(running.status, running.statusReason).toBe('running');
    const container = await new Dockerode({ socketPath: engine.socket }).getContainer(running.containerId!).inspect();
    expect(container.State.Running).toBe(true);

    // A hijacked exec stream through the agent: stdin's end reaches the process, its output comes back whole.
    joinedSettings = await t.app.nodes.target(nodeId).then((x) => x.settings);
    const url = new URL(joinedSettings.endpoint.replace('tcp:', 'https:'));
    const docker = new Dockerode({ host: url.hostname, port: Number(url.port), protocol: 'https', ca: joinedSettings.ca, cert: joinedSettings.cert, key: joinedSettings.key });
    const exec = await docker.getContainer(running.containerId!).exec({ Cmd: ['sh', '-c', 'wc -c; echo done'], AttachStdin: true, AttachStdout: true, AttachStderr: true });
    const stream = await exec.start({ hijack: true, stdin: true });
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    const ended = new Promise((resolve) => stream.once('end', resolve));
    stream.end(Buffer.alloc(300_000, 7));
    await ended;
    // Demultiplexed by hand: 8-byte frame headers.
    const raw = Buffer.concat(chunks);
    let text = '';
    for (let at = 0; at + 8 <= raw.length;) {
      const size = raw.readUInt32BE(at + 4);
      text += raw.subarray(at + 8, at + 8 + size).toString();
      at += 8 + size;
    }
    expect(text.trim().split(/\s+/)).toEqual(['300000', 'done']);
  }, 120_000);

  it('refuses the token a second time, and clients of another CA or another node', async () => {
    const issued = (globalThis as Record<string, unknown>).__joinIssued as Issued;
    const again = runCommand(issued.command, { ...agentEnv, TIANQI_AGENT_DIR: mkdtempSync(join(tmpdir(), 'tianqi-agent-again-')) });
    expect(await again.exited).toBe(1);
    expect(again.stderrText()).toMatch(/tianqi: This join token was used at .* and works once/);
    const { csrPem } = await createCsr();
    const direct = await t.api<Failure>('POST', '/api/v1/join', { body: { token: issued.token, csr: csrPem, hostname: 'x', arch: 'amd64', version: 'v', time: new Date().toISOString() } });
    expect([direct.status, direct.body.error.code]).toEqual([401, 'JOIN_TOKEN_USED']);

    const ca = joinedSettings.ca!;
    expect(await reaches(port, { cert: joinedSettings.cert!, key: joinedSettings.key! }, ca)).toBe(true);
    const other = await createCa();
    const stranger = await issueClientCertificate(other, { nodeId });
    expect(await reaches(port, { cert: stranger.certPem, key: stranger.keyPem }, ca)).toBe(false);
    // Signed by the platform's own CA, but not the client this node's agent was given.
    const platformCa = await t.app.nodeAgents.ca();
    const sibling = await issueClientCertificate(platformCa, { nodeId: 'another-node' });
    expect(await reaches(port, { cert: sibling.certPem, key: sibling.keyPem }, ca)).toBe(false);
  }, 60_000);

  it('refuses a join from a node whose clock is off, an expired or revoked token, and says why in the script', async () => {
    const fresh = (await issue({ ttlMinutes: 5 })).body;
    const { csrPem } = await createCsr();
    const join = (token: string, time: string) => t.api<Failure>('POST', '/api/v1/join', { body: { token, csr: csrPem, hostname: 'x', arch: 'amd64', version: 'v', time } });
    const skewed = await join(fresh.token, new Date(Date.now() + 2 * 3_600_000).toISOString());
    expect([skewed.status, skewed.body.error.code]).toEqual([422, 'CLOCK_SKEW']);
    expect(skewed.body.error.message).toMatch(/clock is 2 h 0 min ahead of the platform's.*the token is not used up/);
    // Not used up: the script is still served.
    expect((await script(fresh.token)).status).toBe(200);
    const broken = await join(fresh.token, 'yesterday');
    expect(broken.body.error.fields).toEqual({ time: 'must be an RFC 3339 time' });
    const badCsr = await t.api<Failure>('POST', '/api/v1/join', { body: { token: fresh.token, csr: 'garbage', hostname: 'x', arch: 'amd64', version: 'v', time: new Date().toISOString() } });
    expect([badCsr.status, badCsr.body.error.fields]).toEqual([400, { csr: 'the certificate request is not a readable PEM PKCS#10 request' }]);
    expect((await script(fresh.token)).status).toBe(200);

    const expiring = (await issue({ ttlMinutes: 5 })).body;
    clockOffset = 6 * 60_000;
    try {
      const expired = await join(expiring.token, new Date(Date.now() + clockOffset).toISOString());
      expect([expired.status, expired.body.error.code]).toEqual([401, 'JOIN_TOKEN_EXPIRED']);
      const said = await script(expiring.token);
      expect(said.status).toBe(401);
      const run = spawnSync('sh', ['-c', said.text], { encoding: 'utf8' });
      expect(run.status).toBe(1);
      expect(run.stderr).toMatch(/^tianqi: This join token expired at /);
    } finally {
      clockOffset = 0;
    }
    const revoked = (await issue()).body;
    expect((await t.api('DELETE', `/api/v1/nodes/${nodeId}/join-tokens/${revoked.tokenId}`, { token: admin })).status).toBe(204);
    expect((await script(revoked.token)).text).toContain('This join token was revoked');
    expect((await fetch(`${t.url}/api/v1/join/${revoked.token}/helper/amd64`)).status).toBe(401);
    expect((await script('tqj.nonsense')).text).toContain('This is not a join token');
  }, 60_000);

  it('rotates the certificates: a new key on the node, a new client here, the old client refused after', async () => {
    const before = await node();
    const rotated = await t.api<Node>('POST', `/api/v1/nodes/${nodeId}/rotate-certificates`, { token: admin });
    expect(rotated.status, JSON.stringify(rotated.body)).toBe(200);
    expect(rotated.body.dockerStatus).toBe('connected');
    const after = rotated.body.join!.agent!;
    expect(after.rotatedAt).not.toBeNull();
    expect(after.clientFingerprint).not.toBe(before.join!.agent!.clientFingerprint);
    expect(after.serverFingerprint).not.toBe(before.join!.agent!.serverFingerprint);
    const now = await t.app.nodes.target(nodeId).then((x) => x.settings);
    expect(await reaches(port, { cert: now.cert!, key: now.key! }, now.ca!)).toBe(true);
    expect(await reaches(port, { cert: joinedSettings.cert!, key: joinedSettings.key! }, joinedSettings.ca!)).toBe(false);
    // The instance is still the platform's to manage.
    expect((await t.api('POST', `/api/v1/instances/${instanceId}/stop?wait=true`, { token: alice })).status).toBeLessThan(300);
    joinedSettings = now;
  }, 60_000);

  it('says so on the node\'s page when the agent dies, and connects again when it is back', async () => {
    agent!.killGroup();
    await agent!.exited;
    const down = (await t.api<Node>('POST', `/api/v1/nodes/${nodeId}/test`, { token: admin })).body;
    expect(down.dockerStatus).toBe('failed');
    expect(down.readiness.find((r) => r.code === 'AGENT')).toMatchObject({ ok: false });
    // In plain words for the console, the engine's own text behind them.
    expect((down as Node & { dockerErrorWords: unknown }).dockerErrorWords).toEqual({ code: 'ENGINE_UNREACHABLE', params: {}, detail: down.dockerError });
    expect(down.readiness.find((r) => r.code === 'AGENT')!.detail).toMatch(new RegExp(`^the agent on .* \\(127\\.0\\.0\\.1:${port}\\) does not answer: `));
    // Restarted as systemd would: from its state alone.
    agent = runCommand(`'${agentEnv.TIANQI_AGENT_BIN}' agent serve --state '${stateDir}'`, {});
    const up = await waitFor(() => t.api<Node>('POST', `/api/v1/nodes/${nodeId}/test`, { token: admin }).then((r) => r.body), (n) => n.dockerStatus === 'connected', 20_000);
    expect(up.readiness.find((r) => r.code === 'AGENT')!.ok).toBe(true);
  }, 60_000);

  it('removing the node stops its agent: the platform\'s client is refused and the agent does not start again', async () => {
    expect((await t.api('DELETE', `/api/v1/instances/${instanceId}`, { token: alice })).status).toBeLessThan(300);
    await waitFor(() => t.api<{ status: string }>('GET', `/api/v1/instances/${instanceId}`, { token: alice }).then((r) => r.status), (status) => status === 404, 30_000);
    const removed = await t.api('DELETE', `/api/v1/nodes/${nodeId}`, { token: admin });
    expect(removed.status, JSON.stringify(removed.body)).toBe(204);
    expect(await Promise.race([agent!.exited, new Promise((resolve) => setTimeout(() => resolve('still running'), 5_000))])).toBe(0);
    expect(agent!.stderrText()).toContain('the platform removed this node');
    expect(await reaches(port, { cert: joinedSettings.cert!, key: joinedSettings.key! }, joinedSettings.ca!)).toBe(false);
    expect(JSON.parse(readFileSync(join(stateDir, 'state.json'), 'utf8'))).toMatchObject({ left: true, clients: null });
    const again = runCommand(`'${agentEnv.TIANQI_AGENT_BIN}' agent serve --state '${stateDir}'`, {});
    expect(await again.exited).toBe(1);
    expect(again.stderrText()).toContain('this node was removed from the platform; run a new join command to add it again');
    agent = undefined;
  }, 60_000);
});
