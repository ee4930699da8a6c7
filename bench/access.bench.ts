// Access paths into a running instance: the web terminal (socket.io `/terminal`) and the SSH jump
// host, each next to a direct dockerode exec attach with a TTY, in one run against the local
// dockerd. The platform runs in this process; every client runs in a child process (this same
// file, forked), so the server's CPU and memory are its own and the clients do not share its
// event loop, as a browser or an ssh client would not. Files and ports over the jump host (SFTP,
// `ssh -L`) are timed with the real OpenSSH clients, separate processes of their own, next to a
// direct dockerode exec that streams the same bytes.
import { execFile, fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import Dockerode from 'dockerode';
import { io } from 'socket.io-client';
import ssh2, { type ClientChannel, type SFTPWrapper } from 'ssh2';
import { App } from '../src/app.ts';
import { loadConfig } from '../src/config.ts';
import { createLogger } from '../src/logger.ts';
import { ensureServiceImage } from '../test/support/test-image.ts';
import { percentile } from './stats.ts';
import { freePort } from '../test/support/ports.ts';
import { openForward, SftpBatch } from './openssh.ts';
import { strictApi } from '../test/support/http-client.ts';

const CHILD_FLAG = '--access-bench-clients';
const dockerSocket = process.env.TIANQI_TEST_DOCKER_SOCKET ?? '/var/run/docker.sock';
const round = (n: number) => Math.round(n * 100) / 100;

/** Keystrokes timed per path, after WARM_UP_KEYS untimed ones. */
const KEYSTROKES = 200;
const WARM_UP_KEYS = 20;
/** Wide enough that every keystroke of the run stays on the prompt's line: no wrapping, no redraws. */
const COLS = 1000;
const ROWS = 50;
/** Bulk rounds, each one run per path back to back; the medians count. */
const BULK_ROUNDS = 5;
/** The slowest path should need about this long for one bulk run (the payload is the same for all three). */
const BULK_TARGET_MS = 3_000;
const BULK_MAX_BYTES = 50_000_000;
const CALIBRATION_BYTES = 1_000_000;
const IDLE_SESSIONS = 100;
const IDLE_CONCURRENCY = 10;
/** File rounds: each one a direct exec, OpenSSH sftp, ssh2's fastGet, a direct exec and a forward, back to back; the medians count. */
const FILE_ROUNDS = 3;
/** The slowest of them should need about this long for one file (the same file for all). */
const FILE_TARGET_MS = 2_000;
const FILE_CALIBRATION_BYTES = 20_000_000;
const FILE_MAX_BYTES = 400_000_000;
/** The file in the container, and the port of the service there that sends it to a client that asks. */
const BENCH_FILE = '/data/bench.bin';
const SERVICE_PORT = 7001;
/** busybox ash's prompt as root: `/ # `. */
const PROMPT = '# ';
const SENTINEL = '__DONE__';

type PathName = 'direct' | 'web' | 'ssh';
const PATHS: readonly PathName[] = ['direct', 'web', 'ssh'];

/** What the clients need to reach the instance three ways. */
interface Target {
  readonly url: string;
  readonly token: string;
  readonly instanceId: string;
  readonly instanceName: string;
  readonly containerId: string;
  readonly sshPort: number;
  readonly username: string;
  readonly password: string;
  readonly dockerSocket: string;
}

type Request =
  | { op: 'open' }
  | { op: 'echo' }
  | { op: 'bulk'; path: PathName; bytes: number }
  | { op: 'close' }
  | { op: 'idle-open'; count: number }
  | { op: 'idle-check' }
  | { op: 'idle-close' }
  | { op: 'cat'; path: string }
  | { op: 'sftp-open' }
  | { op: 'fast-get'; remote: string; local: string }
  | { op: 'sftp-close' }
  | { op: 'read-port'; port: number };

/** One timed transfer: how long it took and how many bytes arrived. */
interface Transfer {
  readonly ms: number;
  readonly bytes: number;
}

// ————————————————————————————————— clients (the child process) —————————————————————————————————

/** The output of one terminal: bytes counted, recent text searched for what a step waits for. */
class Tap {
  bytes = 0;
  lastAt = 0;
  private text = '';
  private waiter: { needle: string; resolve: () => void } | null = null;

  push(text: string, bytes: number): void {
    const searchFrom = Math.max(0, this.text.length - (this.waiter?.needle.length ?? 0));
    this.bytes += bytes;
    this.lastAt = performance.now();
    this.text += text;
    const waiter = this.waiter;
    if (waiter && this.text.indexOf(waiter.needle, searchFrom) >= 0) {
      this.waiter = null;
      waiter.resolve();
    }
    if (this.text.length > 65_536) this.text = this.text.slice(-1_024);
  }

  /** Forgets what came so far: `until` looks only at what comes after. */
  mark(): void {
    this.text = '';
    this.bytes = 0;
  }

  until(needle: string, ms = 30_000): Promise<void> {
    if (this.text.includes(needle)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`no ${JSON.stringify(needle)} within ${ms} ms; output ends ${JSON.stringify(this.text.slice(-300))}`));
      }, ms);
      this.waiter = {
        needle,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
    });
  }

  /** Waits until nothing has come for `quietMs` (the prompt's redraws are over). */
  async settle(quietMs = 250): Promise<void> {
    this.lastAt = performance.now();
    while (performance.now() - this.lastAt < quietMs) await delay(quietMs / 5);
  }
}

