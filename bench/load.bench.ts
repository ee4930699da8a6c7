// The load workload (issue 8, suite 4), shared by `npm run bench -- load` and test/suites/load.test.ts.
//
// The server runs in a child process (this file with `--serve`), so that its RSS is the server's
// alone, not the test runner's plus that of 200 SSH and socket.io clients. The child is the App
// that src/main.ts starts, plus one probe plugin that, asked over the IPC channel, runs
// `reconcileAll(ctx)` (what the reconciler plugin runs every TIANQI_POLL_INTERVAL_MS) or reports
// the process's memory after a full GC.
//
// What is real and what is not:
// * 50 nodes, all registrations of the one test engine: even ones over its unix socket, odd ones
//   over mutual TLS (TIANQI_TEST_DOCKER_TLS_*; without those, all over the socket).
// * 1,000 instance records, every one created through POST /api/v1/instances with a real
//   reservation on its node's stream. A few (`running`) are provisioned: real running containers,
//   where the sessions go. The rest are created after a restart with
//   TIANQI_DISABLED_PLUGINS=provisioner, so they stay `creating`, without a container: 1,000
//   containers are too much for a 2-core CI machine. The list and detail figures are honest for
//   them; the reconcile cycle skips `creating` instances, so it covers every node's connection
//   check and container list but container state and stats only for the running ones.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Dockerode from 'dockerode';
import { io } from 'socket.io-client';
import ssh2, { type ClientChannel } from 'ssh2';
import { App } from '../src/app.ts';
import { loadConfig } from '../src/config.ts';
import { createLogger } from '../src/logger.ts';
import { reconcileAll } from '../src/plugins/instances/reconciler.plugin.ts';
import type { Plugin, PluginContext } from '../src/plugins/plugin-host.ts';
import { ensureServiceImage } from '../test/support/test-image.ts';
import { percentile } from './stats.ts';
import { freePort } from '../test/support/ports.ts';

const SELF = fileURLToPath(import.meta.url);
const ROOT = join(SELF, '../..');
const ADMIN_PASSWORD = 'load-admin-password';
const USER_PASSWORD = 'load-user-password';
/** Owns the running instances and opens every session. */
const SESSION_USER = 'load00';
const round = (n: number) => Math.round(n * 100) / 100;
const MiB = 1024 * 1024;

export interface EngineAccess {
  readonly socket: string;
  readonly tls?: { host: string; port: number; ca: string; cert: string; key: string };
}

export interface LoadOptions {
  readonly nodes: number;
  readonly records: number;
  /** How many of the records are provisioned: real running containers, for the sessions. */
  readonly running: number;
  readonly users: number;
  readonly webSessions: number;
  readonly sshSessions: number;
}

export const DEFAULT_LOAD: LoadOptions = { nodes: 50, records: 1_000, running: 4, users: 20, webSessions: 100, sshSessions: 100 };

/** The test engine from TIANQI_TEST_DOCKER_SOCKET and TIANQI_TEST_DOCKER_TLS_* (TLS when all are set). */
export function engineFromEnv(env: NodeJS.ProcessEnv = process.env): EngineAccess {
  const socket = env.TIANQI_TEST_DOCKER_SOCKET ?? '/var/run/docker.sock';
  const { TIANQI_TEST_DOCKER_TLS_HOST: host, TIANQI_TEST_DOCKER_TLS_CA: ca, TIANQI_TEST_DOCKER_TLS_CERT: cert, TIANQI_TEST_DOCKER_TLS_KEY: key } = env;
  if (!host || !ca || !cert || !key) return { socket };
  return { socket, tls: { host, port: Number(env.TIANQI_TEST_DOCKER_TLS_PORT || 2376), ca: readFileSync(ca, 'utf8'), cert: readFileSync(cert, 'utf8'), key: readFileSync(key, 'utf8') } };
}

// ---------------------------------------------------------------------------------------------
// The server: `node --expose-gc --import tsx bench/load.bench.ts --serve`, settings from TIANQI_*.

