import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, runningInstance, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { freePort } from '../support/ports.ts';
import { describeWithService } from '../support/services.ts';
import { keyOptions, run } from '../support/ssh-clients.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
const helperBuilt = existsSync(join(loadConfig({}).helperDir, 'linux-amd64', 'tianqi-helper'));
const MB = 1024 * 1024;
const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

/**
 * Uploads over the jump host commit whole or not at all, and arrive with their modes and times,
 * as with OpenSSH's sshd: real OpenSSH sftp and scp against a real container.
 */
const routes = [
  // a local node: the helper's SFTP server over the container's own address
  ['auto', 'over the container\'s address'],
  // as on a node behind TLS: over the engine's exec stream
  ['tunnel', 'over the engine\'s exec stream'],
] as const;

for (const [route, way] of routes) describeWithService(
  'Docker engine and a tianqi-helper build',
  Boolean(socketPath) && helperBuilt,
  'start dockerd (see .ci/run), set TIANQI_TEST_DOCKER_SOCKET, and have tianqi-helper in dist/helper (npm test unpacks it)',
  `SFTP and scp uploads ${way}: whole or not at all, with modes and times`,
  () => {
    const work = mkdtempSync(join(tmpdir(), 'tianqi-uploads-'));
    let port: number;
    let t: TestApp;
    let lab: Lab;

    let password = 'alice-password';
    const children = new Set<ChildProcess>();
    const matrix: Record<string, string> = {};

    const options = keyOptions(join(work, 'key'), join(work, 'known_hosts'));
    const sftp = (batch: string, extra: string[] = []) => run('sftp', [...options, ...extra, '-P', String(port), '-b', '-', 'alice+box@127.0.0.1'], batch, 60_000);
    const inBox = async (command: string) => {
      const r = await run('ssh', [...options, '-p', String(port), 'alice+box@127.0.0.1', command], '', 30_000);
      if (r.code !== 0) throw new Error(`${command}: ${JSON.stringify(r)}`);
      return r.stdout;
    };
    /** Starts a slow upload (10 MB/s) of `local` to `remote`; resolves once part of it has arrived. */
    const slowPut = async (local: string, remote: string): Promise<ChildProcess> => {
      const child = spawn('sftp', [...options, '-l', '80000', '-P', String(port), '-b', '-', 'alice+box@127.0.0.1'], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
      children.add(child);
      child.once('exit', () => children.delete(child));
      child.stdin!.end(`put ${local} ${remote}\n`);
      await waitFor(() => inBox('ls -la /data | grep tianqi-upload || true'), (out) => /\s(\d{7,})\s/.test(out), 30_000);
      return child;
    };
    const gone = (child: ChildProcess) => new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())));

    beforeAll(async () => {
      port = await freePort();
      t = await startTestApp({ TIANQI_SSH_PORT: String(port), TIANQI_POLL_INTERVAL_MS: '60000', TIANQI_SERVICE_ROUTE: route });
      lab = await setUpLab(t, socketPath!, ['alice']);
      await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(work, 'key')]);
      const added = await t.api('POST', '/api/v1/users/me/ssh-keys', { token: lab.tokens.alice, body: { name: 'laptop', publicKey: readFileSync(join(work, 'key.pub'), 'utf8') } });
      expect(added.status).toBe(201);
      const instance = await runningInstance(t, lab.tokens.alice!, lab, 'box');
      expect(instance.status).toBe('running');

      writeFileSync(join(work, 'big.bin'), randomBytes(64 * MB));
      writeFileSync(join(work, 'model.pt'), 'weights of epoch 12\n');
    }, 180_000);

    afterAll(async () => {
      console.log(`interrupted uploads ${way} (what the target holds afterwards): ${JSON.stringify(matrix)}`);
      for (const child of children) child.kill('SIGKILL');
      await removeContainersOf(t, socketPath);
      await t?.stop();
      rmSync(work, { recursive: true, force: true });
    });

    const interruptions: [string, (child: ChildProcess) => Promise<void>][] = [
      // the sftp client killed: its ssh transport goes with it (the process group)
      ['client killed', async (child) => {
        process.kill(-child.pid!, 'SIGKILL');
        await gone(child);
      }],
      // the connection dropped: the ssh transport alone dies, with no goodbye
      ['connection dropped', async (child) => {
        await run('pkill', ['-KILL', '-P', String(child.pid)]);
        await gone(child);
      }],
      // the platform ends the session: the password changed
      ['password changed', async (child) => {
        const next = `${password}-x`;
        const changed = await t.api('POST', '/api/v1/auth/password', { token: lab.tokens.alice, body: { currentPassword: password, newPassword: next } });
        expect(changed.status).toBe(204);
        password = next;
        lab.tokens.alice = await t.login('alice', password);
        await gone(child);
      }],
    ];

    it(`serves the session ${way}`, async () => {
      const child = await slowPut(join(work, 'big.bin'), '/data/route.bin');
      try {
        const servers = (await inBox('ps -o args | grep "[t]ianqi-helper sftp"')).trim().split('\n');
        expect(servers).toHaveLength(1);
        expect(servers[0]!.includes(' sftp --listen')).toBe(route === 'auto');
      } finally {
        process.kill(-child.pid!, 'SIGKILL');
        await gone(child);
      }
    }, 60_000);

    for (const [how, interrupt] of interruptions) {
      it(`an upload cut off (${how}) leaves the file it would replace as it was, and no new file, and nothing hidden`, async () => {
        const slug = how.replace(/\W+/g, '-');
        // a replacement: model.pt is there, complete
        expect((await sftp(`put ${join(work, 'model.pt')} /data/${slug}.pt`)).code).toBe(0);
        await interrupt(await slowPut(join(work, 'big.bin'), `/data/${slug}.pt`));
        const replaced = await waitFor(() => inBox(`cat /data/${slug}.pt; ls -a /data`), (out) => !out.includes('tianqi-upload'), 10_000);
        expect(replaced.startsWith('weights of epoch 12\n')).toBe(true);
        matrix[`${how}, replacement`] = replaced.startsWith('weights of epoch 12\n') ? 'the old file, whole' : 'damaged';
        // a new file: nothing under its name
        await interrupt(await slowPut(join(work, 'big.bin'), `/data/${slug}-new.bin`));
        const listing = await waitFor(() => inBox('ls -a /data'), (out) => !out.includes('tianqi-upload'), 10_000);
        expect(listing).not.toContain(`${slug}-new.bin`);
        matrix[`${how}, new file`] = listing.includes(`${slug}-new.bin`) ? 'a partial file' : 'nothing';
      }, 120_000);
    }

    it('clears hidden files that a killed helper left behind (over a day old) at the next upload into their folder, and no others', async () => {
      // what a helper killed mid-upload leaves (the container stopped, the node lost power), and one of today
      await inBox('mkdir -p /data/left && cd /data/left && echo partial > .tianqi-upload-0123456789ab && touch -d "@$(( $(date +%s) - 2 * 86400 ))" .tianqi-upload-0123456789ab'
        + ' && echo recent > .tianqi-upload-ba9876543210 && echo mine > .tianqi-upload-notes && touch -d "@$(( $(date +%s) - 2 * 86400 ))" .tianqi-upload-notes');
      expect((await sftp(`put ${join(work, 'model.pt')} /data/left/model.pt`)).code).toBe(0);
      expect((await inBox('ls -a /data/left')).trim().split('\n').sort()).toEqual(['.', '..', '.tianqi-upload-ba9876543210', '.tianqi-upload-notes', 'model.pt']);
    });

    it('a clean upload still replaces the file, byte for byte', async () => {
      const r = await sftp(`put ${join(work, 'big.bin')} /data/model.pt`);
      expect(r.code, JSON.stringify(r)).toBe(0);
      expect((await inBox('sha256sum /data/model.pt')).split(' ')[0]).toBe(sha256(readFileSync(join(work, 'big.bin'))));
    }, 60_000);

    it('keeps modes and times: scp of a script and a key, scp -p and put -p, with no fsetstat errors', async () => {
      const script = join(work, 'train.sh');
      const key = join(work, 'id_rsa');
      writeFileSync(script, '#!/bin/sh\necho training\n');
      writeFileSync(key, 'not really a key\n');
      chmodSync(script, 0o755);
      chmodSync(key, 0o600);
      const when = new Date('2024-03-01T08:00:00Z');
      utimesSync(script, when, when);
      const scp = await run('scp', [...options, '-P', String(port), script, key, 'alice+box@127.0.0.1:/data/'], '', 60_000);
      expect(scp.code, JSON.stringify(scp)).toBe(0);
      expect(scp.stderr).not.toMatch(/fsetstat/);
      const scpTimes = await run('scp', [...options, '-p', '-P', String(port), script, 'alice+box@127.0.0.1:/data/kept.sh'], '', 60_000);
      expect(scpTimes.code, JSON.stringify(scpTimes)).toBe(0);
      expect(scpTimes.stderr).not.toMatch(/fsetstat/);
      expect((await sftp(`put -p ${script} /data/put-p.sh`)).code).toBe(0);
      const stat = await inBox('stat -c "%n %a %Y" /data/train.sh /data/id_rsa /data/kept.sh /data/put-p.sh');
      expect(stat.trim().split('\n')).toEqual([
        '/data/train.sh 755', '/data/id_rsa 600', `/data/kept.sh 755 ${when.getTime() / 1000}`, `/data/put-p.sh 755 ${when.getTime() / 1000}`,
      ].map((line, i) => (i < 2 ? expect.stringMatching(new RegExp(`^${line} \\d+$`)) : line)));
    }, 60_000);

    it('uploads a file with a legal name of 255 bytes, and names the file (not a hidden one) when an upload fails', async () => {
      const name = `${'模型'.repeat(40)}${'x'.repeat(255 - 240)}`;
      expect(Buffer.byteLength(name)).toBe(255);
      const local = join(work, 'long.txt');
      writeFileSync(local, 'long name\n');
      const r = await sftp(`put ${local} "/data/${name}"`);
      expect(r.code, JSON.stringify(r)).toBe(0);
      expect(await inBox(`cat "/data/${name}"`)).toBe('long name\n');
      const denied = await sftp(`put ${local} /proc/1/forbidden.txt`);
      expect(denied.code).not.toBe(0);
      expect(denied.stderr).not.toMatch(/tianqi-upload/);
    }, 60_000);
  },
);