interface Term {
  readonly tap: Tap;
  write(text: string): void;
  close(): Promise<void>;
}

async function openWeb(target: Target): Promise<Term> {
  const tap = new Tap();
  const socket = io(`${target.url}/terminal`, { auth: { token: target.token }, transports: ['websocket'], reconnection: false, forceNew: true });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('connect_error', reject);
  });
  // A fast browser: every piece is acknowledged as soon as it arrives.
  socket.on('data', (text: string, acknowledge?: () => void) => {
    tap.push(text, Buffer.byteLength(text, 'utf8'));
    acknowledge?.();
  });
  socket.on('error', (error: unknown) => console.error('web terminal error', error));
  socket.emit('open', { instanceId: target.instanceId, cols: COLS, rows: ROWS, ack: true });
  await tap.until(PROMPT);
  await tap.settle();
  return {
    tap,
    write: (text) => void socket.emit('data', text),
    async close() {
      const exited = new Promise<void>((resolve) => socket.once('exit', () => resolve()));
      socket.emit('data', 'exit\r');
      await Promise.race([exited, delay(15_000)]);
      socket.disconnect();
    },
  };
}

function sshConnect(target: Target): Promise<ssh2.Client> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    client.once('ready', () => resolve(client)).once('error', reject);
    client.connect({
      host: '127.0.0.1', port: target.sshPort, username: `${target.username}+${target.instanceName}`, password: target.password,
      readyTimeout: 60_000, hostVerifier: () => true,
    });
  });
}

async function openSsh(target: Target, settle = true): Promise<Term> {
  const tap = new Tap();
  const client = await sshConnect(target);
  const channel = await new Promise<ClientChannel>((resolve, reject) =>
    client.shell({ term: 'xterm-256color', cols: COLS, rows: ROWS }, (err, ch) => (err ? reject(err) : resolve(ch))));
  const onData = (chunk: Buffer) => tap.push(chunk.toString('latin1'), chunk.length);
  channel.on('data', onData);
  channel.stderr.on('data', onData);
  const closed = new Promise<void>((resolve) => channel.once('close', () => resolve()));
  await tap.until(PROMPT, 60_000);
  if (settle) await tap.settle();
  return {
    tap,
    write: (text) => void channel.write(text),
    async close() {
      // The shell exits by itself: nothing is left in the container for the platform to hang up.
      channel.write('exit\r');
      await Promise.race([closed, delay(15_000)]);
      client.end();
    },
  };
}

/** The baseline: what `docker exec -it <container> /bin/sh` does, through dockerode. */
async function openDirect(target: Target): Promise<Term> {
  const tap = new Tap();
  const docker = new Dockerode({ socketPath: target.dockerSocket });
  const exec = await docker.getContainer(target.containerId).exec({
    Cmd: ['/bin/sh'], Tty: true, AttachStdin: true, AttachStdout: true, AttachStderr: true, Env: ['TERM=xterm-256color'],
  });
  const stream = (await exec.start({ hijack: true, stdin: true })) as unknown as Duplex;
  stream.on('data', (chunk: Buffer) => tap.push(chunk.toString('latin1'), chunk.length));
  stream.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => stream.once('close', () => resolve()));
  await exec.resize({ h: ROWS, w: COLS });
  await tap.until(PROMPT);
  await tap.settle();
  return {
    tap,
    write: (text) => void stream.write(text),
    async close() {
      stream.write('exit\r');
      await Promise.race([closed, delay(2_000)]);
      stream.destroy();
    },
  };
}

