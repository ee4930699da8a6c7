import { randomBytes } from 'node:crypto';
import type { Socket } from 'socket.io-client';
import ssh2, { type ClientChannel } from 'ssh2';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { AesGcmSecretBox } from '../../src/adapters/secrets/aes-gcm.secret-box.ts';
import { TOKEN_LIFETIME_SECONDS, TokenService } from '../../src/commands/user/token.ts';
import { USERS, type UserView } from '../../src/projections/users.projection.ts';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, runningInstance, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { freePort } from '../support/ports.ts';
import { describeWithService } from '../support/services.ts';
import { connected, newSocket } from '../support/sockets.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;

interface Seen {
  errors: { code: string }[];
  ends: { instanceId: string; reason: string }[];
  instances: { id: string; name: string }[];
  lines: { instanceId: string }[];
  disconnectedAt: number | null;
}

/**
 * Open live channels follow what their user may do now, within a second: socket.io `/live`,
 * `/logs`, `/terminal` and the SSH jump host, after a disable, a password change, a demotion from
 * admin and a token's expiry.
 */
describeWithService('Docker engine', Boolean(socketPath), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'Live channels re-check who is asking', () => {
  const masterKey = randomBytes(32);
  let t: TestApp;
  let lab: Lab;
  let sshPort: number;
  const sockets: Socket[] = [];
  const ids: Record<string, string> = {};
  const boxes: Record<string, string> = {};

  const open = async (namespace: string, token: string): Promise<{ socket: Socket; seen: Seen }> => {
    const socket = newSocket(t.url, namespace, token);
    sockets.push(socket);
    const seen: Seen = { errors: [], ends: [], instances: [], lines: [], disconnectedAt: null };
    socket.on('error', (e: { code: string }) => seen.errors.push(e));
    socket.on('end', (e: { instanceId: string; reason: string }) => seen.ends.push(e));
    socket.on('instance', (i: { id: string; name: string }) => seen.instances.push(i));
    socket.on('line', (l: { instanceId: string }) => seen.lines.push(l));
    socket.on('disconnect', () => (seen.disconnectedAt ??= Date.now()));
    await connected(socket);
    return { socket, seen };
  };
  const patchUser = (name: string, body: Record<string, unknown>) =>
    t.api('PATCH', `/api/v1/users/${ids[name]}`, { token: lab.admin, body });
  const sshShell = (username: string, password: string): Promise<{ client: ssh2.Client; channel: ClientChannel; closedAt: () => number | null }> =>
    new Promise((resolve, reject) => {
      const client = new ssh2.Client();
      let closedAt: number | null = null;
      client.on('close', () => (closedAt ??= Date.now()));
      client.on('ready', () => client.exec('sleep 600', (err, channel) => {
        if (err) return reject(err);
        channel.on('close', () => (closedAt ??= Date.now()));
        channel.on('data', () => undefined);
        channel.stderr.on('data', () => undefined);
        resolve({ client, channel, closedAt: () => closedAt });
      })).on('error', reject);
      client.connect({ host: '127.0.0.1', port: sshPort, username, password, readyTimeout: 15_000, hostVerifier: () => true });
    });

  beforeAll(async () => {
    sshPort = await freePort();
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000', TIANQI_SSH_PORT: String(sshPort), TIANQI_MASTER_KEY: masterKey.toString('base64') });
    lab = await setUpLab(t, socketPath!, ['alice', 'ops', 'ops2', 'bob', 'carol']);
    const users = await t.api<{ id: string; username: string }[]>('GET', '/api/v1/users', { token: lab.admin });
    for (const u of users.body) ids[u.username] = u.id;
    for (const name of ['ops', 'ops2']) expect((await patchUser(name, { role: 'admin' })).status).toBe(200);
    // tokens issued before the promotion carry no role: sign in again as admins
    lab.tokens.ops = await t.login('ops', 'ops-password');
    lab.tokens.ops2 = await t.login('ops2', 'ops2-password');
    boxes.alice = (await runningInstance(t, lab.tokens.alice!, lab, 'a-box')).id;
    boxes.ops2 = (await runningInstance(t, lab.tokens.ops2!, lab, 'ops2-box')).id;
  }, 180_000);

  afterAll(async () => {
    for (const s of sockets) s.disconnect();
    await removeContainersOf(t, socketPath);
    await t?.stop();
  });

  it('a demoted admin leaves the admins room of /live and loses other users\' logs within 1 s, keeping the connection', async () => {
    const live = await open('/live', lab.tokens.ops!);
    const logs = await open('/logs', lab.tokens.ops!);
    logs.socket.emit('follow', { instanceId: boxes.alice, tail: 5 });
    await waitFor(async () => logs.seen.lines.length, (n) => n > 0, 10_000);
    // as an admin it sees other users' instances change
    const create = (name: string) => t.api('POST', '/api/v1/instances', { token: lab.tokens.alice, body: { name, imageId: lab.imageId, specId: lab.specId } });
    expect((await create('seen-by-admins')).status).toBe(201);
    await waitFor(async () => live.seen.instances, (list) => list.some((i) => i.name === 'seen-by-admins'), 5_000);

    const demotedAt = Date.now();
    expect((await patchUser('ops', { role: 'user' })).status).toBe(200);
    await waitFor(async () => logs.seen.ends, (ends) => ends.some((e) => e.instanceId === boxes.alice), 1_000);
    expect(Date.now() - demotedAt).toBeLessThan(1_000);
    expect(logs.seen.ends[0]!.reason).toBe('you are no longer an admin');

    live.seen.instances.length = 0;
    expect((await create('not-seen-any-more')).status).toBe(201);
    await new Promise((r) => setTimeout(r, 1_000));
    expect(live.seen.instances.filter((i) => i.name === 'not-seen-any-more')).toEqual([]);
    expect(live.socket.connected).toBe(true);
    // and asking again for another user's logs is refused like any user's
    logs.socket.emit('follow', { instanceId: boxes.alice });
    await waitFor(async () => logs.seen.errors, (e) => e.some((x) => x.code === 'NOT_FOUND'), 3_000);
  });

  it('a password change disconnects the user\'s /live and /logs sockets within 1 s', async () => {
    const live = await open('/live', lab.tokens.carol!);
    const logs = await open('/logs', lab.tokens.carol!);
    const changedAt = Date.now();
    const changed = await t.api('POST', '/api/v1/auth/password', { token: lab.tokens.carol, body: { currentPassword: 'carol-password', newPassword: 'carol-password-2' } });
    expect(changed.status).toBeLessThan(300);
    await waitFor(async () => live.seen.disconnectedAt !== null && logs.seen.disconnectedAt !== null, Boolean, 1_000);
    expect(live.seen.disconnectedAt! - changedAt).toBeLessThan(1_000);
    expect(live.seen.errors.map((e) => e.code)).toEqual(['PASSWORD_CHANGED']);
  });

  it('a /terminal socket opened before a disable cannot open a shell after it', async () => {
    const terminal = await open('/terminal', lab.tokens.bob!);
    expect((await patchUser('bob', { disabled: true })).status).toBe(200);
    terminal.socket.emit('open', { instanceId: boxes.alice, cols: 80, rows: 24 });
    await waitFor(async () => terminal.seen.errors.length, (n) => n > 0, 3_000);
    expect(terminal.seen.errors.map((e) => e.code)).toEqual(['UNAUTHORIZED']);
    await waitFor(async () => terminal.seen.disconnectedAt, (d) => d !== null, 3_000);
    await patchUser('bob', { disabled: false });
  });

  it('a socket disconnects when its token expires', async () => {
    // A token like the server's, issued so that it expires in about 1.5 s.
    const tokens = new TokenService(new AesGcmSecretBox(masterKey).deriveKey('tokens/hs256'));
    const { passwordChangedAt } = (await t.app.readStore.collection<UserView>(USERS).get(ids.alice!))!;
    const shortLived = tokens.issue(ids.alice!, passwordChangedAt, Date.now() - TOKEN_LIFETIME_SECONDS * 1000 + 1_500);
    const live = await open('/live', shortLived);
    await waitFor(async () => live.seen.disconnectedAt, (d) => d !== null, 4_000);
    expect(live.seen.errors.map((e) => e.code)).toEqual(['TOKEN_EXPIRED']);
  });

  it('SSH: a demoted admin\'s session in another user\'s instance ends, the one in their own goes on; a password change ends both', async () => {
    const foreign = await sshShell('ops2+a-box', 'ops2-password');
    const own = await sshShell('ops2+ops2-box', 'ops2-password');
    const demotedAt = Date.now();
    expect((await patchUser('ops2', { role: 'user' })).status).toBe(200);
    await waitFor(async () => foreign.closedAt(), (c) => c !== null, 1_000);
    expect(foreign.closedAt()! - demotedAt).toBeLessThan(1_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(own.closedAt()).toBeNull();

    const changedAt = Date.now();
    expect((await patchUser('ops2', { password: 'ops2-password-2' })).status).toBe(200);
    await waitFor(async () => own.closedAt(), (c) => c !== null, 1_000);
    expect(own.closedAt()! - changedAt).toBeLessThan(1_000);
    foreign.client.end();
    own.client.end();
  });
});
