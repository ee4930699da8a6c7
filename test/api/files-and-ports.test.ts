import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2, { type ClientChannel, type SFTPWrapper } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { freePort } from '../support/ports.ts';
import { describeWithService } from '../support/services.ts';
import { run } from '../support/ssh-clients.ts';
import { ensureStaticImage, ensureToolsImage } from '../support/test-image.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
const helperBuilt = existsSync(join(loadConfig({}).helperDir, 'linux-amd64', 'tianqi-helper'));
const MB = 1024 * 1024;

/**
 * Connects to a local port, sends `text` (ending its side when `end`; nothing for null), and
 * resolves with everything received once the connection closes.
 */
function exchange(port: number, text: string | null, options: { end: boolean } = { end: true }): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = tcpConnect(port, '127.0.0.1', () => {
      if (text === null) return;
      if (options.end) socket.end(text);
      else socket.write(text);
    });
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('close', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
  });
}

const sha256 = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');

interface SessionRecord {
  sessionId: string;
  kind?: string;
  command: string;
  username: string;
  clientAddress: string;
}

interface SessionClose {
  sessionId: string;
  reason: string;
  bytesIn: number;
  bytesOut: number;
  files?: { written: string[]; writtenCount: number; removed: string[]; removedCount: number };
  connections?: number;
}