interface ProbeRequest {
  readonly id: number;
  readonly kind: 'reconcile' | 'memory';
}

export interface Memory {
  readonly rss: number;
  readonly heapUsed: number;
  /** Buffers and other memory outside the V8 heap that JS objects hold. */
  readonly external: number;
}

async function serve(): Promise<void> {
  const config = loadConfig(process.env);
  let ctx: PluginContext | undefined;
  const probe: Plugin = {
    name: 'load-probe',
    async start(context) {
      ctx = context;
      return { async stop() {} };
    },
  };
  const app = new App(config, createLogger(config.logLevel), { plugins: [probe] });
  process.on('message', (m: ProbeRequest) => {
    void (async () => {
      try {
        if (m.kind === 'reconcile') {
          process.send!({ id: m.id, result: await reconcileAll(ctx!) });
        } else {
          // Twice: the first may leave garbage of finalizers for the second.
          globalThis.gc?.();
          globalThis.gc?.();
          const { rss, heapUsed, external } = process.memoryUsage();
          process.send!({ id: m.id, result: { rss, heapUsed, external } satisfies Memory });
        }
      } catch (err) {
        process.send!({ id: m.id, error: String(err) });
      }
    })();
  });
  let stopping = false;
  process.on('SIGTERM', () => {
    if (stopping) return;
    stopping = true;
    void app.stop().finally(() => process.exit(0));
  });
  await app.start();
  process.send!({ ready: true, httpPort: app.httpPort });
}

if (process.argv[2] === '--serve' && process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await serve();

// ---------------------------------------------------------------------------------------------
// The clients

/** The server in its own process, with the probe on its IPC channel. */
class ServerProcess {
  private next = 0;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  /** The last lines it wrote (warnings and errors), for failure messages. */
  log = '';
  httpPort = 0;

  private constructor(private readonly child: ChildProcess) {
    const keep = (chunk: Buffer) => (this.log = (this.log + chunk.toString()).slice(-8_000));
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    child.on('message', (m: { id?: number; result?: unknown; error?: string }) => {
      if (m.id === undefined) return;
      const waiter = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      if (m.error) waiter?.reject(new Error(m.error));
      else waiter?.resolve(m.result);
    });
  }

  static async start(env: Record<string, string>): Promise<ServerProcess> {
    const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', SELF, '--serve'], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    const server = new ServerProcess(child);
    server.httpPort = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`the server did not start within 60 s:\n${server.log}`));
      }, 60_000);
      child.on('message', (m: { ready?: boolean; httpPort?: number }) => {
        if (!m.ready) return;
        clearTimeout(timer);
        resolve(m.httpPort!);
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`the server exited with ${code}:\n${server.log}`));
      });
    });
    return server;
  }

  ask<T>(kind: ProbeRequest['kind']): Promise<T> {
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.send({ id, kind } satisfies ProbeRequest);
    });
  }

  /** SIGTERM (a clean stop closes and records every session), SIGKILL after `graceMs`. */
  async stop(graceMs = 15_000): Promise<void> {
    const child = this.child;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  }
}

