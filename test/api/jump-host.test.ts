import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ssh2, { type ClientChannel, type ConnectConfig } from 'ssh2';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, runningInstance, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';
import { freePort } from '../support/ports.ts';
import { run } from '../support/ssh-clients.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
const PROMPT = "请选择要连接的容器（输入序号，输入 'q' 退出）: ";
/**
 * busybox ash as root, in $HOME (/root, shown as ~: shells start there, as with sshd); it asks the
 * terminal for the cursor position and redraws, hence no `$`.
 */
const SHELL_PROMPT = '~ # ';

/** An interactive ssh2 session whose output is collected for `until`. */
class Shell {
  output = '';
  exitCode: number | null | undefined;
  closed = false;

  constructor(readonly client: ssh2.Client, readonly channel: ClientChannel) {
    channel.on('data', (d: Buffer) => (this.output += d.toString()));
    channel.stderr.on('data', (d: Buffer) => (this.output += d.toString()));
    channel.on('exit', (code: number | null) => (this.exitCode = code));
    channel.on('close', () => {
      this.closed = true;
      client.end();
    });
  }

  /** Waits until the output since `from` matches; returns the index after the match. */
  async until(pattern: RegExp | string, from = 0, ms = 15_000): Promise<number> {
    const deadline = Date.now() + ms;
    for (;;) {
      const rest = this.output.slice(from);
      const index = typeof pattern === 'string' ? rest.indexOf(pattern) : rest.search(pattern);
      if (index >= 0) return from + index + (typeof pattern === 'string' ? pattern.length : (rest.match(pattern)?.[0].length ?? 0));
      if (Date.now() > deadline) throw new Error(`no ${String(pattern)} in output: ${JSON.stringify(this.output)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async closedWithin(ms = 15_000): Promise<void> {
    await waitFor(async () => this.closed, (c) => c, ms);
  }
}

describeWithService('Docker engine', Boolean(socketPath), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'SSH jump host', () => {
  const masterKey = randomBytes(32).toString('base64');
  const work = mkdtempSync(join(tmpdir(), 'tianqi-jump-'));
  const dataDir = join(work, 'data');
  const knownHosts = join(work, 'known_hosts');
  const keyFile = join(work, 'id_ed25519');
  let port: number;
  let t: TestApp;
  let lab: Lab;
  const instances: Record<string, { id: string; containerId: string }> = {};
  const seenHostKeys: Buffer[] = [];

  const start = async (extraEnv: Record<string, string> = {}) =>
    startTestApp({ TIANQI_SSH_PORT: String(port), TIANQI_POLL_INTERVAL_MS: '60000', TIANQI_MASTER_KEY: masterKey, ...extraEnv }, { dataDir });

  const sshArgs = (...rest: string[]) => [
    '-F', '/dev/null', '-p', String(port),
    '-o', 'StrictHostKeyChecking=no', '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=10',
    ...rest,
  ];
  const withPassword = (password: string, ...rest: string[]): [string, string[]] => [
    'sshpass',
    ['-p', password, 'ssh', ...sshArgs('-o', 'PubkeyAuthentication=no', '-o', 'PreferredAuthentications=password', '-o', 'NumberOfPasswordPrompts=1', ...rest)],
  ];
  const withKey = (...rest: string[]): [string, string[]] => [
    'ssh',
    sshArgs('-i', keyFile, '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none', '-o', 'BatchMode=yes', '-o', 'PasswordAuthentication=no', ...rest),
  ];

  const connect = (username: string, auth: Pick<ConnectConfig, 'password' | 'privateKey'>): Promise<ssh2.Client> =>
    new Promise((resolve, reject) => {
      const client = new ssh2.Client();
      client.on('ready', () => resolve(client)).on('error', reject);
      client.connect({
        host: '127.0.0.1', port, username, ...auth, readyTimeout: 15_000,
        hostVerifier: (key: Buffer) => {
          seenHostKeys.push(key);
          return true;
        },
      });
    });
  const shell = async (username: string, password: string, window = { cols: 80, rows: 24 }): Promise<Shell> => {
    const client = await connect(username, { password });
    // Listeners go on inside the callback: the channel's exit status may come in the same read as
    // its opening, and is gone by the time a promise continuation runs.
    return new Promise<Shell>((resolve, reject) =>
      client.shell({ term: 'xterm', ...window }, (err, ch) => (err ? reject(err) : resolve(new Shell(client, ch)))));
  };
  const exec = async (username: string, password: string, command: string): Promise<Shell> => {
    const client = await connect(username, { password });
    return new Promise<Shell>((resolve, reject) =>
      client.exec(command, (err, ch) => (err ? reject(err) : resolve(new Shell(client, ch)))));
  };
  const sessionEvents = async (instanceId: string) => {
    const events = await t.app.eventStore.readStream(`instance-${instanceId}`);
    return {
      opened: events.filter((e) => e.type === 'TerminalSessionOpened').map((e) => e.data as { sessionId: string; via: string; username: string; clientAddress: string; command: string }),
      closed: events.filter((e) => e.type === 'TerminalSessionClosed').map((e) => e.data as { sessionId: string; reason: string; exitCode: number | null; bytesIn: number; bytesOut: number }),
    };
  };

  beforeAll(async () => {
    port = await freePort();
    t = await start();
    lab = await setUpLab(t, socketPath!, ['alice', 'bob', 'carol', 'erin']);
    for (const [owner, name] of [['alice', 'a-box'], ['alice', 'a-stopped'], ['bob', 'b-box'], ['erin', 'e-box']] as const) {
      const { id } = await runningInstance(t, lab.tokens[owner]!, lab, name);
      // the engine's start event may be recorded a moment before the container's id
      const ready = await waitFor(
        () => t.api<{ id: string; containerId: string | null; status: string }>('GET', `/api/v1/instances/${id}`, { token: lab.tokens[owner] }).then((r) => r.body),
        (i) => i.status === 'running' && i.containerId !== null,
      );
      instances[name] = { id, containerId: ready.containerId! };
    }
    const stopped = await t.api<{ status: string }>('POST', `/api/v1/instances/${instances['a-stopped']!.id}/stop?wait=true`, { token: lab.tokens.alice });
    expect(stopped.status).toBe(200);
    await waitFor(() => t.api<{ status: string }>('GET', `/api/v1/instances/${instances['a-stopped']!.id}`, { token: lab.tokens.alice }).then((r) => r.body.status), (s) => s === 'exited');

    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'alice@laptop', '-f', keyFile]);
    const added = await t.api('POST', '/api/v1/users/me/ssh-keys', { token: lab.tokens.alice, body: { name: 'laptop', publicKey: readFileSync(`${keyFile}.pub`, 'utf8') } });
    expect(added.status).toBe(201);
  }, 180_000);

  afterAll(async () => {
    await removeContainersOf(t, socketPath);
    await t?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  it('signs in with the password (OpenSSH) and lists the caller’s containers, stopped ones with their state', async () => {
    const [cmd, args] = withPassword('alice-password', '-tt', 'alice@127.0.0.1');
    const r = await run(cmd, args, 'q\r');
    expect(r.code).toBe(0);
    const a = instances['a-box']!;
    const s = instances['a-stopped']!;
    expect(r.stdout).toContain('=== 您的容器列表 ===\r\n');
    expect(r.stdout).toContain(`1  a-box-${a.containerId.slice(0, 12)}-local\r\n`);
    expect(r.stdout).toContain(`2  a-stopped-${s.containerId.slice(0, 12)}-local [exited]\r\n`);
    expect(r.stdout).toContain(PROMPT);
    expect(r.stdout).toContain('再见！');
    expect(r.stdout).not.toContain('b-box');
  });

  it('enters the chosen container from the menu (OpenSSH, -tt with piped input) and runs a command there', async () => {
    const [cmd, args] = withPassword('alice-password', '-tt', 'alice@127.0.0.1');
    const r = await run(cmd, args, '1\recho $((6*7))\rexit\r');
    expect(r.code).toBe(0);
    expect(r.stdout.split('\r\n'), JSON.stringify(r)).toContain('42');
  });

  it('signs in with a registered key (OpenSSH and ssh2) and runs commands with their output and exit status', async () => {
    const [cmd, args] = withKey('alice+a-box@127.0.0.1', 'echo hi');
    const hi = await run(cmd, args);
    expect(hi).toMatchObject({ code: 0, stdout: 'hi\n' });
    const [cmd3, args3] = withKey('alice+a-box@127.0.0.1', 'echo oops >&2; exit 3');
    const three = await run(cmd3, args3);
    expect(three.code).toBe(3);
    expect(three.stderr).toContain('oops');
    // stdin reaches the command and its end ends it
    const [catCmd, catArgs] = withKey('alice+a-box@127.0.0.1', 'cat | wc -c');
    expect((await run(catCmd, catArgs, 'twelve bytes')).stdout.trim()).toBe('12');

    // the same key with ssh2
    const client = await connect('alice+a-box', { privateKey: readFileSync(keyFile) });
    const channel = await new Promise<ClientChannel>((resolve, reject) => client.exec('echo key', (err, ch) => (err ? reject(err) : resolve(ch))));
    const viaSsh2 = new Shell(client, channel);
    await viaSsh2.closedWithin();
    expect(viaSsh2).toMatchObject({ output: 'key\n', exitCode: 0 });
  });

  it('refuses a key nobody registered, and another user’s key', async () => {
    const other = join(work, 'other_key');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    const r = await run('ssh', sshArgs('-i', other, '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none', '-o', 'BatchMode=yes', 'alice+a-box@127.0.0.1', 'echo hi'));
    expect(r.code).toBe(255);
    expect(r.stderr).toMatch(/Permission denied/);
    const [cmd, args] = withKey('bob+b-box@127.0.0.1', 'echo hi');
    expect((await run(cmd, args)).code).toBe(255);
  });

  it('drives the menu over ssh2: a wrong entry and a stopped container re-prompt, a number enters, the window size follows', async () => {
    const s = await shell('alice', 'alice-password', { cols: 80, rows: 24 });
    let at = await s.until(PROMPT);
    s.channel.write('9\r');
    at = await s.until(PROMPT, at);
    s.channel.write('2\r');
    at = await s.until(/未在运行/, at);
    at = await s.until(PROMPT, at);
    s.channel.write('x\x7f1\r');
    at = await s.until(SHELL_PROMPT, at);
    s.channel.write('echo $((6*7))\r');
    at = await s.until('\r\n42\r\n', at);
    s.channel.write('stty size\r');
    at = await s.until('\r\n24 80\r\n', at);
    s.channel.write('echo $TERM\r');
    at = await s.until('\r\nxterm\r\n', at);
    s.channel.setWindow(40, 120, 0, 0);
    await new Promise((r) => setTimeout(r, 200));
    s.channel.write('stty size\r');
    await s.until('\r\n40 120\r\n', at);
    s.channel.write('exit 5\r');
    await s.closedWithin();
    expect(s.exitCode).toBe(5);
  });

  it('skips the menu for <user>+<instance> and refuses unknown or foreign instances with exit code 1', async () => {
    const s = await shell('alice+a-box', 'alice-password');
    await s.until(SHELL_PROMPT);
    s.channel.write('echo $((6*7))\r');
    await s.until('\r\n42\r\n');
    s.channel.write('exit\r');
    await s.closedWithin();

    const foreign = await shell('bob+a-box', 'bob-password');
    await foreign.closedWithin();
    expect(foreign.exitCode).toBe(1);
    expect(foreign.output).toContain('找不到实例 a-box');
    const [cmd, args] = withPassword('bob-password', 'bob+a-box@127.0.0.1', 'echo hi');
    const r = await run(cmd, args);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('找不到实例 a-box');
  });

  it('shows other users only their own containers, and says so when there are none', async () => {
    const bob = await shell('bob', 'bob-password');
    await bob.until(PROMPT);
    expect(bob.output).toContain(`1  b-box-${instances['b-box']!.containerId.slice(0, 12)}-local`);
    expect(bob.output).not.toContain('a-box');
    bob.channel.write('q\r');
    await bob.closedWithin();
    expect(bob.exitCode).toBe(0);

    const carol = await shell('carol', 'carol-password');
    await carol.closedWithin();
    expect(carol.output).toContain('您还没有容器实例。');
  });

  it('shows an admin every container', async () => {
    const admin = await shell('admin', 'admin-password-1');
    await admin.until(PROMPT);
    for (const name of ['a-box', 'a-stopped', 'b-box', 'e-box']) expect(admin.output).toContain(`  ${name}-`);
    admin.channel.write('q\r');
    await admin.closedWithin();
  });

  it('asks for the instance when sftp signs in without one, and refuses classic scp in an image without scp in one line', async () => {
    const sftp = await run('sftp', ['-F', '/dev/null', '-P', String(port), '-o', 'StrictHostKeyChecking=no', '-o', `UserKnownHostsFile=${knownHosts}`,
      '-i', keyFile, '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none', '-o', 'BatchMode=yes', '-b', '-', 'alice@127.0.0.1'], 'ls\n');
    expect(sftp.code).not.toBe(0);
    expect(sftp.stderr).toContain(`传输文件时请指定实例：sftp -P ${port} alice+<实例名>@<主机>`);
    const scp = await exec('alice+a-box', 'alice-password', 'scp -t /tmp');
    await scp.closedWithin();
    expect(scp.exitCode).toBe(1);
    expect(scp.output.trim().split('\n')).toEqual([expect.stringContaining('实例 a-box 的镜像中没有 scp')]);
  });

  it('audits every ssh session: one open and one close each, with address, bytes and exit code', async () => {
    const { opened, closed } = await waitFor(() => sessionEvents(instances['a-box']!.id), (e) => e.opened.length > 0 && e.opened.length === e.closed.length);
    expect(opened.length).toBeGreaterThanOrEqual(6);
    expect(opened.every((o) => o.via === 'ssh' && o.username === 'alice' && o.clientAddress === '127.0.0.1')).toBe(true);
    expect(new Set(closed.map((c) => c.sessionId))).toEqual(new Set(opened.map((o) => o.sessionId)));
    const exit3 = closed.find((c) => c.exitCode === 3)!;
    expect(exit3.reason).toMatch(/exited with code 3/);
    expect(closed.every((c) => c.bytesOut > 0)).toBe(true);
    expect(opened.some((o) => o.command === 'echo hi')).toBe(true);
    // nothing was opened on an instance that was refused
    expect((await sessionEvents(instances['a-stopped']!.id)).opened).toEqual([]);
  });

  it('ends the sessions of a user who gets disabled, and of an instance that stops', async () => {
    const erin = await shell('erin+e-box', 'erin-password');
    await erin.until(SHELL_PROMPT);
    const users = await t.api<{ id: string; username: string }[]>('GET', '/api/v1/users', { token: lab.admin });
    const erinId = users.body.find((u) => u.username === 'erin')!.id;
    expect((await t.api('PATCH', `/api/v1/users/${erinId}`, { token: lab.admin, body: { disabled: true } })).status).toBe(200);
    await erin.closedWithin();
    expect(erin.output).toContain('账号已被禁用');

    const bob = await shell('bob+b-box', 'bob-password');
    await bob.until(SHELL_PROMPT);
    expect((await t.api('POST', `/api/v1/instances/${instances['b-box']!.id}/stop?wait=true`, { token: lab.tokens.bob })).status).toBe(200);
    await bob.closedWithin();
    expect(bob.output).toContain('容器已停止');

    const reasons = async (id: string) => (await sessionEvents(id)).closed.map((c) => c.reason);
    expect(await waitFor(() => reasons(instances['e-box']!.id), (r) => r.length === 1)).toEqual(['the user was disabled']);
    expect(await waitFor(() => reasons(instances['b-box']!.id), (r) => r.length === 1)).toEqual(['the instance stopped']);
  }, 60_000);

  it('closes open sessions when it stops and keeps its host key across a restart', async () => {
    const recorded = readFileSync(knownHosts, 'utf8');
    expect(recorded).toContain(`[127.0.0.1]:${port} ssh-ed25519 `);
    const before = seenHostKeys.at(-1)!;

    const open = await shell('alice+a-box', 'alice-password');
    await open.until(SHELL_PROMPT);
    await t.stop({ keepData: true });
    await open.closedWithin();
    // the next app instance closes idle sessions quickly (see the next test)
    process.env.TIANQI_SSH_IDLE_TIMEOUT_MS = '1500';
    try {
      t = await start();
    } finally {
      delete process.env.TIANQI_SSH_IDLE_TIMEOUT_MS;
    }
    const events = await sessionEvents(instances['a-box']!.id);
    expect(events.closed.map((c) => c.sessionId).sort()).toEqual(events.opened.map((o) => o.sessionId).sort());
    expect(events.closed.at(-1)!.reason).toBe('the jump host stopped');

    // OpenSSH checks strictly against what it recorded before the restart
    const [cmd, args] = withKey('-o', 'StrictHostKeyChecking=yes', 'alice+a-box@127.0.0.1', 'echo same-key');
    const r = await run(cmd, args);
    expect(r.stderr).not.toMatch(/HOST IDENTIFICATION HAS CHANGED/);
    expect(r).toMatchObject({ code: 0, stdout: 'same-key\n' });
    expect(readFileSync(knownHosts, 'utf8')).toBe(recorded);
    await (await exec('alice+a-box', 'alice-password', 'true')).closedWithin();
    expect(seenHostKeys.at(-1)!.equals(before)).toBe(true);
  }, 90_000);

  it('closes a session after TIANQI_SSH_IDLE_TIMEOUT_MS without bytes either way', async () => {
    const idle = await shell('alice+a-box', 'alice-password');
    await idle.until(SHELL_PROMPT);
    const started = Date.now();
    await idle.closedWithin(10_000);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_000);
    expect(idle.output).toContain('空闲时间过长');
    expect(await waitFor(() => sessionEvents(instances['a-box']!.id).then((e) => e.closed.at(-1)?.reason), (r) => r === 'idle timeout')).toBe('idle timeout');
  });

  it('keeps a connection for another session after one ends, and closes one left without a session for the idle timeout', async () => {
    const client = await connect('alice+a-box', { password: 'alice-password' });
    const closed = new Promise<number>((resolve) => client.once('close', () => resolve(Date.now())));
    const run = (command: string) => new Promise<string>((resolve, reject) => {
      client.exec(command, (err, channel) => {
        if (err) return reject(err);
        let out = '';
        channel.on('data', (chunk: Buffer) => (out += chunk.toString()));
        channel.on('close', () => resolve(out));
      });
    });
    expect(await run('echo first')).toBe('first\n');
    // Like OpenSSH: the channel closed, the connection is still there for the next one.
    expect(await run('echo second')).toBe('second\n');
    const lastSession = Date.now();
    const at = await Promise.race([closed, new Promise<null>((resolve) => setTimeout(() => resolve(null), 10_000))]);
    expect(at, 'the idle connection was not closed').not.toBeNull();
    expect(at! - lastSession).toBeGreaterThanOrEqual(1_000);
  });

  it('refuses an address for a while after 5 wrong passwords, even with the right one', async () => {
    for (let i = 0; i < 5; i += 1) {
      await expect(connect('alice', { password: `wrong-${i}` })).rejects.toThrow(/authentication methods failed/);
    }
    await expect(connect('alice', { password: 'alice-password' })).rejects.toThrow(/authentication methods failed/);
    const [cmd, args] = withPassword('alice-password', 'alice+a-box@127.0.0.1', 'echo hi');
    const r = await run(cmd, args);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(t.logs.join('')).not.toContain('alice-password');
  }, 60_000);
});
