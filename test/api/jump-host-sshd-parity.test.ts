import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, type ClientChannel } from 'ssh2';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { freePort } from '../support/ports.ts';
import { describeWithService } from '../support/services.ts';
import { keyOptions, run } from '../support/ssh-clients.ts';
import { ensureToolsImage } from '../support/test-image.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
const helperBuilt = existsSync(join(loadConfig({}).helperDir, 'linux-amd64', 'tianqi-helper'));

/**
 * Where sshd puts a user, the jump host puts them too: shells, commands, scp -O, rsync and sftp
 * all start in the container user's $HOME; a quick command with a TTY keeps its output and status.
 */
describeWithService(
  'Docker engine and a tianqi-helper build',
  Boolean(socketPath) && helperBuilt,
  'start dockerd (see .ci/run), set TIANQI_TEST_DOCKER_SOCKET, and have tianqi-helper in dist/helper (npm test unpacks it)',
  'the jump host agrees with sshd',
  () => {
    const work = mkdtempSync(join(tmpdir(), 'tianqi-parity-'));
    let port: number;
    let t: TestApp;
    let lab: Lab;
    const options = () => [...keyOptions(join(work, 'key'), join(work, 'known_hosts')), '-o', 'BatchMode=yes'];
    const ssh = (args: string[]) => run('ssh', [...options(), '-p', String(port), ...args], '', 30_000);

    beforeAll(async () => {
      // The jump host reads these at start (this file's worker only): small, so that the test reaches them.
      process.env.TIANQI_SSH_MAX_SESSIONS_PER_USER = '3';
      process.env.TIANQI_SSH_MAX_FORWARDS_PER_USER = '3';
      process.env.TIANQI_SSH_MAX_CONNECTIONS_PER_USER = '3';
      // An instance's share: above one user's, so that only a second user (an admin) reaches it.
      process.env.TIANQI_SSH_MAX_SESSIONS_PER_INSTANCE = '4';
      process.env.TIANQI_SSH_MAX_FORWARDS_PER_INSTANCE = '4';
      port = await freePort();
      t = await startTestApp({ TIANQI_SSH_PORT: String(port), TIANQI_POLL_INTERVAL_MS: '60000' });
      lab = await setUpLab(t, socketPath!, ['alice']);
      await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(work, 'key')]);
      await t.api('POST', '/api/v1/users/me/ssh-keys', { token: lab.tokens.alice, body: { name: 'laptop', publicKey: readFileSync(join(work, 'key.pub'), 'utf8') } });
      const image = await t.api<{ id: string }>('POST', '/api/v1/images', { token: lab.admin, body: { name: 'tools', address: ensureToolsImage(socketPath) } });
      const created = await t.api<{ id: string }>('POST', '/api/v1/instances', { token: lab.tokens.alice, body: { name: 'tools', imageId: image.body.id, specId: lab.specId } });
      await waitFor(() => t.api<{ status: string }>('GET', `/api/v1/instances/${created.body.id}`, { token: lab.tokens.alice }).then((r) => r.body), (i) => i.status !== 'creating', 60_000);
    }, 180_000);

    afterAll(async () => {
      await removeContainersOf(t, socketPath);
      await t?.stop();
      rmSync(work, { recursive: true, force: true });
    });

    it('starts commands, scp -O, rsync and sftp in $HOME, as sshd does', async () => {
      expect((await ssh(['alice+tools@127.0.0.1', 'pwd'])).stdout).toBe('/root\n');
      const local = join(work, 'rel.txt');
      writeFileSync(local, 'relative\n');
      const scp = await run('scp', [...options(), '-O', '-P', String(port), local, 'alice+tools@127.0.0.1:scp-rel.txt'], '', 30_000);
      expect(scp.code, JSON.stringify(scp)).toBe(0);
      const rsync = await run('rsync', ['-e', ['ssh', ...options(), '-p', String(port)].join(' '), local, 'alice+tools@127.0.0.1:rsync-rel.txt'], '', 30_000);
      expect(rsync.code, JSON.stringify(rsync)).toBe(0);
      const sftp = await run('sftp', [...options(), '-P', String(port), '-b', '-', 'alice+tools@127.0.0.1'], `put ${local} sftp-rel.txt\n`, 30_000);
      expect(sftp.code, JSON.stringify(sftp)).toBe(0);
      const listing = await ssh(['alice+tools@127.0.0.1', 'ls /root; ls / | grep rel.txt || true']);
      expect(listing.stdout).toBe('rsync-rel.txt\nscp-rel.txt\nsftp-rel.txt\n');
    }, 60_000);

    it('runs a quick command with a TTY (ssh -t) to its end: output and exit status kept', async () => {
      for (let i = 0; i < 3; i++) {
        const r = await ssh(['-tt', 'alice+tools@127.0.0.1', 'echo quick; exit 3']);
        expect(r.stdout.replace(/\r/g, '')).toBe('quick\n');
        expect(r.code).toBe(3);
        expect(r.stderr).not.toMatch(/resize/);
      }
    }, 60_000);
  
    it('holds a user to their share over all their connections: sessions and forwards beyond the caps refused, with a message', async () => {
      const connect = () => new Promise<Client>((resolve, reject) => {
        const client = new Client();
        client.on('ready', () => resolve(client)).on('error', reject);
        client.connect({ host: '127.0.0.1', port, username: 'alice+tools', privateKey: readFileSync(join(work, 'key')), readyTimeout: 15_000, hostVerifier: () => true });
      });
      const exec = (client: Client, command: string) => new Promise<ClientChannel>((resolve, reject) => client.exec(command, (err, channel) => (err ? reject(err) : resolve(channel))));
      const forward = (client: Client) => new Promise<ClientChannel>((resolve, reject) => client.forwardOut('127.0.0.1', 0, '127.0.0.1', 9000, (err, channel) => (err ? reject(err) : resolve(channel))));
      expect((await ssh(['alice+tools@127.0.0.1', '(nc -ll -p 9000 -e cat &) >/dev/null 2>&1; sleep 0.3'])).code).toBe(0);
      // every earlier session has ended on the jump host's side too (its close is on the history)
      const instance = (await t.api<{ id: string }[]>('GET', '/api/v1/instances', { token: lab.tokens.alice })).body[0]!;
      await waitFor(() => t.app.eventStore.readStream(`instance-${instance.id}`), (events) =>
        events.filter((e) => e.type === 'TerminalSessionOpened').length === events.filter((e) => e.type === 'TerminalSessionClosed').length, 10_000);
      const [a, b] = await Promise.all([connect(), connect()]);
      try {
        // two sessions on one connection, one on the other: the user's three
        const step = async <T>(name: string, work: Promise<T>) => work.catch((err: Error) => { throw new Error(`${name}: ${err.message}`); });
        await step('a1', exec(a, 'sleep 30'));
        await step('a2', exec(a, 'sleep 30'));
        const onB = await step('b1', exec(b, 'sleep 30'));
        let told = '';
        onB.stderr.on('data', (d: Buffer) => (told += d.toString()));
        await expect(exec(b, 'sleep 30')).rejects.toThrow();
        await waitFor(async () => told, (text) => text.includes('TIANQI_SSH_MAX_SESSIONS_PER_USER'), 5_000);
        // three forwards on one connection; the fourth, on the other, is refused and said
        const channels = await step('forwards', Promise.all([forward(a), forward(a), forward(a)]));
        expect(channels).toHaveLength(3);
        await expect(forward(b)).rejects.toThrow();
        await waitFor(async () => told, (text) => text.includes('TIANQI_SSH_MAX_FORWARDS_PER_USER'), 5_000);
        // one closed, one more may open
        channels[0]!.close();
        await waitFor(() => forward(b).then((c) => { c.close(); return true; }, () => false), (ok) => ok, 5_000);
      } finally {
        a.end();
        b.end();
      }
    }, 60_000);

    it('holds signed-in connections to the user\'s cap, and an instance to its own share of sessions and forwards, each with a message', async () => {
      const connect = (username: string, auth: { privateKey: Buffer } | { password: string }) => new Promise<Client>((resolve, reject) => {
        const client = new Client();
        client.on('ready', () => resolve(client)).on('error', reject);
        client.connect({ host: '127.0.0.1', port, username, ...auth, readyTimeout: 15_000, hostVerifier: () => true });
      });
      const key = { privateKey: readFileSync(join(work, 'key')) };
      const exec = (client: Client, command: string) => new Promise<{ channel: ClientChannel; told: () => string; exit: Promise<number | null> }>((resolve, reject) =>
        client.exec(command, (err, channel) => {
          if (err) return reject(err);
          let told = '';
          channel.stderr.on('data', (d: Buffer) => (told += d.toString()));
          const exit = new Promise<number | null>((done) => {
            channel.on('exit', (code: number | null) => done(code));
            channel.on('close', () => done(null));
          });
          resolve({ channel, told: () => told, exit });
        }));
      const forward = (client: Client) => new Promise<ClientChannel>((resolve, reject) => client.forwardOut('127.0.0.1', 0, '127.0.0.1', 9000, (err, channel) => (err ? reject(err) : resolve(channel))));
      expect((await ssh(['alice+tools@127.0.0.1', '(nc -ll -p 9000 -e cat &) >/dev/null 2>&1; sleep 0.3'])).code).toBe(0);
      const instance = (await t.api<{ id: string }[]>('GET', '/api/v1/instances', { token: lab.tokens.alice })).body[0]!;
      await waitFor(() => t.app.eventStore.readStream(`instance-${instance.id}`), (events) =>
        events.filter((e) => e.type === 'TerminalSessionOpened').length === events.filter((e) => e.type === 'TerminalSessionClosed').length, 10_000);

      const held: Client[] = [];
      try {
        // three connections are alice's cap: a fourth signs in, is told why, and ends with status 1
        held.push(...await Promise.all([connect('alice+tools', key), connect('alice+tools', key), connect('alice+tools', key)]));
        const fourth = await connect('alice+tools', key);
        held.push(fourth);
        const refused = await exec(fourth, 'echo should-not-run');
        expect(await refused.exit).toBe(1);
        expect(refused.told()).toContain('TIANQI_SSH_MAX_CONNECTIONS_PER_USER');
        // OpenSSH shows it as well
        const viaOpenSsh = await ssh(['alice+tools@127.0.0.1', 'echo should-not-run']);
        expect(viaOpenSsh.code).toBe(1);
        expect(viaOpenSsh.stdout).toBe('');
        expect(viaOpenSsh.stderr).toContain('TIANQI_SSH_MAX_CONNECTIONS_PER_USER');
        fourth.end();

        // alice holds three sessions and three forwards on her instance; the admin may add one of each (the instance's four)
        const [a, b, c] = held;
        await Promise.all([exec(a!, 'sleep 30'), exec(b!, 'sleep 30'), exec(c!, 'sleep 30')]);
        await Promise.all([forward(a!), forward(a!), forward(a!)]);
        const admin = await connect(`admin+tools`, { password: ADMIN_PASSWORD });
        held.push(admin);
        const first = await exec(admin, 'sleep 30');
        const second = await exec(admin, 'sleep 30');
        expect(await second.exit).toBe(1);
        expect(second.told()).toContain('TIANQI_SSH_MAX_SESSIONS_PER_INSTANCE');
        const forwarded = await forward(admin);
        await expect(forward(admin)).rejects.toThrow();
        await waitFor(async () => first.told(), (text) => text.includes('TIANQI_SSH_MAX_FORWARDS_PER_INSTANCE'), 5_000);
        // one of alice's closed: the admin's next forward opens
        forwarded.close();
        await waitFor(() => forward(admin).then((ch) => { ch.close(); return true; }, () => false), (ok) => ok, 5_000);
      } finally {
        for (const client of held) client.end();
      }
    }, 60_000);
  },
);