/** HTTP over keep-alive connections, timed to the last byte of the body. */
function httpClient(port: number) {
  const agent = new Agent({ keepAlive: true, maxSockets: 16 });
  const call = <T = unknown>(method: string, path: string, token?: string, body?: unknown) =>
    new Promise<{ status: number; body: T; ms: number }>((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const started = performance.now();
      const req = request({ host: '127.0.0.1', port, method, path, agent, headers: {
        ...(payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c)).on('end', () => {
          const ms = performance.now() - started;
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode!, body: (text ? JSON.parse(text) : undefined) as T, ms });
        });
      });
      req.on('error', reject);
      req.end(payload);
    });
  /** `call`, with anything but `expected` thrown with the answer in it. */
  const must = async <T = unknown>(expected: number, method: string, path: string, token?: string, body?: unknown) => {
    const r = await call<T>(method, path, token, body);
    if (r.status !== expected) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body).slice(0, 500)}`);
    return r;
  };
  return { call, must, close: () => agent.destroy() };
}

/** Runs `work` over `items`, at most `limit` at a time. */
async function pool<T, R>(items: readonly T[], limit: number, work: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await work(items[i]!, i);
    }
  }));
  return results;
}

async function until(check: () => boolean, ms: number, what: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const ESC = String.fromCharCode(0x1b);
/** busybox's prompt, then the terminal queries and redraws of its line editor (see test/api/terminal.test.ts). */
const SHELL_PROMPT = new RegExp(`# (?:${ESC}\\[[0-9;]*[A-Za-z]|\r)*$`);
/** The TTY echoes `echo $((6*7))`; the answer is on a line of its own. */
const ANSWER = '\r\n42\r\n';
const OPEN_TIMEOUT_MS = 30_000;

/** A shell reached one way or another: what it printed, how to type into it, how to hang up. */
interface Session {
  output: string;
  ended: boolean;
  type(text: string): void;
  close(): void;
}

export interface SessionFigures {
  /** Sessions that, all open at once and typing at once, answered `echo $((6*7))` with 42. */
  usable: number;
  openP50Ms: number;
  openP99Ms: number;
  /** RSS delta after a full GC, per session. */
  perSessionKiB: number;
  /** V8 heap + external memory delta after a full GC, per session: steadier than RSS. */
  perSessionHeapKiB: number;
}

interface Instance {
  id: string;
  name: string;
  nodeId: string;
  ownerId: string;
  ownerName: string;
  status: string;
  containerId: string | null;
}

interface NodeSummary {
  id: string;
  dockerStatus: string;
  dockerEndpoint: string;
  reservations: { instanceId: string }[];
}

/**
 * One load run: `LoadRun.start` builds the platform state (nodes, records, running instances);
 * the methods measure; `close` removes what it made (sessions, server, containers, volumes, data).
 */
export class LoadRun {
  private readonly sessions: Session[] = [];
  private readonly runningIds: string[] = [];
  private privateKey = '';
  private adminToken = '';
  /** username → token */
  private readonly tokens = new Map<string, string>();
  private server!: ServerProcess;
  private http!: ReturnType<typeof httpClient>;
  /** Every record, as the admin's list shows it. */
  records: Instance[] = [];
  nodeIds: string[] = [];
  /** Bulk creates through the API per second, 8 clients at a time. */
  createPerSec = 0;

  private constructor(
    readonly options: LoadOptions,
    readonly engine: EngineAccess,
    private readonly dataDir: string,
    private readonly sshPort: number,
    private readonly env: Record<string, string>,
  ) {}

  get running(): readonly string[] {
    return this.runningIds;
  }

  /** The server's recent warnings and errors. */
  get serverLog(): string {
    return this.server.log;
  }

  static async start(engine: EngineAccess, options: LoadOptions = DEFAULT_LOAD): Promise<LoadRun> {
    const image = ensureServiceImage(engine.socket);
    const dataDir = mkdtempSync(join(tmpdir(), 'tianqi-load-'));
    const env = {
      TIANQI_DATA_DIR: dataDir, TIANQI_HTTP_PORT: '0', TIANQI_SSH_PORT: String(await freePort()), TIANQI_HOST: '127.0.0.1',
      TIANQI_ADMIN_PASSWORD: ADMIN_PASSWORD, TIANQI_MASTER_KEY: randomBytes(32).toString('base64'), TIANQI_LOG_LEVEL: 'warn',
      // One cycle at start, then none: the measured cycles are the probe's, not overlapped by the plugin's.
      TIANQI_POLL_INTERVAL_MS: '3600000',
      // 100 sessions of a handful of users: the platform's capacity is measured, not the per-user cap.
      TIANQI_SSH_MAX_SESSIONS_PER_USER: '1000',
      TIANQI_SSH_MAX_CONNECTIONS_PER_USER: '1000',
      TIANQI_SSH_MAX_SESSIONS_PER_INSTANCE: '1000',
    };
    const run = new LoadRun(options, engine, dataDir, Number(env.TIANQI_SSH_PORT), env);
    try {
      await run.populate(image);
    } catch (err) {
      await run.close();
      throw err;
    }
    return run;
  }