/** One keystroke: the time from sending it to its echo coming back. */
async function keystroke(term: Term, key = 'a'): Promise<number> {
  term.tap.mark();
  const echoed = term.tap.until(key, 10_000);
  const started = performance.now();
  term.write(key);
  await echoed;
  return performance.now() - started;
}

async function bulk(term: Term, bytes: number): Promise<{ ms: number; bytes: number }> {
  term.tap.mark();
  const done = term.tap.until(SENTINEL, 300_000);
  const started = performance.now();
  // The quotes keep the echoed command line from containing the sentinel.
  term.write(`head -c ${bytes} /dev/zero | base64; echo __DO''NE__\r`);
  await done;
  const result = { ms: performance.now() - started, bytes: term.tap.bytes };
  await term.tap.settle();
  return result;
}

/**
 * The baseline for files and ports: `docker exec <container> cat PATH` through dockerode, without
 * a TTY, as the jump host's own execs are; stdout's bytes are counted as the engine's frames
 * (8-byte header, payload) go by, without copying them.
 */
export async function catDirect(target: Pick<Target, 'dockerSocket' | 'containerId'>, path: string): Promise<Transfer> {
  const docker = new Dockerode({ socketPath: target.dockerSocket });
  const started = performance.now();
  const exec = await docker.getContainer(target.containerId).exec({ Cmd: ['cat', path], AttachStdout: true, AttachStderr: true, Tty: false });
  const stream = (await exec.start({ hijack: true, stdin: false })) as unknown as Duplex;
  let header = Buffer.alloc(0);
  let left = 0;
  let stdout = false;
  let bytes = 0;
  stream.on('data', (chunk: Buffer) => {
    for (let offset = 0; offset < chunk.length;) {
      if (left === 0) {
        const take = Math.min(8 - header.length, chunk.length - offset);
        header = Buffer.concat([header, chunk.subarray(offset, offset + take)]);
        offset += take;
        if (header.length < 8) break;
        stdout = header[0] === 1;
        left = header.readUInt32BE(4);
        header = Buffer.alloc(0);
        continue;
      }
      const take = Math.min(left, chunk.length - offset);
      if (stdout) bytes += take;
      left -= take;
      offset += take;
    }
  });
  await new Promise<void>((resolve, reject) => {
    stream.once('end', resolve);
    stream.once('close', resolve);
    stream.once('error', reject);
  });
  return { ms: performance.now() - started, bytes };
}

/** A forwarded port's service sends a file when asked: connect, ask with a line, read to the end, count. */
function readPort(port: number): Promise<Transfer> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let bytes = 0;
    const socket = tcpConnect(port, '127.0.0.1', () => socket.write('\n'));
    socket.on('data', (chunk: Buffer) => (bytes += chunk.length));
    socket.once('end', () => resolve({ ms: performance.now() - started, bytes }));
    socket.once('error', reject);
  });
}

