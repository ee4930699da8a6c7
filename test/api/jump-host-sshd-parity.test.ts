import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { freePort } from '../support/ports.ts';
import { describeWithService } from '../support/services.ts';
import { run } from '../support/ssh-clients.ts';
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
    const options = () => ['-F', '/dev/null', '-o', 'StrictHostKeyChecking=no', '-o', `UserKnownHostsFile=${join(work, 'known_hosts')}`, '-o', 'LogLevel=ERROR',
      '-i', join(work, 'key'), '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none', '-o', 'BatchMode=yes'];
    const ssh = (args: string[]) => run('ssh', [...options(), '-p', String(port), ...args], '', 30_000);

    beforeAll(async () => {
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
  },
);