  private async populate(image: string): Promise<void> {
    const { options, engine } = this;
    this.server = await ServerProcess.start(this.env);
    this.http = httpClient(this.server.httpPort);
    let { must } = this.http;
    const login = async (username: string, password: string) =>
      (await must<{ token: string }>(200, 'POST', '/api/v1/auth/login', undefined, { username, password })).body.token;
    const admin = (this.adminToken = await login('admin', ADMIN_PASSWORD));

    const usernames = Array.from({ length: options.users }, (_, i) => `load${String(i).padStart(2, '0')}`);
    await pool(usernames, 4, async (username) => {
      await must(201, 'POST', '/api/v1/users', admin, { username, password: USER_PASSWORD });
      this.tokens.set(username, await login(username, USER_PASSWORD));
    });
    const img = await must<{ id: string }>(201, 'POST', '/api/v1/images', admin, { name: 'busybox', address: image });
    const spec = await must<{ id: string }>(201, 'POST', '/api/v1/specs', admin, { name: 'cpu-1c', cpuCores: 1, memoryGb: 1, pricePerHour: 0.5 });

    // Room for twice the records each node gets, so that capacity is never what refuses a create.
    const room = 2 * Math.ceil(options.records / options.nodes);
    this.nodeIds = await pool(Array.from({ length: options.nodes }, (_, i) => i), 4, async (i) => {
      const connection = engine.tls && i % 2 === 1
        ? { dockerEndpoint: `tcp://${engine.tls.host}:${engine.tls.port}`, dockerTls: true, tlsCa: engine.tls.ca, tlsCert: engine.tls.cert, tlsKey: engine.tls.key }
        : { dockerEndpoint: `unix://${engine.socket}` };
      const node = await must<{ id: string; dockerStatus: string; dockerError: string | null }>(201, 'POST', '/api/v1/nodes', admin, {
        name: `load-node-${String(i).padStart(2, '0')}`, publicIp: '127.0.0.1', privateIp: '127.0.0.1', cpuCores: room, memoryGb: room, ...connection,
      });
      if (node.body.dockerStatus !== 'connected') throw new Error(`node ${i} is ${node.body.dockerStatus}: ${node.body.dockerError}`);
      return node.body.id;
    });

    // The running instances, provisioned for real on the first two nodes (the socket and TLS).
    const ownerToken = this.tokens.get(SESSION_USER)!;
    const pair = ssh2.utils.generateKeyPairSync('ed25519');
    this.privateKey = pair.private;
    await must(201, 'POST', '/api/v1/users/me/ssh-keys', ownerToken, { name: 'load', publicKey: pair.public });
    for (let i = 0; i < options.running; i++) {
      const created = await must<Instance>(201, 'POST', '/api/v1/instances', ownerToken, {
        name: `live-${i}`, imageId: img.body.id, specId: spec.body.id, nodeId: this.nodeIds[i % Math.min(2, this.nodeIds.length)],
      });
      this.runningIds.push(created.body.id);
    }
    const deadline = Date.now() + 60_000;
    for (const id of this.runningIds) {
      for (;;) {
        const r = await must<Instance>(200, 'GET', `/api/v1/instances/${id}`, ownerToken);
        if (r.body.status === 'running' && r.body.containerId) break;
        if (r.body.status !== 'creating' || Date.now() > deadline) throw new Error(`instance ${id} did not come up: ${JSON.stringify(r.body)}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }

    // The bulk: the same server and data, restarted without the provisioner: these stay `creating`.
    this.http.close();
    await this.server.stop();
    this.server = await ServerProcess.start({ ...this.env, TIANQI_DISABLED_PLUGINS: 'provisioner' });
    this.http = httpClient(this.server.httpPort);
    ({ must } = this.http);
    const bulk = Array.from({ length: options.records - options.running }, (_, i) => i);
    const started = performance.now();
    await pool(bulk, 8, async (i) => {
      const username = usernames[i % usernames.length]!;
      await must(201, 'POST', '/api/v1/instances', this.tokens.get(username), {
        name: `rec-${i}`, imageId: img.body.id, specId: spec.body.id, nodeId: this.nodeIds[i % this.nodeIds.length],
      });
    });
    this.createPerSec = round(bulk.length / ((performance.now() - started) / 1000));
    this.records = (await must<Instance[]>(200, 'GET', '/api/v1/instances', admin)).body;
  }

  /** The nodes as the admin sees them. */
  async nodes(): Promise<NodeSummary[]> {
    return (await this.http.must<NodeSummary[]>(200, 'GET', '/api/v1/nodes', this.adminToken)).body;
  }

  /**
   * p50 and p99 of sequential GETs after a warm-up: the admin's list (every record), users'
   * lists (their own), details (every record, by its owner and by the admin in turn).
   */
  async latencies(rounds = { list: 200, userList: 500, detail: 1_000 }) {
    const { must } = this.http;
    const admin = this.adminToken;
    for (let i = 0; i < 20; i++) await must(200, 'GET', '/api/v1/instances', admin);
    const list: number[] = [];
    for (let i = 0; i < rounds.list; i++) {
      const r = await must<Instance[]>(200, 'GET', '/api/v1/instances', admin);
      if (r.body.length !== this.records.length) throw new Error(`the admin's list has ${r.body.length} instances, not ${this.records.length}`);
      list.push(r.ms);
    }
    const users = [...this.tokens.entries()];
    const userList: number[] = [];
    let ownListSize = 0;
    for (let i = 0; i < rounds.userList; i++) {
      const [username, token] = users[i % users.length]!;
      const r = await must<Instance[]>(200, 'GET', '/api/v1/instances', token);
      if (r.body.some((x) => x.ownerName !== username)) throw new Error(`${username}'s list shows someone else's instance`);
      ownListSize = Math.max(ownListSize, r.body.length);
      userList.push(r.ms);
    }
    const detail: number[] = [];
    for (let i = 0; i < rounds.detail; i++) {
      const record = this.records[i % this.records.length]!;
      const token = i % 2 === 0 ? this.tokens.get(record.ownerName)! : admin;
      const r = await must<Instance>(200, 'GET', `/api/v1/instances/${record.id}`, token);
      if (r.body.id !== record.id) throw new Error(`asked for ${record.id}, got ${r.body.id}`);
      detail.push(r.ms);
    }
    return {
      listP50Ms: round(percentile(list, 50)), listP99Ms: round(percentile(list, 99)),
      userListP50Ms: round(percentile(userList, 50)), userListP99Ms: round(percentile(userList, 99)), userListSize: ownListSize,
      detailP50Ms: round(percentile(detail, 50)), detailP99Ms: round(percentile(detail, 99)),
    };
  }

  /** `reconcileAll` in the server, `cycles` times in a row: the node count, the median and the slowest. */
  async reconcileCycles(cycles = 3) {
    const times: number[] = [];
    let nodes = 0;
    for (let i = 0; i < cycles; i++) {
      const r = await this.server.ask<{ nodes: number; ms: number }>('reconcile');
      nodes = r.nodes;
      times.push(r.ms);
    }
    return { nodes, cycleMs: round(percentile(times, 50)), cycleMaxMs: round(Math.max(...times)) };
  }

  private dockerFor(nodeIndex: number): Dockerode {
    const { engine } = this;
    return engine.tls && nodeIndex % 2 === 1
      ? new Dockerode({ host: engine.tls.host, port: engine.tls.port, protocol: 'https', ca: engine.tls.ca, cert: engine.tls.cert, key: engine.tls.key })
      : new Dockerode({ socketPath: engine.socket });
  }

  /**
   * The engine work of one reconcile cycle, straight through dockerode at the reconciler's
   * concurrency (8 nodes, 8 stats): per node a ping, `info` and the list of managed containers;
   * two stats samples per running instance of the node.
   */
  async rawEngineCycleMs(): Promise<number> {
    const runningOn = new Map<string, Set<string>>();
    for (const r of this.records.filter((x) => this.runningIds.includes(x.id))) runningOn.set(r.nodeId, (runningOn.get(r.nodeId) ?? new Set()).add(r.id));
    const started = performance.now();
    await pool(this.nodeIds, 8, async (nodeId, i) => {
      const docker = this.dockerFor(i);
      await docker.ping();
      await docker.info();
      const containers = await docker.listContainers({ all: true, filters: { label: ['managed-by=tianqi'] } });
      const mine = containers.filter((c) => runningOn.get(nodeId)?.has(c.Labels['tianqi.instance'] ?? ''));
      await pool(mine, 8, async (c) => {
        const stream = (await docker.getContainer(c.Id).stats({ stream: true })) as unknown as Duplex;
        await new Promise<void>((resolve) => {
          let samples = 0;
          stream.on('data', () => {
            if (++samples < 2) return;
            stream.destroy();
            resolve();
          });
          stream.on('close', () => resolve());
        });
      });
    });
    return round(performance.now() - started);
  }

  /**
   * Shells straight through dockerode, `count` of them 20 at a time, for the open figures'
   * baseline: one TTY exec each, timed to its prompt, then `exit`.
   */
  async rawExecOpenP99Ms(count: number): Promise<number> {
    const containers = this.records.filter((x) => this.runningIds.includes(x.id));
    const times: number[] = [];
    const streams: Duplex[] = [];
    await pool(Array.from({ length: count }, (_, i) => containers[i % containers.length]!), 20, async (instance) => {
      const docker = this.dockerFor(this.nodeIds.indexOf(instance.nodeId));
      const started = performance.now();
      const exec = await docker.getContainer(instance.containerId!).exec({
        Cmd: ['/bin/sh'], Tty: true, AttachStdin: true, AttachStdout: true, AttachStderr: true, Env: ['TERM=xterm-256color'],
      });
      const stream = (await exec.start({ hijack: true, stdin: true, Tty: true })) as Duplex;
      streams.push(stream);
      let output = '';
      stream.on('data', (d: Buffer) => (output += d.toString()));
      await until(() => SHELL_PROMPT.test(output.slice(-200)), OPEN_TIMEOUT_MS, () => `a raw exec prompt: ${JSON.stringify(output)}`);
      times.push(performance.now() - started);
    });
    for (const stream of streams) stream.end('exit\r');
    return round(percentile(times, 99));
  }

  /** The server's memory after a full GC. */
  memory(): Promise<Memory> {
    return this.server.ask<Memory>('memory');
  }

  private async openWeb(instanceId: string): Promise<Session> {
    const socket = io(`http://127.0.0.1:${this.server.httpPort}/terminal`, {
      auth: { token: this.tokens.get(SESSION_USER) }, transports: ['websocket'], reconnection: false, forceNew: true,
    });
    const session: Session = {
      output: '', ended: false,
      type: (text) => socket.emit('data', text),
      close: () => socket.disconnect(),
    };
    this.sessions.push(session);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('connect_error', (err) => reject(err));
    });
    // A plain client, as API.md has it: no acknowledgements, paced by the socket.
    socket.on('data', (text: string) => (session.output += text));
    socket.on('error', (e: { code: string; message: string }) => (session.output += `\n[error ${e.code}: ${e.message}]`));
    socket.on('disconnect', () => (session.ended = true));
    socket.emit('open', { instanceId, cols: 80, rows: 24 });
    await until(() => SHELL_PROMPT.test(session.output.slice(-200)) || session.ended, OPEN_TIMEOUT_MS, () => `a web terminal's prompt: ${JSON.stringify(session.output.slice(-300))}`);
    if (session.ended) throw new Error(`the web terminal closed: ${session.output}`);
    return session;
  }