async function clientProcess(): Promise<void> {
  const target = JSON.parse(process.env.TIANQI_ACCESS_BENCH_TARGET!) as Target;
  const terms = new Map<PathName, Term>();
  let idle: Term[] = [];
  let files: { client: ssh2.Client; sftp: SFTPWrapper } | null = null;

  const handle = async (request: Request): Promise<unknown> => {
    switch (request.op) {
      case 'open':
        terms.set('direct', await openDirect(target));
        terms.set('web', await openWeb(target));
        terms.set('ssh', await openSsh(target));
        return null;
      case 'echo': {
        const times: Record<PathName, number[]> = { direct: [], web: [], ssh: [] };
        // Round robin, so that drift in the machine's load falls on all three alike.
        for (let i = 0; i < WARM_UP_KEYS + KEYSTROKES; i++) {
          for (const path of PATHS) {
            const ms = await keystroke(terms.get(path)!);
            if (i >= WARM_UP_KEYS) times[path].push(ms);
          }
        }
        // Ctrl-U: the line of keystrokes is dropped; the prompt stays.
        for (const term of terms.values()) {
          term.write('\x15');
          await term.tap.settle();
        }
        return times;
      }
      case 'bulk':
        return bulk(terms.get(request.path)!, request.bytes);
      case 'close':
        for (const term of terms.values()) await term.close();
        terms.clear();
        return null;
      case 'idle-open': {
        let next = 0;
        const opened: Term[] = [];
        const worker = async () => {
          while (next < request.count) {
            next += 1;
            opened.push(await openSsh(target, false));
          }
        };
        await Promise.all(Array.from({ length: Math.min(IDLE_CONCURRENCY, request.count) }, worker));
        idle = idle.concat(opened);
        await delay(1_000);
        return idle.length;
      }
      case 'idle-check': {
        // Each session runs a command and prints what it does not contain: the shell is there.
        let usable = 0;
        for (let i = 0; i < idle.length; i += IDLE_CONCURRENCY) {
          const batch = idle.slice(i, i + IDLE_CONCURRENCY);
          const results = await Promise.allSettled(batch.map(async (term) => {
            term.tap.mark();
            const answer = term.tap.until('42', 15_000);
            term.write('echo $((40+2))\r');
            await answer;
          }));
          usable += results.filter((r) => r.status === 'fulfilled').length;
        }
        return usable;
      }
      case 'idle-close': {
        const closing = idle;
        idle = [];
        await Promise.all(closing.map((t) => t.close()));
        return closing.length;
      }
      case 'cat':
        return catDirect(target, request.path);
      case 'sftp-open': {
        const client = await sshConnect(target);
        const sftp = await new Promise<SFTPWrapper>((resolve, reject) => client.sftp((err, s) => (err ? reject(err) : resolve(s))));
        files = { client, sftp };
        return null;
      }
      case 'fast-get': {
        // ssh2's defaults: 64 reads of 32 KiB in flight.
        const started = performance.now();
        await new Promise<void>((resolve, reject) => files!.sftp.fastGet(request.remote, request.local, (err) => (err ? reject(err) : resolve())));
        return { ms: performance.now() - started, bytes: statSync(request.local).size } satisfies Transfer;
      }
      case 'sftp-close':
        files?.sftp.end();
        files?.client.end();
        files = null;
        return null;
      case 'read-port':
        return readPort(request.port);
    }
  };

  process.on('message', (message: { id: number; request: Request }) => {
    handle(message.request).then(
      (result) => process.send!({ id: message.id, result }),
      (err: unknown) => process.send!({ id: message.id, error: err instanceof Error ? err.stack ?? err.message : String(err) }),
    );
  });
  process.send!({ ready: true });
}

// ————————————————————————————————— the platform (this process) —————————————————————————————————

/** Forks the clients and gives a typed way to ask them for one step at a time. */
async function startClients(target: Target): Promise<{ ask<T>(request: Request): Promise<T>; child: ChildProcess }> {
  const child = fork(fileURLToPath(import.meta.url), [CHILD_FLAG], {
    env: { ...process.env, TIANQI_ACCESS_BENCH_TARGET: JSON.stringify(target) },
    // The child's stdout goes to stderr: only the suite's JSON goes to stdout.
    stdio: ['ignore', 2, 2, 'ipc'],
  });
  const pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: Error) => void }>();
  let ids = 0;
  const exited = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`the bench clients exited with ${code}`))));
  exited.catch(() => {
    for (const { reject } of pending.values()) reject(new Error('the bench clients exited'));
  });
  await Promise.race([new Promise<void>((resolve) => child.once('message', () => resolve())), exited]);
  child.on('message', (message: { id: number; result?: unknown; error?: string }) => {
    const waiter = pending.get(message.id);
    pending.delete(message.id);
    if (message.error !== undefined) waiter?.reject(new Error(`bench clients: ${message.error}`));
    else waiter?.resolve(message.result);
  });
  return {
    child,
    ask<T>(request: Request) {
      const id = ++ids;
      return new Promise<T>((resolve, reject) => {
        pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
        child.send({ id, request });
      });
    },
  };
}

