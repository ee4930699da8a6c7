import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { io, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { runningInstance, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;

interface Terminal {
  readonly socket: Socket;
  /** Everything the shell printed, as received. */
  output: string;
  exits: { code: number | null }[];
  errors: { code: string; message: string }[];
  disconnected: boolean;
  /** While true, `data` is not acknowledged: a browser that has fallen behind. */
  holding: boolean;
  held: (() => void)[];
}

interface HistoryEntry {
  type: string;
  by: string | null;
  summary: string;
}

const ESC = String.fromCharCode(0x1b);
/** busybox's prompt, then the terminal queries and redraws of its line editor. */
const PROMPT = new RegExp(`# (?:${ESC}\\[[0-9;]*[A-Za-z]|\r)*$`);
/** 显存切分 as printf octal escapes: the echoed command does not contain the characters. */
const CHINESE_AS_OCTAL = '\\346\\230\\276\\345\\255\\230\\345\\210\\207\\345\\210\\206';

describeWithService('Docker engine', Boolean(socketPath), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'socket.io /terminal', () => {
  let t: TestApp;
  let lab: Lab;
  let box: { id: string; containerId: string };
  const sockets: Socket[] = [];
  const containers: string[] = [];
  const docker = new Dockerode({ socketPath });

  const connect = (token: string | undefined) => {
    const socket = io(`${t.url}/terminal`, { auth: token === undefined ? {} : { token }, transports: ['websocket'], reconnection: false, forceNew: true });
    sockets.push(socket);
    return socket;
  };
  const connected = (socket: Socket) =>
    new Promise<void>((resolve, reject) => {
      socket.on('connect', () => resolve());
      socket.on('connect_error', (err) => reject(err));
    });

  /** Connects, opens a terminal, types `typeAhead` at once, and waits for the first prompt unless told not to. */
  async function open(
    token: string,
    instanceId: string,
    options: { cols?: number; rows?: number; typeAhead?: string; waitForPrompt?: boolean } = {},
  ): Promise<Terminal> {
    const socket = connect(token);
    await connected(socket);
    const term: Terminal = { socket, output: '', exits: [], errors: [], disconnected: false, holding: false, held: [] };
    socket.on('data', (text: string, acknowledge: () => void) => {
      term.output += text;
      if (term.holding) term.held.push(acknowledge);
      else acknowledge();
    });
    socket.on('exit', (exit: { code: number | null }) => term.exits.push(exit));
    socket.on('error', (error: { code: string; message: string }) => term.errors.push(error));
    socket.on('disconnect', () => (term.disconnected = true));
    socket.emit('open', { instanceId, cols: options.cols ?? 80, rows: options.rows ?? 24, ack: true });
    if (options.typeAhead !== undefined) socket.emit('data', options.typeAhead);
    if (options.waitForPrompt ?? true) await waitFor(async () => term.output.slice(-200), (out) => PROMPT.test(out), 10_000);
    return term;
  }

  /**
   * Types `line` and waits until the output (from here on) matches `expected`. The TTY echoes the
   * line, so commands are written (`$((6*7))`, octal escapes) to print what they do not contain.
   */
  async function run(term: Terminal, line: string, expected: RegExp, ms = 10_000): Promise<string> {
    const from = term.output.length;
    term.socket.emit('data', `${line}\n`);
    return waitFor(async () => term.output.slice(from), (out) => expected.test(out), ms);
  }

  const history = async (instanceId: string, token: string) =>
    (await t.api<HistoryEntry[]>('GET', `/api/v1/instances/${instanceId}/history`, { token })).body;
  const ofType = (entries: HistoryEntry[], type: string) => entries.filter((e) => e.type === type);
  /** The history once every session opened in it has its close. */
  const settled = (instanceId: string, token: string) =>
    waitFor(() => history(instanceId, token), (list) => ofType(list, 'TerminalSessionClosed').length === ofType(list, 'TerminalSessionOpened').length, 10_000);
  const bytesOf = (summary: string) => {
    const match = /(\d+) bytes in, (\d+) bytes out/.exec(summary);
    return match ? { in: Number(match[1]), out: Number(match[2]) } : null;
  };

  /** Shells that `docker exec` started in the container (parent 0, not its init), and the flood's `yes`. */
  async function leftovers(containerId: string): Promise<string[]> {
    const exec = await docker.getContainer(containerId).exec({ Cmd: ['ps', '-o', 'pid,ppid,comm'], AttachStdout: true, AttachStderr: true });
    const stream = await exec.start({});
    const out = await new Promise<string>((resolve) => {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => resolve(Buffer.concat(chunks).toString('latin1')));
    });
    return out.split('\n').filter((line) => {
      const [, pid, ppid, command] = /^\D*(\d+)\s+(\d+)\s+(\S+)/.exec(line) ?? [];
      return (ppid === '0' && pid !== '1' && command === 'sh') || command === 'yes';
    });
  }

  async function instanceFor(token: string, name: string) {
    const instance = await runningInstance(t, token, lab, name);
    expect(instance.status, JSON.stringify(instance)).toBe('running');
    containers.push(instance.containerId);
    return instance;
  }

  beforeAll(async () => {
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000' });
    lab = await setUpLab(t, socketPath!, ['alice', 'bob', 'carol']);
    box = await instanceFor(lab.tokens.alice!, 'box');
  }, 120_000);
  afterAll(async () => {
    for (const s of sockets) s.disconnect();
    await t?.stop();
    for (const id of containers) await docker.getContainer(id).remove({ force: true, v: true }).catch(() => undefined);
  });

  it('runs commands in sh where the image has no bash, and the shell goes when the client does', async () => {
    const term = await open(lab.tokens.alice!, box.id);
    expect(await run(term, 'echo $((6*7))', /\r\n42\r\n/)).toMatch(/42/);
    expect(await run(term, 'echo $0', /\r\n\/bin\/sh\r\n/)).toBeTruthy();
    expect(await leftovers(box.containerId)).toHaveLength(1);
    term.socket.disconnect();
    // Hung up, as a closed terminal would be: no shell left behind in the container.
    await waitFor(() => leftovers(box.containerId), (shells) => shells.length === 0, 10_000);
  });

  it('hangs up only the shell of the session that closed; the others keep working', async () => {
    const terms = [];
    for (let i = 0; i < 4; i += 1) terms.push(await open(lab.tokens.alice!, box.id));
    for (const [i, term] of terms.entries()) await run(term, `echo shell-$((${i}+100))`, new RegExp(`\\r\\nshell-${i + 100}\\r\\n`));
    expect(await leftovers(box.containerId)).toHaveLength(4);
    terms[1]!.socket.disconnect();
    terms[2]!.socket.disconnect();
    await waitFor(() => leftovers(box.containerId), (shells) => shells.length === 2, 10_000);
    expect(await run(terms[0]!, 'echo still-$((1+1))', /\r\nstill-2\r\n/)).toBeTruthy();
    expect(await run(terms[3]!, 'echo still-$((2+1))', /\r\nstill-3\r\n/)).toBeTruthy();
    terms[0]!.socket.disconnect();
    terms[3]!.socket.disconnect();
    await waitFor(() => leftovers(box.containerId), (shells) => shells.length === 0, 10_000);
  });

  it('passes Chinese output through intact', async () => {
    const term = await open(lab.tokens.alice!, box.id);
    await run(term, `printf '${CHINESE_AS_OCTAL}\\n'`, /\r\n显存切分\r\n/);
    expect(term.output).not.toContain('\uFFFD');
    // …and Chinese input: the shell gets UTF-8 and echoes it back.
    await run(term, 'echo 天启 | wc -c', /\r\n\s*7\r\n/);
    term.socket.disconnect();
  });

  it('applies the size from open before the shell reads anything, and follows resize', async () => {
    const term = await open(lab.tokens.alice!, box.id, { cols: 90, rows: 30, typeAhead: 'stty size\n', waitForPrompt: false });
    await waitFor(async () => term.output, (out) => /\r\n30 90\r\n/.test(out), 10_000);
    term.socket.emit('resize', { cols: 100, rows: 40 });
    // The resize goes to the engine while the typing goes to the shell: ask until it shows.
    await waitFor(() => run(term, 'stty size', /\r\n\d+ \d+\r\n/), (out) => /\r\n40 100\r\n/.test(out), 10_000);
    term.socket.emit('resize', { cols: 0, rows: 40 });
    await waitFor(async () => term.errors, (errors) => errors.some((e) => e.code === 'VALIDATION_FAILED'), 5_000);
    expect(term.disconnected).toBe(false);
    term.socket.disconnect();
  });

  it('sends exit with the code when the shell ends, then disconnects', async () => {
    const term = await open(lab.tokens.alice!, box.id);
    term.socket.emit('data', 'exit 3\n');
    await waitFor(async () => term.disconnected, Boolean, 10_000);
    expect(term.exits).toEqual([{ code: 3 }]);
    expect(term.errors).toEqual([]);
  });

  it('refuses someone else’s instance as not found, and a bad token', async () => {
    const bob = connect(lab.tokens.bob);
    await connected(bob);
    const errors: { code: string }[] = [];
    let disconnected = false;
    bob.on('error', (e: { code: string }) => errors.push(e));
    bob.on('disconnect', () => (disconnected = true));
    bob.emit('open', { instanceId: box.id, cols: 80, rows: 24 });
    await waitFor(async () => disconnected, Boolean, 5_000);
    expect(errors.map((e) => e.code)).toEqual(['NOT_FOUND']);

    await expect(connected(connect('not.a.token'))).rejects.toThrow(/UNAUTHORIZED/);
    await expect(connected(connect(undefined))).rejects.toThrow(/UNAUTHORIZED/);
  });

  it('records each session in the instance history: who, from where, the shell, bytes both ways', async () => {
    const term = await open(lab.tokens.alice!, box.id);
    await run(term, 'echo $((6*7))', /\r\n42\r\n/);
    term.socket.disconnect();
    await waitFor(async () => term.disconnected, Boolean, 5_000);
    const entries = await settled(box.id, lab.tokens.alice!);
    const opened = ofType(entries, 'TerminalSessionOpened');
    const closed = ofType(entries, 'TerminalSessionClosed');
    // Every session of this file so far, each opened once and closed once.
    expect(opened).toHaveLength(9);
    expect(closed).toHaveLength(9);
    expect(opened.at(-1)).toMatchObject({ by: 'alice' });
    expect(opened.at(-1)!.summary).toMatch(/alice opened a web terminal session from .+ \(\/bin\/sh\)/);
    const last = closed.at(-1)!;
    expect(last.summary).toMatch(/the client disconnected/);
    expect(bytesOf(last.summary)!.in).toBe('echo $((6*7))\n'.length);
    expect(bytesOf(last.summary)!.out).toBeGreaterThan(20);
    expect(closed.some((e) => /the shell exited with code 3/.test(e.summary))).toBe(true);
  });

  it('closes the session when its user is disabled', async () => {
    const carol = lab.tokens.carol!;
    const instance = await instanceFor(carol, 'carols');
    const term = await open(carol, instance.id);
    const users = await t.api<{ id: string; username: string }[]>('GET', '/api/v1/users', { token: lab.admin });
    const carolId = users.body.find((u) => u.username === 'carol')!.id;
    expect((await t.api('PATCH', `/api/v1/users/${carolId}`, { token: lab.admin, body: { disabled: true } })).status).toBe(200);
    await waitFor(async () => term.disconnected, Boolean, 5_000);
    expect(term.errors.map((e) => e.code)).toEqual(['ACCOUNT_DISABLED']);
    const entries = await settled(instance.id, lab.admin);
    expect(ofType(entries, 'TerminalSessionClosed').map((e) => e.summary)).toEqual([expect.stringMatching(/the user was disabled/)]);
    await waitFor(() => leftovers(instance.containerId), (shells) => shells.length === 0, 10_000);
  });

  it('closes the session when the instance stops', async () => {
    const instance = await instanceFor(lab.tokens.alice!, 'stopped');
    // An admin's session in a user's instance: visible to admins.
    const term = await open(lab.admin, instance.id);
    expect((await t.api('POST', `/api/v1/instances/${instance.id}/stop?wait=true`, { token: lab.tokens.alice })).status).toBe(200);
    await waitFor(async () => term.disconnected, Boolean, 20_000);
    // The stop kills the shell and is observed as an event: whichever the server saw first.
    expect([...term.errors.map((e) => e.code), ...term.exits.map(() => 'exit')]).toHaveLength(1);
    const entries = await settled(instance.id, lab.admin);
    expect(ofType(entries, 'TerminalSessionOpened').map((e) => e.by)).toEqual(['admin']);
    expect(ofType(entries, 'TerminalSessionClosed')).toHaveLength(1);
  });

  it('refuses a terminal in an instance that is not running', async () => {
    const instance = (await t.api<{ id: string }[]>('GET', '/api/v1/instances?q=stopped', { token: lab.tokens.alice })).body[0]!;
    const term = await open(lab.tokens.alice!, instance.id, { waitForPrompt: false });
    await waitFor(async () => term.disconnected, Boolean, 5_000);
    expect(term.errors.map((e) => e.code)).toEqual(['NOT_RUNNING']);
  });

  describe('flow control', () => {
    // 2 MB of "y\n", which the TTY turns into 3 MB of "y\r\n": well above the bounds below, and
    // quick enough through Docker's TTY path (about 0.4 MB/s on the test engine, as with `docker exec -t`).
    const FLOOD = 'yes | head -c 2000000; echo DONE-$((40+2))';
    const TOTAL_YS = 1_000_000;

    const count = (text: string, part: string) => {
      let n = 0;
      for (let at = text.indexOf(part); at !== -1; at = text.indexOf(part, at + part.length)) n += 1;
      return n;
    };

    /** Waits until nothing new has come for a second; returns the bytes received by then. */
    async function stalled(term: Terminal): Promise<number> {
      let last = -1;
      for (;;) {
        const now = Buffer.byteLength(term.output, 'utf8');
        if (now === last && now > 0) return now;
        last = now;
        await new Promise((r) => setTimeout(r, 1_000));
      }
    }

    it('stops sending while the browser has not acknowledged, and sends the rest once it has', async () => {
      const term = await open(lab.tokens.alice!, box.id);
      term.output = '';
      term.holding = true;
      term.socket.emit('data', `${FLOOD}\n`);
      const received = await stalled(term);
      // Without flow control all 3 MB arrive; with it, about the 256 KiB window.
      expect(received).toBeGreaterThan(200 * 1024);
      expect(received).toBeLessThan(1024 * 1024);
      term.holding = false;
      for (const acknowledge of term.held.splice(0)) acknowledge();
      await waitFor(async () => term.output.includes('DONE-42'), Boolean, 60_000);
      expect(count(term.output, 'y\r\n')).toBe(TOTAL_YS);
      term.socket.disconnect();
    }, 90_000);

    it('stops reading the shell meanwhile: the engine holds the rest, not the server', async () => {
      const term = await open(lab.tokens.alice!, box.id);
      term.holding = true;
      term.socket.emit('data', `${FLOOD}\n`);
      await stalled(term);
      // Blocked on its writes, not gone.
      expect((await leftovers(box.containerId)).filter((line) => line.includes('yes'))).toHaveLength(1);
      term.socket.disconnect();
      await waitFor(async () => term.disconnected, Boolean, 5_000);
      const closed = ofType(await settled(box.id, lab.tokens.alice!), 'TerminalSessionClosed');
      // What the server read from the exec: the window and what was on its way, not the 3 MB.
      expect(bytesOf(closed.at(-1)!.summary)!.out).toBeLessThan(1024 * 1024);
      // The hang-up ends the foreground job too.
      await waitFor(() => leftovers(box.containerId), (left) => left.length === 0, 10_000);
    }, 60_000);
  });
});

describeWithService('Docker engine', Boolean(socketPath), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'socket.io /terminal on shutdown', () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'tianqi-terminal-'));
  const env = { TIANQI_POLL_INTERVAL_MS: '60000', TIANQI_MASTER_KEY: randomBytes(32).toString('base64') };
  let containerId: string | undefined;
  afterAll(async () => {
    if (containerId) await new Dockerode({ socketPath }).getContainer(containerId).remove({ force: true, v: true }).catch(() => undefined);
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('closes every session, on record, when the server stops', async () => {
    const first = await startTestApp(env, { dataDir });
    const lab = await setUpLab(first, socketPath!, ['dave']);
    const instance = await runningInstance(first, lab.tokens.dave!, lab, 'shutdown');
    containerId = instance.containerId;
    const socket = io(`${first.url}/terminal`, { auth: { token: lab.tokens.dave }, transports: ['websocket'], reconnection: false, forceNew: true });
    const errors: { code: string }[] = [];
    let output = '';
    socket.on('error', (e: { code: string }) => errors.push(e));
    // A plain client, as API.md describes it: no acknowledgements, paced by the socket itself.
    socket.on('data', (text: string) => {
      output += text;
    });
    socket.emit('open', { instanceId: instance.id, cols: 80, rows: 24 });
    await waitFor(async () => output, (out) => PROMPT.test(out), 10_000);
    socket.emit('data', 'seq 1 30000 | tail -n 1; echo done-$((6*7))\r');
    await waitFor(async () => output, (out) => out.includes('done-42'), 20_000);
    expect(output).toContain('30000');
    await first.stop({ keepData: true });
    await waitFor(async () => errors, (list) => list.length > 0, 5_000);
    expect(errors.map((e) => e.code)).toEqual(['SERVER_SHUTDOWN']);
    socket.disconnect();

    const second = await startTestApp(env, { dataDir });
    try {
      const admin = await second.login('admin', ADMIN_PASSWORD);
      const entries = (await second.api<HistoryEntry[]>('GET', `/api/v1/instances/${instance.id}/history`, { token: admin })).body;
      expect(entries.filter((e) => e.type === 'TerminalSessionOpened')).toHaveLength(1);
      const closed = entries.filter((e) => e.type === 'TerminalSessionClosed');
      expect(closed).toHaveLength(1);
      expect(closed[0]!.summary).toMatch(/server shutting down/);
    } finally {
      await second.stop();
    }
  }, 120_000);
});