  private async openSsh(instanceName: string): Promise<Session> {
    const client = new ssh2.Client();
    const session: Session = { output: '', ended: false, type: () => undefined, close: () => client.end() };
    this.sessions.push(session);
    await new Promise<void>((resolve, reject) => {
      client.once('ready', () => resolve()).once('error', reject);
      client.connect({ host: '127.0.0.1', port: this.sshPort, username: `${SESSION_USER}+${instanceName}`, privateKey: this.privateKey, readyTimeout: OPEN_TIMEOUT_MS });
    });
    client.on('error', () => (session.ended = true));
    const channel = await new Promise<ClientChannel>((resolve, reject) =>
      client.shell({ term: 'xterm', cols: 80, rows: 24 }, (err, ch) => (err ? reject(err) : resolve(ch))));
    session.type = (text) => channel.write(text);
    channel.on('data', (d: Buffer) => (session.output += d.toString()));
    channel.stderr.on('data', (d: Buffer) => (session.output += d.toString()));
    channel.on('close', () => {
      session.ended = true;
      client.end();
    });
    await until(() => SHELL_PROMPT.test(session.output.slice(-200)) || session.ended, OPEN_TIMEOUT_MS, () => `an SSH shell's prompt: ${JSON.stringify(session.output.slice(-300))}`);
    if (session.ended) throw new Error(`the SSH session closed: ${session.output}`);
    return session;
  }