/** `gc()` whether or not node was started with --expose-gc. */
function garbageCollector(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

/**
 * This process's memory with its garbage collected. V8 gives its emptied pages back only on a
 * later collection, a few seconds on, so RSS is sampled for a while with collections in between
 * and the lowest value counts.
 */
async function memory(gc: () => void): Promise<{ rss: number; heap: number }> {
  const rss: number[] = [];
  const heap: number[] = [];
  for (let i = 0; i < 12; i++) {
    if (i % 3 === 0) gc();
    await delay(1_000);
    const usage = process.memoryUsage();
    rss.push(usage.rss);
    heap.push(usage.heapUsed + usage.external);
  }
  return { rss: Math.min(...rss), heap: Math.min(...heap) };
}

/** The options the OpenSSH clients share: no config, no agent, this run's key and known hosts only. */
const execFileAsync = promisify(execFile);

/**
 * SFTP downloads and forwarded bulk reads of one file in the container, each next to a direct
 * exec that streams the same file, in turns: a round is direct, OpenSSH sftp, ssh2's fastGet,
 * direct again, and the forward, so that each path has a baseline right before it.
 */
async function filesAndPorts(
  ask: <T>(request: Request) => Promise<T>,
  options: { containerId: string; sshPort: number; login: string; token: string; call: ReturnType<typeof strictApi> },
): Promise<Record<string, number>> {
  const { containerId, sshPort, login, token, call } = options;
  const work = mkdtempSync(join(tmpdir(), 'tianqi-bench-files-'));
  const inContainer = (command: string) =>
    execFileAsync('docker', ['exec', containerId, '/bin/sh', '-c', command], { env: { ...process.env, DOCKER_HOST: `unix://${dockerSocket}` } });
  const closing: (() => void)[] = [];
  try {
    // sftp's batch mode signs in without prompts only: with a registered key.
    await execFileAsync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'bench@access', '-f', join(work, 'id_ed25519')]);
    await call('POST', '/users/me/ssh-keys', { name: 'bench', publicKey: readFileSync(join(work, 'id_ed25519.pub'), 'utf8') }, token);
    const writeFile = (bytes: number) => inContainer(`head -c ${bytes} /dev/urandom > ${BENCH_FILE}`);
    await writeFile(FILE_CALIBRATION_BYTES);

    // busybox nc: a persistent listener that runs a shell on each connection, the socket as its
    // stdin and stdout, which sends the file once the client has sent a line (a connection that
    // ends first, like openForward's probes, gets nothing). It waits for its client as an HTTP
    // server does: a service that sends a lot at once on connect can fill the exec stream's
    // stdout before the engine hands on the helper's "ok" on stderr, and the jump host then
    // refuses that connection after 15 s (port-forward.ts firstLine): 2 of 12 in a trial here.
    await inContainer(`(nc -ll -p ${SERVICE_PORT} -e /bin/sh -c 'read -r _ && exec cat ${BENCH_FILE}' &) >/dev/null 2>&1`);
    const forward = await openForward(work, sshPort, login, SERVICE_PORT);
    closing.push(forward.close);
    const sftp = await SftpBatch.open(work, sshPort, login);
    closing.push(() => sftp.close());
    await ask({ op: 'sftp-open' });
    closing.push(() => void ask({ op: 'sftp-close' }).catch(() => undefined));

    type FilePath = 'direct' | 'sftp' | 'fastGet' | 'forward';
    const local = join(work, 'download.bin');
    /** This process's CPU time per MB: the platform's, as the clients are other processes. */
    const cpuMsPerMB: Record<FilePath, number[]> = { direct: [], sftp: [], fastGet: [], forward: [] };
    const once = async (path: FilePath, bytes: number): Promise<number> => {
      rmSync(local, { force: true });
      const cpu = process.cpuUsage();
      let run: Transfer;
      switch (path) {
        case 'direct':
          run = await ask<Transfer>({ op: 'cat', path: BENCH_FILE });
          break;
        case 'sftp': {
          const ms = await sftp.run(`get ${BENCH_FILE} ${local}`);
          run = { ms, bytes: statSync(local).size };
          break;
        }
        case 'fastGet':
          run = await ask<Transfer>({ op: 'fast-get', remote: BENCH_FILE, local });
          break;
        case 'forward':
          run = await ask<Transfer>({ op: 'read-port', port: forward.local });
          break;
      }
      const used = process.cpuUsage(cpu);
      if (run.bytes !== bytes) throw new Error(`${path}: ${run.bytes} bytes arrived of ${bytes}${path === 'forward' ? `; ssh says ${forward.stderr()}` : ''}`);
      cpuMsPerMB[path].push((used.user + used.system) / 1000 / (bytes / 1e6));
      return bytes / 1e6 / (run.ms / 1000);
    };

    // One run per path warms it up (the helper is copied in on first use) and tells how large a
    // file the slowest one moves in about FILE_TARGET_MS.
    const paths: FilePath[] = ['direct', 'sftp', 'fastGet', 'forward'];
    let slowest = Infinity;
    for (const path of paths) slowest = Math.min(slowest, await once(path, FILE_CALIBRATION_BYTES));
    const fixed = Number(process.env.TIANQI_BENCH_ACCESS_FILE_BYTES);
    const fileBytes = Number.isInteger(fixed) && fixed > 0
      ? fixed
      : Math.min(FILE_MAX_BYTES, Math.max(FILE_CALIBRATION_BYTES, Math.round((slowest * FILE_TARGET_MS) / 1000) * 1_000_000));
    await writeFile(fileBytes);
    for (const path of paths) cpuMsPerMB[path] = [];

    const rates = { sftpDirect: [] as number[], sftp: [] as number[], fastGet: [] as number[], forwardDirect: [] as number[], forward: [] as number[] };
    /** Each run's ratio to the direct run just before it. */
    const ratios = { sftp: [] as number[], fastGet: [] as number[], forward: [] as number[] };
    for (let i = 0; i < FILE_ROUNDS; i++) {
      rates.sftpDirect.push(await once('direct', fileBytes));
      rates.sftp.push(await once('sftp', fileBytes));
      rates.fastGet.push(await once('fastGet', fileBytes));
      rates.forwardDirect.push(await once('direct', fileBytes));
      rates.forward.push(await once('forward', fileBytes));
      ratios.sftp.push(rates.sftp.at(-1)! / rates.sftpDirect.at(-1)!);
      ratios.fastGet.push(rates.fastGet.at(-1)! / rates.sftpDirect.at(-1)!);
      ratios.forward.push(rates.forward.at(-1)! / rates.forwardDirect.at(-1)!);
    }
    const median = (values: number[]) => round(percentile(values, 50));
    return {
      // The file each path moved, in bytes (random, so nothing on the way compresses it).
      filePayloadBytes: fileBytes,
      // OpenSSH `sftp -b -` downloading the file through the jump host to a local file, the
      // transfer only (signed in and ready before the clock starts), MB/s.
      sftpDownloadMBps: median(rates.sftp),
      // `docker exec cat FILE` through dockerode just before it, MB/s.
      sftpDirectMBps: median(rates.sftpDirect),
      // The median of each round's sftp over its direct run (target: 0.7 or more).
      sftpRatio: median(ratios.sftp),
      // ssh2's own client, `sftp.fastGet` with its defaults (64 reads of 32 KiB in flight), through
      // the jump host to a local file, MB/s; and its ratio to the same direct run as sftp's.
      sftpFastGetMBps: median(rates.fastGet),
      sftpFastGetRatio: median(ratios.fastGet),
      // The platform's CPU time per MB downloaded with OpenSSH sftp.
      sftpServerCpuMsPerMB: median(cpuMsPerMB.sftp),
      // A local TCP client (in the child) asking for the file and reading it to its end through
      // `ssh -N -L` to a service in the container (busybox nc running `cat FILE` for each
      // connection), the forwarded connection's set-up included, MB/s.
      forwardMBps: median(rates.forward),
      // `docker exec cat FILE` through dockerode just before it, MB/s.
      forwardDirectMBps: median(rates.forwardDirect),
      // The median of each round's forward over its direct run (target: 0.7 or more).
      forwardRatio: median(ratios.forward),
      // The platform's CPU time per MB forwarded.
      forwardServerCpuMsPerMB: median(cpuMsPerMB.forward),
    };
  } finally {
    for (const close of closing.reverse()) close();
    rmSync(work, { recursive: true, force: true });
  }
}

