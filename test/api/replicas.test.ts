import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { openMongoLeaseStore } from '../../src/adapters/leases/mongo.lease-store.ts';
import { App } from '../../src/app.ts';
import { loadConfig } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { PROJECTIONS_LEASE } from '../../src/projections/leased-projection-runner.ts';
import { ForeignReadModelsError, LOG_IDENTITY } from '../../src/projections/log-identity.ts';
import { ADMIN_PASSWORD, startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, runningInstance, setUpLab, waitFor } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';

const mongoUrl = process.env.TIANQI_MONGO_URL;
const socket = process.env.TIANQI_TEST_DOCKER_SOCKET;
const SINGLETONS = ['plugin:webhooks', 'plugin:provisioner', 'plugin:reconciler', 'plugin:scheduler', 'plugin:idle-stop', PROJECTIONS_LEASE];
const TTL_MS = 1_500;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A real HTTP receiver that acknowledges every POST and keeps the event ids in arrival order. */
async function startReceiver() {
  const received: string[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push((JSON.parse(Buffer.concat(chunks).toString('utf8')) as { data: { userId: string } }).data.userId);
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    received,
    times: (userId: string) => received.filter((id) => id === userId).length,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/** Runs `npm run rebuild` (its script) with `env`; resolves with its exit code and output. */
function rebuildCli(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/rebuild.ts'], {
    cwd: join(import.meta.dirname, '../..'),
    env: { PATH: process.env.PATH, HOME: process.env.HOME, TIANQI_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, output })));
}

/** The time of the first log line of `app` with `msg` (and `plugin`, when given). */
function loggedAt(t: TestApp, msg: string, plugin?: string): number | undefined {
  for (const line of t.logs) {
    if (!line.startsWith('{')) continue;
    const entry = JSON.parse(line) as { msg: string; plugin?: string; time: string };
    if (entry.msg === msg && (plugin === undefined || entry.plugin === plugin)) return Date.parse(entry.time);
  }
  return undefined;
}