  /** Types `echo $((6*7))` in every session at once; how many answer 42 within 30 s. */
  private async usable(sessions: Session[]): Promise<number> {
    const from = sessions.map((s) => s.output.length);
    for (const s of sessions) s.type('echo $((6*7))\r');
    const answered = () => sessions.filter((s, i) => s.output.slice(from[i]).includes(ANSWER)).length;
    const deadline = Date.now() + 30_000;
    while (answered() < sessions.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    return answered();
  }

  private runningName(i: number): string {
    return `live-${i % this.runningIds.length}`;
  }

  /** One session of each kind, used and closed: their code paths are loaded before a baseline. */
  async warmUp(): Promise<void> {
    for (const session of [await this.openWeb(this.runningIds[0]!), await this.openSsh(this.runningName(0))]) {
      if ((await this.usable([session])) !== 1) throw new Error(`a warm-up session is not usable: ${JSON.stringify(session.output.slice(-300))}`);
      session.close();
      this.sessions.splice(this.sessions.indexOf(session), 1);
    }
  }

  /**
   * Opens `count` sessions of a kind (20 at a time) over the running instances and keeps them
   * open; then all of them type at once. Memory is the server's, after a full GC, before and after.
   */
  async sessionsOf(kind: 'web' | 'ssh', count: number): Promise<SessionFigures> {
    const before = await this.memory();
    const opens: number[] = [];
    const opened = await pool(Array.from({ length: count }, (_, i) => i), 20, async (i) => {
      const started = performance.now();
      const session = kind === 'web' ? await this.openWeb(this.runningIds[i % this.runningIds.length]!) : await this.openSsh(this.runningName(i));
      opens.push(performance.now() - started);
      return session;
    });
    const usable = await this.usable(opened);
    const after = await this.memory();
    const kib = (bytes: number) => round(bytes / count / 1024);
    return {
      usable,
      openP50Ms: round(percentile(opens, 50)),
      openP99Ms: round(percentile(opens, 99)),
      perSessionKiB: kib(after.rss - before.rss),
      perSessionHeapKiB: kib(after.heapUsed + after.external - before.heapUsed - before.external),
    };
  }

  /**
   * Hangs up every open session at once, then asks for an instance's details, one request after
   * another, for `forMs`: the slowest answer (the server is busy ending sessions meanwhile).
   */
  async hangUpAll(forMs = 3_000): Promise<{ hungUp: number; slowestAnswerMs: number }> {
    const sessions = this.sessions.splice(0);
    for (const s of sessions) s.close();
    const times: number[] = [];
    const started = performance.now();
    while (performance.now() - started < forMs) {
      times.push((await this.http.must(200, 'GET', `/api/v1/instances/${this.runningIds[0]}`, this.adminToken)).ms);
    }
    return { hungUp: sessions.length, slowestAnswerMs: round(Math.max(...times)) };
  }

  /** Sessions, the server, the containers and volumes of the running instances, the data. */
  async close(): Promise<void> {
    for (const s of this.sessions.splice(0)) s.close();
    this.http?.close();
    await this.server?.stop();
    const docker = new Dockerode({ socketPath: this.engine.socket });
    for (const id of this.runningIds) {
      for (const c of await docker.listContainers({ all: true, filters: { label: [`tianqi.instance=${id}`] } }).catch(() => [])) {
        await docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined);
      }
    }
    const volumes = (await docker.listVolumes({ filters: { label: ['managed-by=tianqi'] } }).catch(() => null))?.Volumes ?? [];
    for (const v of volumes) {
      if (this.runningIds.some((id) => v.Name.includes(id))) await docker.getVolume(v.Name).remove().catch(() => undefined);
    }
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

export async function loadBench(): Promise<Record<string, number>> {
  const engine = engineFromEnv();
  const run = await LoadRun.start(engine);
  try {
    const loaded = await run.memory();
    const latency = await run.latencies();
    const reconcile = await run.reconcileCycles();
    const rawCycle = await run.rawEngineCycleMs();
    const rawExec = await run.rawExecOpenP99Ms(run.options.webSessions);
    await run.warmUp();
    const web = await run.sessionsOf('web', run.options.webSessions);
    const ssh = await run.sessionsOf('ssh', run.options.sshSessions);
    const hangUp = await run.hangUpAll();
    const after = await run.memory();
    return {
      loadNodes: reconcile.nodes,
      loadTlsNodes: engine.tls ? Math.floor(run.options.nodes / 2) : 0,
      loadRecords: run.records.length,
      loadRunningInstances: run.running.length,
      loadCreatePerSec: run.createPerSec,
      loadListP50Ms: latency.listP50Ms,
      loadListP99Ms: latency.listP99Ms,
      loadUserListP99Ms: latency.userListP99Ms,
      loadUserListSize: latency.userListSize,
      loadDetailP50Ms: latency.detailP50Ms,
      loadDetailP99Ms: latency.detailP99Ms,
      reconcileCycleMs: reconcile.cycleMs,
      reconcileCycleMaxMs: reconcile.cycleMaxMs,
      rawEngineCycleMs: rawCycle,
      serverRssMiB: round(loaded.rss / MiB),
      serverHeapMiB: round(loaded.heapUsed / MiB),
      webSessionsUsable: web.usable,
      webSessionOpenP50Ms: web.openP50Ms,
      webSessionOpenP99Ms: web.openP99Ms,
      rawExecOpenP99Ms: rawExec,
      webSessionKiB: web.perSessionKiB,
      webSessionHeapKiB: web.perSessionHeapKiB,
      sshSessionsUsable: ssh.usable,
      sshSessionOpenP50Ms: ssh.openP50Ms,
      sshSessionOpenP99Ms: ssh.openP99Ms,
      sshSessionKiB: ssh.perSessionKiB,
      sshSessionHeapKiB: ssh.perSessionHeapKiB,
      hangUpSlowestAnswerMs: hangUp.slowestAnswerMs,
      serverRssAfterSessionsMiB: round(after.rss / MiB),
      serverHeapAfterSessionsMiB: round(after.heapUsed / MiB),
    };
  } finally {
    await run.close();
  }
}