describeWithService(
  'Docker engine and a tianqi-helper build',
  Boolean(socketPath) && helperBuilt,
  'start dockerd (see .ci/run), set TIANQI_TEST_DOCKER_SOCKET, and have Go 1.23+ on PATH so helper/ builds',
  'Files and ports over the jump host (OpenSSH sftp, scp, rsync, ssh -L)',
  () => {
    const masterKey = randomBytes(32).toString('base64');
    const work = mkdtempSync(join(tmpdir(), 'tianqi-files-'));
    const knownHosts = join(work, 'known_hosts');
    let port: number;
    let t: TestApp;
    let lab: Lab;
    const boxes: Record<string, { id: string; containerId: string }> = {};
    const children = new Set<ChildProcess>();

    const common = (...rest: string[]) => [
      '-F', '/dev/null', '-o', 'StrictHostKeyChecking=no', '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'LogLevel=ERROR',
      '-o', 'ConnectTimeout=10', '-o', 'PubkeyAuthentication=no', '-o', 'PreferredAuthentications=password', '-o', 'NumberOfPasswordPrompts=1',
      ...rest,
    ];
    const as = (user: string) => [`${user}-password`, user] as const;
    /** sftp's batch mode signs in without prompts only: with the user's registered key. */
    const sftp = (user: string, login: string, batch: string, timeoutMs = 60_000) =>
      run('sftp', [...keyed(user), '-P', String(port), '-b', '-', `${login}@127.0.0.1`], batch, timeoutMs);
    const keyed = (user: string) => [
      '-F', '/dev/null', '-o', 'StrictHostKeyChecking=no', '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'LogLevel=ERROR',
      '-i', join(work, `${user}_ed25519`), '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none',
    ];
    const scp = (user: string, args: string[], timeoutMs = 60_000) =>
      run('sshpass', ['-p', as(user)[0], 'scp', ...common('-P', String(port)), ...args], '', timeoutMs);
    const ssh = (user: string, args: string[], input = '', timeoutMs = 30_000) =>
      run('sshpass', ['-p', as(user)[0], 'ssh', ...common('-p', String(port)), ...args], input, timeoutMs);
    /** `ssh -N -L local:dest` in the background until it is killed; resolves once the local port accepts. */
    const forward = async (user: string, login: string, dest: string, extra: string[] = []): Promise<{ local: number; child: ChildProcess }> => {
      const local = await freePort();
      const child = spawn('sshpass', ['-p', as(user)[0], 'ssh', ...common('-p', String(port), '-N', '-o', 'ExitOnForwardFailure=yes', '-L', `127.0.0.1:${local}:${dest}`, ...extra), `${login}@127.0.0.1`], { stdio: ['ignore', 'ignore', 'pipe'] });
      children.add(child);
      child.once('exit', () => children.delete(child));
      await waitFor(() => new Promise<boolean>((resolve) => {
        const socket = tcpConnect(local, '127.0.0.1', () => {
          socket.destroy();
          resolve(true);
        });
        socket.on('error', () => resolve(false));
      }), (ok) => ok, 15_000);
      return { local, child };
    };
    const inBox = async (name: string, command: string, user = 'alice') => {
      const r = await ssh(user, [`${user}+${name}@127.0.0.1`, command]);
      if (r.code !== 0) throw new Error(`${command}: ${JSON.stringify(r)}`);
      return r.stdout;
    };
    const sessions = async (instanceId: string) => {
      const events = await t.app.eventStore.readStream(`instance-${instanceId}`);
      return {
        opened: events.filter((e) => e.type === 'TerminalSessionOpened').map((e) => e.data as SessionRecord),
        closed: events.filter((e) => e.type === 'TerminalSessionClosed').map((e) => e.data as SessionClose),
      };
    };
    const createBox = async (owner: string, name: string, imageId = lab.imageId, specId = lab.specId) => {
      const created = await t.api<{ id: string }>('POST', '/api/v1/instances', { token: lab.tokens[owner], body: { name, imageId, specId } });
      if (created.status !== 201) throw new Error(JSON.stringify(created.body));
      const ready = await waitFor(
        () => t.api<{ id: string; containerId: string | null; status: string }>('GET', `/api/v1/instances/${created.body.id}`, { token: lab.tokens[owner] }).then((r) => r.body),
        (i) => i.status !== 'creating' && (i.status !== 'running' || i.containerId !== null),
        60_000,
      );
      if (ready.status !== 'running') throw new Error(`${name} is ${ready.status}: ${(ready as { statusReason?: string }).statusReason}`);
      boxes[name] = { id: created.body.id, containerId: ready.containerId! };
    };

    beforeAll(async () => {
      port = await freePort();
      t = await startTestApp({ TIANQI_SSH_PORT: String(port), TIANQI_POLL_INTERVAL_MS: '60000', TIANQI_MASTER_KEY: masterKey });
      lab = await setUpLab(t, socketPath!, ['alice', 'bob', 'dave']);
      const image = async (name: string, address: string) =>
        (await t.api<{ id: string }>('POST', '/api/v1/images', { token: lab.admin, body: { name, address } })).body.id;
      for (const user of ['alice', 'bob', 'dave']) {
        const key = join(work, `${user}_ed25519`);
        await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${user}@laptop`, '-f', key]);
        const added = await t.api('POST', '/api/v1/users/me/ssh-keys', { token: lab.tokens[user], body: { name: 'laptop', publicKey: readFileSync(`${key}.pub`, 'utf8') } });
        if (added.status !== 201) throw new Error(JSON.stringify(added.body));
      }
      const staticImage = await image('static-only', ensureStaticImage(socketPath));
      const toolsImage = await image('with-scp-rsync', ensureToolsImage(socketPath));
      await Promise.all([
        createBox('alice', 'box'),
        createBox('alice', 'bare', staticImage),
        createBox('alice', 'tools', toolsImage),
        createBox('bob', 'bobs'),
        createBox('dave', 'daves'),
      ]);
    }, 240_000);

    afterAll(async () => {
      for (const child of children) child.kill('SIGKILL');
      await removeContainersOf(t, socketPath);
      await t?.stop();
      rmSync(work, { recursive: true, force: true });
    });

    describe('SFTP', () => {
      it('uploads and downloads 100 MB byte-exact (OpenSSH sftp), lists, makes, renames, chmods and removes', async () => {
        const local = join(work, 'big.bin');
        writeFileSync(local, randomBytes(100 * MB));
        const back = join(work, 'big.back');
        const r = await sftp('alice', 'alice+box', [
          'mkdir /data/up', 'cd /data/up', `put ${local} big.bin`, 'ls -l', `get big.bin ${back}`,
          'rename big.bin moved.bin', 'chmod 600 moved.bin', 'ls -l', 'rm moved.bin', 'cd /data', 'rmdir up', 'ls /data',
        ].join('\n'), 120_000);
        expect(r.code, JSON.stringify(r)).toBe(0);
        expect(sha256(back)).toBe(sha256(local));
        expect(r.stdout).toMatch(/-rw-r--r--\s.*104857600\s.*big\.bin/);
        expect(r.stdout).toMatch(/-rw-------\s.*104857600\s.*moved\.bin/);
        // and the container agrees: the directory is gone, nothing is left behind
        expect(await inBox('box', 'ls -a /data')).not.toMatch(/up|tianqi-upload/);
      }, 180_000);

      it('works in an image with nothing but one static binary (no shell, no sftp-server)', async () => {
        const local = join(work, 'small.txt');
        writeFileSync(local, '显存 1 GB\n');
        const back = join(work, 'small.back');
        const r = await sftp('alice', 'alice+bare', [`put ${local} /note.txt`, 'ls -l /', `get /note.txt ${back}`, 'rm /note.txt'].join('\n'));
        expect(r.code, JSON.stringify(r)).toBe(0);
        expect(readFileSync(back, 'utf8')).toBe('显存 1 GB\n');
        expect(r.stdout).toContain('busybox');
        // the shell way in has nothing to run there, but files do
        const shell = await ssh('alice', ['alice+bare@127.0.0.1', 'ls']);
        expect(shell.code).not.toBe(0);
      }, 60_000);

      it('resumes an interrupted upload (reput) and download (reget) to the same bytes', async () => {
        const local = join(work, 'resume.bin');
        writeFileSync(local, randomBytes(8 * MB));
        // the first half is there, as if the connection had dropped
        const half = join(work, 'resume.half');
        writeFileSync(half, readFileSync(local).subarray(0, 4 * MB));
        expect((await sftp('alice', 'alice+box', `put ${half} /data/resume.bin`)).code).toBe(0);
        const partial = join(work, 'resume.back');
        writeFileSync(partial, readFileSync(local).subarray(0, 3 * MB));
        const r = await sftp('alice', 'alice+box', [`reput ${local} /data/resume.bin`, `reget /data/resume.bin ${partial}`].join('\n'));
        expect(r.code, JSON.stringify(r)).toBe(0);
        expect(sha256(partial)).toBe(sha256(local));
        expect((await inBox('box', 'sha256sum /data/resume.bin')).split(' ')[0]).toBe(sha256(local));
        // only the missing parts travelled: 4 of the 8 MB up, 5 of them down
        const { closed } = await waitFor(() => sessions(boxes.box!.id), (s) => s.closed.some((c) => c.files?.written.includes('/data/resume.bin') && c.bytesOut > MB));
        const resumed = closed.find((c) => c.files?.written.includes('/data/resume.bin') && c.bytesOut > MB)!;
        expect(resumed.bytesIn).toBeGreaterThan(4 * MB);
        expect(resumed.bytesIn).toBeLessThan(4.5 * MB);
        expect(resumed.bytesOut).toBeGreaterThan(5 * MB);
        expect(resumed.bytesOut).toBeLessThan(5.5 * MB);
      }, 60_000);

      it('copies with scp in its default SFTP mode, both ways', async () => {
        const local = join(work, 'scp.bin');
        writeFileSync(local, randomBytes(2 * MB));
        const up = await scp('alice', [local, 'alice+box@127.0.0.1:/tmp/scp.bin']);
        expect(up.code, JSON.stringify(up)).toBe(0);
        const back = join(work, 'scp.back');
        const down = await scp('alice', ['alice+box@127.0.0.1:/tmp/scp.bin', back]);
        expect(down.code, JSON.stringify(down)).toBe(0);
        expect(sha256(back)).toBe(sha256(local));
      });

      it('keeps paths inside the container: .., symlinks to /, NUL and over-long names get a clear status', async () => {
        await inBox('box', 'ln -sfn / /tmp/root-link && ln -sfn ../../../../etc /tmp/up-link');
        const r = await sftp('alice', 'alice+box', ['cd ../../../../..', 'pwd', 'ls /tmp/root-link/', 'get /tmp/up-link/passwd ' + join(work, 'passwd.back')].join('\n'));
        expect(r.code, JSON.stringify(r)).toBe(0);
        expect(r.stdout).toContain('Remote working directory: /\n');
        // the container's own /etc/passwd, not this machine's
        expect(readFileSync(join(work, 'passwd.back'), 'utf8')).toBe('root:x:0:0:root:/root:/bin/sh\n');

        const client = await ssh2Client('alice+box');
        try {
          const sftpClient = await new Promise<SFTPWrapper>((resolve, reject) => client.sftp((err, s) => (err ? reject(err) : resolve(s))));
          const openError = (path: string) => new Promise<{ code?: number; message: string }>((resolve) =>
            sftpClient.open(path, 'w', (err) => resolve(err ? { code: (err as { code?: number }).code, message: err.message } : { message: 'opened' })));
          const nul = await openError('/tmp/a\u0000b');
          expect(nul.message).not.toBe('opened');
          const long = await openError(`/tmp/${'长'.repeat(200)}`);
          expect(long.code).toBe(4);
          expect(long.message).toMatch(/file name too long/i);
          const missing = await openError('/no/such/dir/file');
          expect(missing.code).toBe(2);
          sftpClient.end();
        } finally {
          client.end();
        }
      });

      it('a full disk fails the upload with a status and leaves nothing under the target name', async () => {
        const local = join(work, 'too-big.bin');
        writeFileSync(local, randomBytes(24 * MB));
        // /dev/shm (a tmpfs) filled up to its last 8 MB
        await inBox('daves', 'echo old > /dev/shm/model.bin && fallocate -l $(( $(df -k /dev/shm | awk \'NR==2 {print $4}\') - 8192 ))k /dev/shm/.fill', 'dave');
        const r = await sftp('dave', 'dave+daves', `put ${local} /dev/shm/model.bin\nput ${local} /dev/shm/new.bin`);
        expect(r.code, JSON.stringify(r)).not.toBe(0);
        expect(r.stderr).toMatch(/Failure|No space left/i);
        // the old file is still whole, the new one never appeared, no partial file is left
        expect(await inBox('daves', 'cat /dev/shm/model.bin; rm /dev/shm/.fill; ls -a /dev/shm', 'dave')).toBe('old\n.\n..\nmodel.bin\n');
      }, 60_000);

      it('puts every sftp session on the history: who, from where, bytes each way, files written and removed', async () => {
        const { opened, closed } = await waitFor(() => sessions(boxes.box!.id), (s) => s.opened.filter((o) => o.kind === 'sftp').length >= 4
          && s.opened.length === s.closed.length);
        const sftpOpened = opened.filter((o) => o.kind === 'sftp');
        expect(sftpOpened.every((o) => o.username === 'alice' && o.clientAddress === '127.0.0.1' && o.command === 'sftp')).toBe(true);
        const big = closed.find((c) => c.files?.written.includes('/data/up/big.bin'))!;
        expect(big.bytesIn).toBeGreaterThan(100 * MB);
        expect(big.bytesOut).toBeGreaterThan(100 * MB);
        expect(big.files!.removed).toEqual(expect.arrayContaining(['/data/up/big.bin', '/data/up/moved.bin', '/data/up']));
        expect(big.files!.written).toContain('/data/up/moved.bin');
        const history = await t.api<{ summary: string }[]>('GET', `/api/v1/instances/${boxes.box!.id}/history`, { token: lab.tokens.alice });
        expect(history.body.some((h) => /alice opened an SFTP session from 127\.0\.0\.1/.test(h.summary))).toBe(true);
        expect(history.body.some((h) => h.summary.includes('2 files written (/data/up/big.bin, /data/up/moved.bin), 3 removed (/data/up/big.bin, /data/up/moved.bin, /data/up)'))).toBe(true);
      });

      it('never reaches another user\'s instance', async () => {
        const r = await sftp('alice', 'alice+bobs', 'ls /');
        expect(r.code).not.toBe(0);
        expect(r.stderr).toContain('找不到实例 bobs');
      });
    });

    describe('classic scp and rsync', () => {
      it('copy with scp -O and rsync where the image has them', async () => {
        const local = join(work, 'legacy.bin');
        writeFileSync(local, randomBytes(MB));
        const up = await scp('alice', ['-O', local, 'alice+tools@127.0.0.1:/tmp/legacy.bin']);
        expect(up.code, JSON.stringify(up)).toBe(0);
        const back = join(work, 'legacy.back');
        expect((await scp('alice', ['-O', 'alice+tools@127.0.0.1:/tmp/legacy.bin', back])).code).toBe(0);
        expect(sha256(back)).toBe(sha256(local));

        const rsyncBack = join(work, 'rsync.back');
        const rsh = `sshpass -p alice-password ssh ${common('-p', String(port)).join(' ')}`;
        const push = await run('rsync', ['-a', '-e', rsh, local, 'alice+tools@127.0.0.1:/tmp/rsynced.bin'], '', 60_000);
        expect(push.code, JSON.stringify(push)).toBe(0);
        const pull = await run('rsync', ['-a', '-e', rsh, 'alice+tools@127.0.0.1:/tmp/rsynced.bin', rsyncBack], '', 60_000);
        expect(pull.code, JSON.stringify(pull)).toBe(0);
        expect(sha256(rsyncBack)).toBe(sha256(local));
      }, 60_000);

      it('refuse in one line, without hanging, where the image has neither', async () => {
        const local = join(work, 'legacy.bin');
        const legacy = await scp('alice', ['-O', local, 'alice+box@127.0.0.1:/tmp/x'], 20_000);
        expect(legacy.code).not.toBe(0);
        expect(legacy.stderr).toContain('实例 box 的镜像中没有 scp');
        const rsh = `sshpass -p alice-password ssh ${common('-p', String(port)).join(' ')}`;
        const rsync = await run('rsync', ['-a', '-e', rsh, local, 'alice+box@127.0.0.1:/tmp/x'], '', 20_000);
        expect(rsync.code).not.toBe(0);
        expect(rsync.stderr).toContain('实例 box 的镜像中没有 rsync');
      }, 60_000);
    });

    describe('local port forwarding (ssh -L)', () => {
      let boxIp: string;

      beforeAll(async () => {
        // httpd on the container's loopback only, and one on all its addresses; a 100 MB file to serve
        await inBox('box', 'mkdir -p /www && head -c 104857600 /dev/urandom > /www/big.bin && echo hello > /www/index.html'
          + ' && printf "#!/bin/sh\\nhead -c 20971520 /www/big.bin\\n" > /www/send.sh && chmod +x /www/send.sh'
          + ' && (httpd -p 127.0.0.1:8888 -h /www; httpd -p 8081 -h /www; nc -ll -p 7000 -e cat & nc -ll -p 7003 -e /www/send.sh &) >/dev/null 2>&1');
        boxIp = (await inBox('box', "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1")).trim();
      }, 60_000);

      it('reaches a port on the container\'s loopback and carries 100 MB byte-exact', async () => {
        const { local, child } = await forward('alice', 'alice+box', '127.0.0.1:8888');
        try {
          const out = join(work, 'forwarded.bin');
          const r = await run('curl', ['-sS', '-o', out, `http://127.0.0.1:${local}/big.bin`], '', 60_000);
          expect(r.code, JSON.stringify(r)).toBe(0);
          expect(statSync(out).size).toBe(100 * MB);
          expect(sha256(out)).toBe((await inBox('box', 'sha256sum /www/big.bin')).split(' ')[0]);
        } finally {
          child.kill();
        }
      }, 90_000);

      it('carries a service that speaks first (20 MB on connect) whole, connection after connection', async () => {
        const { local, child } = await forward('alice', 'alice+box', '127.0.0.1:7003');
        try {
          const expected = (await inBox('box', 'head -c 20971520 /www/big.bin | sha256sum')).split(' ')[0];
          for (let i = 0; i < 8; i += 1) {
            const got = await exchange(local, null);
            expect(got.length, `connection ${i}`).toBe(20 * MB);
            expect(createHash('sha256').update(got).digest('hex')).toBe(expected);
          }
        } finally {
          child.kill();
        }
      }, 90_000);

      it('serves 40 concurrent connections, and reaches the container\'s own other address', async () => {
        const { local, child } = await forward('alice', 'alice+box', `${boxIp || '127.0.0.1'}:8081`);
        try {
          const answers = await Promise.all(Array.from({ length: 40 }, () => run('curl', ['-sS', `http://127.0.0.1:${local}/index.html`], '', 30_000)));
          expect(answers.map((a) => a.stdout)).toEqual(Array(40).fill('hello\n'));
        } finally {
          child.kill();
        }
      }, 60_000);

      it('closing either side closes the other', async () => {
        const { local, child } = await forward('alice', 'alice+box', '127.0.0.1:7000');
        const { local: local2, child: child2 } = await forward('alice', 'alice+box', '127.0.0.1:8888');
        try {
          // the client half-closes: the echo service sees its end, answers what it got and closes
          expect((await exchange(local, 'ping\n', { end: true })).toString()).toBe('ping\n');
          // the service closes (httpd answers once and closes): the client's socket closes with it
          const answer = (await exchange(local2, 'GET /index.html HTTP/1.0\r\n\r\n', { end: false })).toString();
          expect(answer).toMatch(/^HTTP\/1\.[01] 200 OK[\s\S]*hello\n$/);
        } finally {
          child.kill();
          child2.kill();
        }
      }, 60_000);

      it('reaches only the instance\'s own ports: not the node, another container, or the platform', async () => {
        const bobsIp = (await inBox('bobs', "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1", 'bob')).trim();
        const gateway = (await inBox('box', "ip route | awk '/default/ {print $3}'")).trim();
        const targets = [`${bobsIp || '10.255.255.1'}:8081`, `${gateway || '172.17.0.1'}:2376`, `${gateway || '172.17.0.1'}:${port}`, '1.1.1.1:80'];
        for (const dest of targets) {
          const r = await ssh('alice', ['-o', 'ExitOnForwardFailure=yes', '-W', dest, 'alice+box@127.0.0.1'], '', 20_000);
          expect(r.code, dest).not.toBe(0);
          expect(r.stderr, dest).toMatch(/open failed|stdio forwarding failed/);
        }
      }, 60_000);

      it('refuses a forward for a login without an instance, and remote (-R), agent (-A) and X11 forwarding with a message', async () => {
        const noInstance = await ssh('alice', ['-W', '127.0.0.1:8888', 'alice@127.0.0.1'], '', 20_000);
        expect(noInstance.code).not.toBe(0);
        // OpenSSH asks for agent forwarding only with an agent to forward
        const agentSocket = join(work, 'agent.sock');
        const withAgent = await new Promise<{ stdout: string; stderr: string; code: number | null }>((resolve) => {
          const agentAgain = spawn('ssh-agent', ['-D', '-a', agentSocket], { stdio: 'ignore' });
          setTimeout(() => {
            // OpenSSH asks for X11 forwarding only with a display (and fakes the cookie without xauth)
            const child = spawn('sshpass', ['-p', 'alice-password', 'ssh', ...common('-p', String(port), '-A', '-X', '-R', '9999:127.0.0.1:22'), 'alice+box@127.0.0.1', 'echo in'],
              { env: { ...process.env, SSH_AUTH_SOCK: agentSocket, DISPLAY: ':0' }, stdio: ['ignore', 'pipe', 'pipe'] });
            let stdout = '';
            let stderr = '';
            child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
            child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
            child.on('close', (code) => {
              agentAgain.kill();
              resolve({ stdout, stderr, code });
            });
          }, 300);
        });
        expect(withAgent.stdout).toBe('in\n');
        expect(withAgent.stderr).toContain('此跳板机不提供 SSH agent 转发');
        expect(withAgent.stderr).toContain('此跳板机不提供远程端口转发（-R）');
        expect(withAgent.stderr).toContain('此跳板机不提供 X11 转发');
      });

      it('runs VS Code Remote-SSH\'s sequence: a script over exec that starts a server, then a forward to its port', async () => {
        // What the extension does: `bash` (here sh) with its install script on stdin, which prints the port it listens on.
        const script = 'port=7123; (nc -ll -p $port -e cat &) >/dev/null 2>&1; sleep 0.3; echo "listeningOn==$port=="; exit 0\n';
        const launched = await ssh('alice', ['-T', 'alice+box@127.0.0.1', 'sh'], script);
        expect(launched.code, JSON.stringify(launched)).toBe(0);
        const serverPort = /listeningOn==(\d+)==/.exec(launched.stdout)![1]!;
        const { local, child } = await forward('alice', 'alice+box', `127.0.0.1:${serverPort}`);
        try {
          expect((await exchange(local, 'vscode\n', { end: true })).toString()).toBe('vscode\n');
        } finally {
          child.kill();
        }
      }, 60_000);

      it('puts forwards on the history with their connection count and bytes', async () => {
        const { opened, closed } = await waitFor(() => sessions(boxes.box!.id), (s) => s.opened.filter((o) => o.kind === 'forward').length >= 3
          && s.opened.length === s.closed.length, 20_000);
        const forwards = opened.filter((o) => o.kind === 'forward');
        expect(forwards.map((f) => f.command)).toEqual(expect.arrayContaining(['127.0.0.1:8888', '127.0.0.1:7000']));
        const big = closed.find((c) => c.sessionId === forwards.find((f) => f.command === '127.0.0.1:8888')!.sessionId)!;
        expect(big.bytesOut).toBeGreaterThan(100 * MB);
        // 40 requests, and the probe that saw the local port open
        expect(closed.some((c) => c.connections === 41), JSON.stringify(closed)).toBe(true);
      });
    });

    describe('live re-checks', () => {
      it('ends an open sftp session and a forward at once when the user is disabled, and refuses new channels', async () => {
        const client = await ssh2Client('bob+bobs');
        const closedAt = new Promise<number>((resolve) => client.on('close', () => resolve(Date.now())));
        const sftpClient = await new Promise<SFTPWrapper>((resolve, reject) => client.sftp((err, s) => (err ? reject(err) : resolve(s))));
        await new Promise<void>((resolve, reject) => sftpClient.readdir('/', (err) => (err ? reject(err) : resolve())));
        const disabledAt = Date.now();
        const users = await t.api<{ id: string; username: string }[]>('GET', '/api/v1/users?q=bob', { token: lab.admin });
        const bob = users.body.find((u) => u.username === 'bob')!;
        expect((await t.api('PATCH', `/api/v1/users/${bob.id}`, { token: lab.admin, body: { disabled: true } })).status).toBe(200);
        expect(await closedAt - disabledAt).toBeLessThan(1_000);
        const { closed } = await waitFor(() => sessions(boxes.bobs!.id), (s) => s.closed.some((c) => c.reason === 'the user was disabled'));
        expect(closed.length).toBeGreaterThan(0);
        await t.api('PATCH', `/api/v1/users/${bob.id}`, { token: lab.admin, body: { disabled: false } });
      });

      it('ends forwards into an instance that stops', async () => {
        const { local, child } = await forward('alice', 'alice+box', '127.0.0.1:7000');
        const socket = tcpConnect(local, '127.0.0.1');
        const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
        socket.on('error', () => undefined);
        await new Promise((r) => setTimeout(r, 300));
        const stopped = await t.api('POST', `/api/v1/instances/${boxes.box!.id}/stop?wait=true`, { token: lab.tokens.alice });
        expect(stopped.status).toBe(200);
        await closed;
        child.kill();
        const { closed: records } = await waitFor(() => sessions(boxes.box!.id), (s) => s.closed.some((c) => c.reason === 'the instance stopped'));
        expect(records.some((c) => c.reason === 'the instance stopped')).toBe(true);
      }, 60_000);

      it('stays up when a client opens 1,000 channels at once: sessions and forwards beyond the limits are refused', async () => {
        const client = await ssh2Client('alice+tools');
        try {
          const outcomes = await Promise.all(Array.from({ length: 1_000 }, (_, i) => new Promise<'ok' | 'refused'>((resolve) => {
            if (i % 2 === 0) client.forwardOut('127.0.0.1', 0, '127.0.0.1', 1, (err, ch) => { if (!err) ch.close(); resolve(err ? 'refused' : 'ok'); });
            else client.exec('sleep 5', (err, ch?: ClientChannel) => { if (!err) ch!.close(); resolve(err ? 'refused' : 'ok'); });
          })));
          expect(outcomes.filter((o) => o === 'ok').length).toBeLessThanOrEqual(10);
          expect(outcomes.filter((o) => o === 'refused').length).toBeGreaterThanOrEqual(990);
        } finally {
          client.end();
        }
        // the jump host still serves
        expect((await ssh('alice', ['alice+tools@127.0.0.1', 'echo alive'])).stdout).toBe('alive\n');
      }, 90_000);
    });

    function ssh2Client(username: string): Promise<ssh2.Client> {
      return new Promise((resolve, reject) => {
        const client = new ssh2.Client();
        client.on('ready', () => resolve(client)).on('error', reject);
        client.connect({ host: '127.0.0.1', port, username, password: `${username.split('+')[0]}-password`, readyTimeout: 15_000, hostVerifier: () => true });
      });
    }
  },
);