describeWithService('MongoDB', Boolean(mongoUrl), 'set TIANQI_MONGO_URL (e.g. mongodb://127.0.0.1:27017/)', 'replicas over one MongoDB and one event log', () => {
  const databases: string[] = [];
  const dirs: string[] = [];
  const apps: TestApp[] = [];

  /** Settings of one lab (its own database, data dir and master key), with short leases. */
  const lab = () => {
    const database = `tianqi_test_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    databases.push(database);
    const url = new URL(mongoUrl!);
    url.pathname = `/${database}`;
    const dataDir = mkdtempSync(join(tmpdir(), 'tianqi-replicas-'));
    dirs.push(dataDir);
    const env = {
      TIANQI_MONGO_URL: url.toString(),
      TIANQI_MASTER_KEY: randomBytes(32).toString('base64'),
      TIANQI_LEASE_TTL_MS: String(TTL_MS),
      TIANQI_LEASE_RENEW_MS: '200',
    };
    return { database, dataDir, env };
  };
  /** A replica of `l`: the same event log (SQLite file in the shared data dir) and the same database. */
  const replica = async (l: ReturnType<typeof lab>, options: { clock?: () => number; env?: Record<string, string> } = {}) => {
    const t = await startTestApp({ ...l.env, ...options.env }, { dataDir: l.dataDir, ...(options.clock ? { clock: options.clock } : {}) });
    apps.push(t);
    return t;
  };
  const holders = async (t: TestApp) => Promise.all(SINGLETONS.map(async (name) => (await t.app.leases.holderOf(name))?.holder));
  /** Two replicas of a fresh lab, an admin token and a webhook on UserRegistered to `url`. */
  const twoReplicasWithHook = async (url: string) => {
    const l = lab();
    const a = await replica(l);
    const b = await replica(l);
    const admin = await a.login('admin', ADMIN_PASSWORD);
    const hook = await b.api('POST', '/api/v1/webhooks', { token: admin, body: { url, events: ['UserRegistered'], secret: 'whsec-0123456789-abcdefghij' } });
    expect(hook.status).toBe(201);
    return { a, b, admin };
  };
  const createUser = async (t: TestApp, admin: string, username: string) => {
    const r = await t.api<{ id: string }>('POST', '/api/v1/users', { token: admin, body: { username, password: `${username}-password` } });
    expect(r.status).toBe(201);
    return r.body.id;
  };

  beforeAll(() => {
    vi.stubEnv('TIANQI_WEBHOOK_RETRY_BASE_MS', '50');
  });
  afterAll(async () => {
    vi.unstubAllEnvs();
    for (const t of apps) await t.stop({ keepData: true }).catch(() => undefined);
    const raw = await MongoClient.connect(mongoUrl!);
    for (const database of databases) await raw.db(database).dropDatabase();
    await raw.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('a sign-out on one replica ends the token on the other within a second (退出登录, state in the log)', async () => {
    const l = lab();
    const a = await replica(l);
    const b = await replica(l);
    const admin = await a.login('admin', ADMIN_PASSWORD);
    await createUser(a, admin, 'roamer');
    const token = await a.login('roamer', 'roamer-password');
    expect((await a.api('GET', '/api/v1/auth/me', { token })).status).toBe(200);
    const signedOut = Date.now();
    expect((await b.api('POST', '/api/v1/auth/logout', { token })).status).toBe(204);
    await waitFor(() => a.api('GET', '/api/v1/auth/me', { token }).then((r) => r.status), (status) => status === 401, 1_000);
    expect(Date.now() - signedOut).toBeLessThan(1_000);
    expect((await b.api('GET', '/api/v1/auth/me', { token })).status).toBe(401);
  });

  it('runs the projections and the singleton plugins in one replica; both serve reads and writes at once', async () => {
    const l = lab();
    const a = await replica(l);
    const b = await replica(l);
    expect([a.app.runner.leading, b.app.runner.leading]).toEqual([true, false]);
    expect(await holders(b)).toEqual(SINGLETONS.map(() => a.app.replicaId));

    // The empty database adopted the new log.
    const raw = await MongoClient.connect(mongoUrl!);
    try {
      const [first] = await a.app.eventStore.readAll({ limit: 1 });
      expect(await raw.db(l.database).collection(`rm_${LOG_IDENTITY}`).findOne({})).toMatchObject({ firstEventId: first!.id });
    } finally {
      await raw.close();
    }

    // Read-your-writes on the replica that does not project: it waits for the other's checkpoints.
    const admin = await b.login('admin', ADMIN_PASSWORD);
    for (const [writer, reader] of [[b, b], [b, a], [a, b]] as const) {
      const id = await createUser(writer, admin, `u${randomUUID().slice(0, 6)}`);
      expect((await reader.api('GET', `/api/v1/users/${id}`, { token: admin })).status).toBe(200);
    }
  });

  it('delivers each webhook event once across two replicas, and the second takes over when the first stops', async () => {
    const rx = await startReceiver();
    try {
      const { a, b, admin } = await twoReplicasWithHook(rx.url);
      const users: string[] = [];
      for (let i = 0; i < 6; i++) users.push(await createUser(i % 2 === 0 ? a : b, admin, `before${i}`));
      await waitFor(async () => rx.received.length, (n) => n >= 6);
      await sleep(500);
      expect(users.map(rx.times)).toEqual(users.map(() => 1));

      await a.stop({ keepData: true });
      apps.splice(apps.indexOf(a), 1);
      // The leases were released on stop: the other replica takes everything over at its next try.
      await waitFor(() => holders(b), (h) => h.every((holder) => holder === b.app.replicaId), TTL_MS);
      await waitFor(async () => b.app.runner.leading, Boolean, TTL_MS);
      for (let i = 0; i < 3; i++) users.push(await createUser(b, admin, `after${i}`));
      await waitFor(async () => rx.received.length, (n) => n >= 9);
      await sleep(500);
      // Nothing lost, nothing sent twice (a clean handover), and in order.
      expect(users.map(rx.times)).toEqual(users.map(() => 1));
      expect(rx.received).toEqual(users);
    } finally {
      await rx.close();
    }
  });

  it('stops the work of a replica that cannot renew its leases before another replica starts it; no delivery is lost', async () => {
    const rx = await startReceiver();
    try {
      const { a, b, admin } = await twoReplicasWithHook(rx.url);
      const users = [await createUser(a, admin, 'early')];
      await waitFor(async () => rx.received.length, (n) => n >= 1);

      // A partition between replica A and the leases: its renewals get no answer from now on.
      const hang = () => new Promise<boolean>(() => undefined);
      Object.assign(a.app.leases, { acquire: hang, renew: hang, release: async () => undefined });
      const cut = Date.now();
      for (let i = 0; i < 4; i++) users.push(await createUser(i % 2 === 0 ? a : b, admin, `during${i}`));
      await waitFor(() => holders(b), (h) => h.every((holder) => holder === b.app.replicaId), 4 * TTL_MS);
      await waitFor(async () => b.app.runner.leading, Boolean, TTL_MS);
      users.push(await createUser(b, admin, 'late'));
      await waitFor(async () => new Set(rx.received).size, (n) => n >= users.length);
      expect([...new Set(rx.received)]).toEqual(users);

      // A stopped each piece of work before B started it (pino's times have millisecond precision).
      for (const plugin of ['webhooks', 'provisioner', 'reconciler']) {
        const stopped = loggedAt(a, 'lost the lease: stopping the plugin here', plugin);
        const started = loggedAt(b, 'took the plugin over (this replica holds its lease now)', plugin);
        expect(stopped, plugin).toBeGreaterThan(cut);
        expect(started! - stopped!, plugin).toBeGreaterThanOrEqual(0);
      }
      const unfenced = loggedAt(a, 'this replica no longer runs the projections; following the checkpoints of the one that does');
      expect(loggedAt(b, 'this replica runs the projections')! - unfenced!).toBeGreaterThanOrEqual(0);
      expect(a.app.runner.leading).toBe(false);
    } finally {
      await rx.close();
    }
  });

  it('takes its leases back at once when restarted under the same TIANQI_REPLICA_ID after a crash', async () => {
    const l = lab();
    // Leases that would outlast the test: only a holder with the same name can have them back.
    const env = { ...l.env, TIANQI_REPLICA_ID: 'lab-replica-1', TIANQI_LEASE_TTL_MS: '60000' };
    const crashed = await startTestApp(env, { dataDir: l.dataDir });
    expect(crashed.app.replicaId).toBe('lab-replica-1');
    // A crash releases nothing: the leases stay taken until they run out.
    Object.assign(crashed.app.leases, { release: async () => undefined });
    await crashed.stop({ keepData: true });
    const leases = await openMongoLeaseStore(l.env.TIANQI_MONGO_URL);
    try {
      for (const name of SINGLETONS) expect((await leases.holderOf(name))?.holder).toBe('lab-replica-1');
    } finally {
      await leases.close();
    }

    const started = Date.now();
    const restarted = await startTestApp(env, { dataDir: l.dataDir });
    apps.push(restarted);
    expect(restarted.app.runner.leading).toBe(true);
    expect(await holders(restarted)).toEqual(SINGLETONS.map(() => 'lab-replica-1'));
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('refuses to start over read models built from another event log, until `npm run rebuild` replaces them', async () => {
    const l = lab();
    const a = await replica(l);
    await a.stop({ keepData: true });
    apps.splice(apps.indexOf(a), 1);

    // A new data dir is a new event log; the database still holds the first lab's read models.
    const dataDir = mkdtempSync(join(tmpdir(), 'tianqi-replicas-'));
    dirs.push(dataDir);
    const strangerEnv = { ...l.env, TIANQI_DATA_DIR: dataDir, TIANQI_HTTP_PORT: '0', TIANQI_SSH_PORT: '0', TIANQI_HOST: '127.0.0.1', TIANQI_ADMIN_PASSWORD: ADMIN_PASSWORD };
    const stranger = new App(loadConfig(strangerEnv), createLogger('silent'), { announce: () => undefined });
    try {
      const refused = await stranger.start().catch((err: unknown) => err);
      expect(refused).toBeInstanceOf(ForeignReadModelsError);
      expect((refused as Error).message).toContain(`MongoDB database "${l.database}"`);
      expect((refused as Error).message).toContain(join(dataDir, 'events.db'));
      expect((refused as Error).message).toMatch(/npm run rebuild/);
      // refused before writing anything: not even the first admin
      expect(await stranger.eventStore.headPosition()).toBeUndefined();
    } finally {
      await stranger.stop();
    }

    // The lab's own log is still welcome; while its replica projects, a rebuild is refused.
    const again = await replica(l);
    expect((await again.api('GET', '/api/v1/users', { token: await again.login('admin', ADMIN_PASSWORD) })).status).toBe(200);
    const busy = await rebuildCli(strangerEnv);
    expect(busy.code).toBe(1);
    expect(busy.output).toContain(`Replica ${again.app.replicaId} is running the projections`);
    await again.stop({ keepData: true });
    apps.splice(apps.indexOf(again), 1);

    expect((await rebuildCli(strangerEnv)).code).toBe(0);
    const welcome = new App(loadConfig(strangerEnv), createLogger('silent'), { announce: () => undefined });
    try {
      await welcome.start();
      expect(await welcome.readStore.collection('users').count()).toBe(1);
    } finally {
      await welcome.stop();
    }
  });

  describeWithService('Docker engine', Boolean(socket), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'provisioning across replicas', () => {
    it('provisions from the replica holding the provisioner lease, and from the other once the first stops', async () => {
      const l = lab();
      const a = await replica(l);
      const b = await replica(l);
      try {
        // Everything through the replica that does not provision.
        const setUp = await setUpLab(b, socket!, ['alice']);
        const token = setUp.tokens.alice!;
        expect((await b.app.leases.holderOf('plugin:provisioner'))?.holder).toBe(a.app.replicaId);
        const first = await runningInstance(b, token, setUp, 'first');
        expect(first.status).toBe('running');

        await a.stop({ keepData: true });
        apps.splice(apps.indexOf(a), 1);
        await waitFor(() => holders(b), (h) => h.every((holder) => holder === b.app.replicaId), TTL_MS);
        const second = await runningInstance(b, token, setUp, 'second');
        expect(second.status).toBe('running');
        const { default: Dockerode } = await import('dockerode');
        const docker = new Dockerode({ socketPath: socket });
        for (const instance of [first, second]) {
          const containers = await docker.listContainers({ filters: { label: [`tianqi.instance=${instance.id}`] } });
          expect(containers.map((c) => c.Id)).toEqual([instance.containerId]);
        }
      } finally {
        await removeContainersOf(b, socket);
      }
    });

    it('fires a scheduled stop once, from the replica that took the scheduler lease over', async () => {
      // both replicas on one clock the test moves
      let now = Date.now();
      const clock = () => now;
      const l = lab();
      const fast = { TIANQI_SCHEDULER_TICK_MS: '100' };
      const a = await replica(l, { clock, env: fast });
      const b = await replica(l, { clock, env: fast });
      try {
        const setUp = await setUpLab(b, socket!, ['alice']);
        const token = setUp.tokens.alice!;
        expect((await b.app.leases.holderOf('plugin:scheduler'))?.holder).toBe(a.app.replicaId);
        const instance = await runningInstance(b, token, setUp, 'scheduled');
        expect(instance.status).toBe('running');
        expect((await b.api('PUT', `/api/v1/instances/${instance.id}/scheduled-stop`, { token, body: { afterHours: 1 } })).status).toBe(200);

        await a.stop({ keepData: true });
        apps.splice(apps.indexOf(a), 1);
        now += 3_600_000 + 1_000;
        const stopped = await waitFor(() => b.api<{ status: string; pending: string | null }>('GET', `/api/v1/instances/${instance.id}`, { token }).then((r) => r.body),
          (v) => v.status === 'exited' && v.pending === null, 30_000);
        expect(stopped.status).toBe('exited');
        expect((await b.app.leases.holderOf('plugin:scheduler'))?.holder).toBe(b.app.replicaId);
        const lines = (await b.api<{ summary: string }[]>('GET', `/api/v1/instances/${instance.id}/history`, { token })).body.map((h) => h.summary);
        expect(lines.filter((line) => line.startsWith('scheduled stop ('))).toHaveLength(1);
        expect(lines.filter((line) => line === 'stop done')).toHaveLength(1);
      } finally {
        await removeContainersOf(b, socket);
      }
    });
  });
});