export async function accessBench(): Promise<Record<string, number>> {
  const image = ensureServiceImage(dockerSocket);
  const docker = new Dockerode({ socketPath: dockerSocket });
  const dataDir = mkdtempSync(join(tmpdir(), 'tianqi-bench-access-'));
  const sshPort = await freePort();
  const config = loadConfig({
    TIANQI_DATA_DIR: dataDir, TIANQI_HTTP_PORT: '0', TIANQI_SSH_PORT: String(sshPort), TIANQI_HOST: '127.0.0.1', TIANQI_LOG_LEVEL: 'warn',
    TIANQI_ADMIN_PASSWORD: 'bench-admin-password', TIANQI_MASTER_KEY: randomBytes(32).toString('base64'), TIANQI_POLL_INTERVAL_MS: '600000',
  });
  // 100 idle sessions of one user into one instance: the jump host's capacity is measured, not its caps.
  for (const cap of ['CONNECTIONS_PER_USER', 'SESSIONS_PER_USER', 'SESSIONS_PER_INSTANCE']) process.env[`TIANQI_SSH_MAX_${cap}`] = '1000';
  const app = new App(config, createLogger('warn'));
  await app.start();
  const url = `http://127.0.0.1:${app.httpPort}`;
  const call = strictApi(`${url}/api/v1`);
  let instanceId: string | null = null;
  let containerId: string | null = null;
  let clients: Awaited<ReturnType<typeof startClients>> | null = null;
  try {
    const admin = (await call<{ token: string }>('POST', '/auth/login', { username: 'admin', password: 'bench-admin-password' })).token;
    const username = 'bencher';
    const password = 'bencher-password-1';
    await call('POST', '/users', { username, password }, admin);
    const token = (await call<{ token: string }>('POST', '/auth/login', { username, password })).token;
    const img = await call<{ id: string }>('POST', '/images', { name: 'busybox', address: image }, admin);
    const spec = await call<{ id: string }>('POST', '/specs', { name: 'cpu', cpuCores: 1, memoryGb: 1 }, admin);
    await call('POST', '/nodes', { name: 'local', publicIp: '127.0.0.1', privateIp: '127.0.0.1', dockerEndpoint: `unix://${dockerSocket}`, cpuCores: 256, memoryGb: 256 }, admin);
    const instanceName = 'access-bench';
    instanceId = (await call<{ id: string }>('POST', '/instances', { name: instanceName, imageId: img.id, specId: spec.id }, token)).id;
    for (const deadline = Date.now() + 60_000; ;) {
      const view = await call<{ status: string; containerId: string | null }>('GET', `/instances/${instanceId}`, undefined, token);
      containerId = view.containerId;
      if (view.status === 'running' && containerId) break;
      if (view.status !== 'creating' || Date.now() > deadline) throw new Error(`the instance is ${view.status}`);
      await delay(50);
    }

    clients = await startClients({ url, token, instanceId, instanceName, containerId, sshPort, username, password, dockerSocket });
    const { ask } = clients;

    // Memory first, while the heap has not yet been grown by the bulk runs. As many sessions
    // opened and closed beforehand bring in ssh2's code, the KDF's and the allocators' working
    // memory at this concurrency, so that the difference is what idle sessions hold.
    const gc = garbageCollector();
    /** Until every session's shell is gone: the container runs its own command (and its `sleep`) only. */
    const quiet = async () => {
      for (const deadline = Date.now() + 60_000; Date.now() < deadline; await delay(250)) {
        const { Processes } = await docker.getContainer(containerId!).top();
        if ((Processes ?? []).filter((p: string[]) => !p.at(-1)?.startsWith('sleep')).length <= 1) break;
      }
      await delay(1_000);
    };
    await ask({ op: 'idle-open', count: IDLE_SESSIONS });
    await ask({ op: 'idle-close' });
    await quiet();
    const before = await memory(gc);
    const openedIdle = await ask<number>({ op: 'idle-open', count: IDLE_SESSIONS });
    const after = await memory(gc);
    const usableIdle = await ask<number>({ op: 'idle-check' });
    await ask({ op: 'idle-close' });
    await quiet();

    await ask({ op: 'open' });
    const echo = await ask<Record<PathName, number[]>>({ op: 'echo' });

    // One small run per path warms it up and tells how large a payload the slowest path manages
    // in about BULK_TARGET_MS; then the same payload for all three, in turns.
    const cpuMsPerMB: Record<PathName, number[]> = { direct: [], web: [], ssh: [] };
    const bulkOnce = async (path: PathName, bytes: number) => {
      const cpu = process.cpuUsage();
      const result = await ask<{ ms: number; bytes: number }>({ op: 'bulk', path, bytes });
      const used = process.cpuUsage(cpu);
      cpuMsPerMB[path].push((used.user + used.system) / 1000 / (result.bytes / 1e6));
      return { mbPerSec: result.bytes / 1e6 / (result.ms / 1000), bytes: result.bytes, ms: result.ms };
    };
    let slowest = Infinity;
    for (const path of PATHS) slowest = Math.min(slowest, (await bulkOnce(path, CALIBRATION_BYTES)).mbPerSec);
    const fixed = Number(process.env.TIANQI_BENCH_ACCESS_BULK_BYTES);
    // base64 and the TTY's CR LF make the output about 1.37 times the input.
    const payload = Number.isInteger(fixed) && fixed > 0
      ? fixed
      : Math.min(BULK_MAX_BYTES, Math.max(CALIBRATION_BYTES, Math.round((slowest * 1e6 * BULK_TARGET_MS) / 1000 / 1.37 / 100_000) * 100_000));
    for (const path of PATHS) cpuMsPerMB[path] = [];
    const rates: Record<PathName, number[]> = { direct: [], web: [], ssh: [] };
    /** Each round's ratio to its own direct run: the machine's load drifts less within a round than across the run. */
    const ratios: Record<'web' | 'ssh', number[]> = { web: [], ssh: [] };
    let outputBytes = 0;
    for (let i = 0; i < BULK_ROUNDS; i++) {
      for (const path of PATHS) {
        const run = await bulkOnce(path, payload);
        rates[path].push(run.mbPerSec);
        outputBytes = run.bytes;
      }
      ratios.web.push(rates.web.at(-1)! / rates.direct.at(-1)!);
      ratios.ssh.push(rates.ssh.at(-1)! / rates.direct.at(-1)!);
    }
    await ask({ op: 'close' });

    const files = await filesAndPorts(ask, { containerId, sshPort, login: `${username}+${instanceName}`, token, call });

    const p50 = (path: PathName) => percentile(echo[path], 50);
    const mbps = (path: PathName) => percentile(rates[path], 50);
    return {
      directEchoP50Ms: round(p50('direct')),
      directEchoP99Ms: round(percentile(echo.direct, 99)),
      webEchoP50Ms: round(p50('web')),
      webEchoP99Ms: round(percentile(echo.web, 99)),
      sshEchoP50Ms: round(p50('ssh')),
      sshEchoP99Ms: round(percentile(echo.ssh, 99)),
      webEchoP50OverDirectMs: round(p50('web') - p50('direct')),
      sshEchoP50OverDirectMs: round(p50('ssh') - p50('direct')),
      keystrokesPerPath: KEYSTROKES,
      bulkPayloadBytes: payload,
      bulkOutputBytes: outputBytes,
      directThroughputMBps: round(mbps('direct')),
      webThroughputMBps: round(mbps('web')),
      sshThroughputMBps: round(mbps('ssh')),
      webThroughputRatio: round(percentile(ratios.web, 50)),
      sshThroughputRatio: round(percentile(ratios.ssh, 50)),
      webServerCpuMsPerMB: round(percentile(cpuMsPerMB.web, 50)),
      sshServerCpuMsPerMB: round(percentile(cpuMsPerMB.ssh, 50)),
      sshIdleSessions: openedIdle,
      sshIdleSessionsUsable: usableIdle,
      sshIdleSessionKiB: round((after.rss - before.rss) / IDLE_SESSIONS / 1024),
      sshIdleSessionHeapKiB: round((after.heap - before.heap) / IDLE_SESSIONS / 1024),
      ...files,
    };
  } finally {
    clients?.child.kill();
    if (instanceId) {
      try {
        const admin = (await call<{ token: string }>('POST', '/auth/login', { username: 'admin', password: 'bench-admin-password' })).token;
        await call('DELETE', `/instances/${instanceId}`, undefined, admin);
        for (const deadline = Date.now() + 30_000; Date.now() < deadline; await delay(100)) {
          if (!containerId || !(await docker.getContainer(containerId).inspect().then(() => true, () => false))) break;
        }
      } catch (err) {
        console.error('could not delete the bench instance', err);
      }
    }
    await app.stop();
    // Whatever the platform did not remove: this run's container and its volumes.
    for (const c of await docker.listContainers({ all: true, filters: { label: [`tianqi.instance=${instanceId ?? 'none'}`] } })) {
      await docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined);
    }
    for (const v of (await docker.listVolumes({ filters: { label: ['managed-by=tianqi'] } })).Volumes ?? []) {
      if (instanceId && v.Name.includes(instanceId)) await docker.getVolume(v.Name).remove().catch(() => undefined);
    }
    rmSync(dataDir, { recursive: true, force: true });
  }
}

if (process.argv[2] === CHILD_FLAG) void clientProcess();
