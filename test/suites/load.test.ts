// Load suite (issue 8, suite 4): 50 nodes with 1,000 instance records, then 100 web terminals and
// 100 SSH sessions, all open at once, against a server in a process of its own so that its memory
// is its own. The workload is bench/load.bench.ts, whose figures `npm run bench -- load` prints;
// here they have bounds. Of the 1,000 records (all created through POST /api/v1/instances, each
// with its reservation) only 4 have containers: the rest are created after a restart with
// TIANQI_DISABLED_PLUGINS=provisioner and stay `creating` (1,000 containers are too much for the
// 2-core CI machine), so the reconcile cycle checks every node but skips those records.
//
// Measured on the 2-core machine, alone: list of all 1,000 p99 25–90 ms, a user's own 3–30 ms,
// detail 2–12 ms; a reconcile cycle 2.0–2.6 s (two stats samples of each running instance: the
// same engine work straight through dockerode takes 2.0 s); RSS 190–230 MiB after loading;
// 100–140 KiB of heap per session. The bounds leave room for the other suites running beside.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_LOAD, engineFromEnv, LoadRun, type Memory } from '../../bench/load.bench.ts';
import { describeWithService } from '../support/services.ts';

const long = process.env.TIANQI_LONG_TESTS === '1';
const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
const MiB = 1024 * 1024;
const log = (figures: Record<string, unknown>) => console.warn(`[load] ${JSON.stringify(figures)}`);

describe.skipIf(!long)('load suite (TIANQI_LONG_TESTS=1)', () => {
  // Without TIANQI_LONG_TESTS=1 all of it is skipped: no engine is asked for then.
  describeWithService('Docker engine', Boolean(socketPath) || !long, 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', '50 nodes, 1,000 instances, 200 sessions', () => {
    const engine = socketPath ? engineFromEnv() : { socket: '' };
    let run: LoadRun;
    let loaded: Memory;

    beforeAll(async () => {
      if (!engine.tls) console.warn('[load] no TIANQI_TEST_DOCKER_TLS_*: every node goes over the unix socket');
      run = await LoadRun.start(engine, DEFAULT_LOAD);
      loaded = await run.memory();
    }, 180_000);

    afterAll(async () => {
      await run?.close();
    }, 60_000);

    it('holds 1,000 instance records, each with its reservation, on 50 connected nodes (half over TLS)', async () => {
      expect(run.records).toHaveLength(DEFAULT_LOAD.records);
      const nodes = await run.nodes();
      expect(nodes).toHaveLength(DEFAULT_LOAD.nodes);
      expect(nodes.every((n) => n.dockerStatus === 'connected')).toBe(true);
      if (engine.tls) expect(nodes.filter((n) => n.dockerEndpoint.startsWith('tcp://'))).toHaveLength(DEFAULT_LOAD.nodes / 2);
      const withStatus = (status: string) => run.records.filter((r) => r.status === status);
      expect(withStatus('running')).toHaveLength(DEFAULT_LOAD.running);
      // The bulk was created with the provisioner off: records with reservations, no containers.
      expect(withStatus('creating')).toHaveLength(DEFAULT_LOAD.records - DEFAULT_LOAD.running);
      expect(new Set(run.records.map((r) => r.nodeId)).size).toBe(DEFAULT_LOAD.nodes);
      const reserved = nodes.flatMap((n) => n.reservations.map((r) => r.instanceId)).sort();
      expect(reserved).toEqual(run.records.map((r) => r.id).sort());
      log({ createPerSec: run.createPerSec });
    });

    it('keeps the server under 512 MiB resident with all of it loaded', () => {
      log({ serverRssMiB: loaded.rss / MiB, serverHeapMiB: loaded.heapUsed / MiB });
      expect(loaded.rss).toBeLessThan(512 * MiB);
    });

    it('lists and details instances quickly: list p99 < 300 ms (all 1,000), a user’s own < 150 ms, detail < 50 ms', async () => {
      const figures = await run.latencies();
      log(figures);
      expect(figures.userListSize).toBe(Math.ceil((DEFAULT_LOAD.records - DEFAULT_LOAD.running) / DEFAULT_LOAD.users) + DEFAULT_LOAD.running);
      expect(figures.listP99Ms).toBeLessThan(300);
      expect(figures.userListP99Ms).toBeLessThan(150);
      expect(figures.detailP99Ms).toBeLessThan(50);
    }, 90_000);

    it('reconciles all 50 nodes in one cycle well within a poll interval (< 10 s)', async () => {
      const figures = await run.reconcileCycles(3);
      log(figures);
      expect(figures.nodes).toBe(DEFAULT_LOAD.nodes);
      expect(figures.cycleMaxMs).toBeLessThan(10_000);
    }, 90_000);

    it('opens 100 web terminals at once, every one usable, at < 1 MiB each', async () => {
      await run.warmUp();
      const web = await run.sessionsOf('web', DEFAULT_LOAD.webSessions);
      log({ web });
      expect(web.usable, run.serverLog).toBe(DEFAULT_LOAD.webSessions);
      expect(web.openP99Ms).toBeLessThan(15_000);
      expect(web.perSessionHeapKiB).toBeLessThan(1024);
      // RSS moves by whole pages and heap growth steps, so it only catches a gross leak.
      expect(web.perSessionKiB).toBeLessThan(2048);
    }, 120_000);

    it('opens 100 SSH sessions beside them, every one usable, at < 1 MiB each', async () => {
      const ssh = await run.sessionsOf('ssh', DEFAULT_LOAD.sshSessions);
      log({ ssh });
      expect(ssh.usable, run.serverLog).toBe(DEFAULT_LOAD.sshSessions);
      expect(ssh.openP99Ms).toBeLessThan(15_000);
      expect(ssh.perSessionHeapKiB).toBeLessThan(1024);
      expect(ssh.perSessionKiB).toBeLessThan(2048);
    }, 120_000);

    // Each hang-up is engine requests (a hang-up exec, exec inspects) made while the node's agent
    // holds ~100 open exec connections. docker-modem 5.0.7 util.inspect()s every request's
    // options, agent and all its sockets included (depth: null, showHidden), even with its debug
    // output off: each request costs time in proportion to the open sessions, and the server
    // answered nothing for 6–47 s here. Keeping the agent out of that inspection (an
    // `[util.inspect.custom]` on the agent made in src/adapters/docker/docker-client.ts) brings
    // it to ~1.3 s, and session opens from ~3 s to ~1.7 s at p50.
    it('keeps answering (< 3 s) while all 200 sessions hang up at once', async () => {
      const hangUp = await run.hangUpAll();
      const after = await run.memory();
      log({ ...hangUp, serverRssAfterSessionsMiB: after.rss / MiB, serverHeapAfterSessionsMiB: after.heapUsed / MiB });
      expect(hangUp.hungUp).toBe(DEFAULT_LOAD.webSessions + DEFAULT_LOAD.sshSessions);
      expect(hangUp.slowestAnswerMs).toBeLessThan(3_000);
    }, 120_000);
  });
});
