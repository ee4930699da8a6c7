import type { Socket } from 'socket.io-client';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, runningInstance, setUpLab, waitFor, type Lab } from '../support/fixtures.ts';
import { freePort } from '../support/ports.ts';
import { describeWithService } from '../support/services.ts';
import { connected, newSocket } from '../support/sockets.ts';
import ssh2 from 'ssh2';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
const long = process.env.TIANQI_LONG_TESTS === '1';
const MiB = 1024 * 1024;
/** How long the clients that never read stay on a container printing as fast as it can. */
const FLOOD_SECONDS = long ? 60 : 10;

/**
 * Log streams hold no growing buffer and leak no engine connection: clients of `/logs` that
 * never read while the container prints without pause, follows that race their own disconnect,
 * and `GET /logs?tail=` of huge lines.
 */
describeWithService('Docker engine', Boolean(socketPath), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'Log streams: backpressure and no leaks', () => {
  let t: TestApp;
  let lab: Lab;
  let sshPort: number;
  let flood: { id: string };
  const sockets: Socket[] = [];

  const aliceSocket = (namespace: string) => {
    const socket = newSocket(t.url, namespace, lab.tokens.alice!);
    sockets.push(socket);
    return connected(socket);
  };
  const logsSocket = () => aliceSocket('/logs');
  /** Runs `command` in the instance through the jump host and leaves it running. */
  const start = (command: string) => new Promise<void>((resolve, reject) => {
    const client = new ssh2.Client();
    client.on('ready', () => client.exec(command, (err, channel) => {
      if (err) return reject(err);
      channel.on('data', () => undefined).stderr.on('data', () => undefined);
      channel.on('close', () => client.end());
      resolve();
    })).on('error', reject);
    client.connect({ host: '127.0.0.1', port: sshPort, username: 'alice+flood', password: 'alice-password', readyTimeout: 15_000, hostVerifier: () => true });
  });

  beforeAll(async () => {
    sshPort = await freePort();
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000', TIANQI_SSH_PORT: String(sshPort) });
    lab = await setUpLab(t, socketPath!);
    flood = await runningInstance(t, lab.tokens.alice!, lab, 'flood');
  }, 120_000);

  afterAll(async () => {
    for (const socket of sockets) socket.disconnect();
    await removeContainersOf(t, socketPath);
    await t?.stop();
  });

  it('follows that race their own disconnect leave no stream open to the engine', async () => {
    const before = t.app.runtime.openStreams;
    for (let i = 0; i < 20; i += 1) {
      const socket = await logsSocket();
      socket.emit('follow', { instanceId: flood.id, tail: 1 });
      await new Promise((r) => setTimeout(r, i * 3));
      socket.disconnect();
    }
    // and a follow asked for twice at once opens one stream
    const twice = await logsSocket();
    twice.emit('follow', { instanceId: flood.id, tail: 1 });
    twice.emit('follow', { instanceId: flood.id, tail: 1 });
    await waitFor(async () => t.app.runtime.openStreams, (n) => n === before + 1, 5_000);
    twice.disconnect();
    await waitFor(async () => t.app.runtime.openStreams, (n) => n === before, 5_000);
    // stats watches on /live the same way
    for (let i = 0; i < 20; i += 1) {
      const socket = await aliceSocket('/live');
      socket.emit('watch-stats', { instanceId: flood.id });
      // gone at some point while the server looks the instance up
      await new Promise((r) => setTimeout(r, i * 3));
      socket.disconnect();
    }
    await new Promise((r) => setTimeout(r, 1_000));
    await waitFor(async () => t.app.runtime.openStreams, (n) => n === before, 5_000);
    expect(t.app.runtime.openStreams).toBe(before);
  });

  it(`keeps the server's memory bounded with 10 clients that never read ${FLOOD_SECONDS} s of \`yes\``, async () => {
    // What PID 1 prints is the container's log: write there, as a training script's output would be.
    const baseline = t.app.runtime.openStreams;
    await start('yes "$(head -c 200 /dev/zero | tr \'\\0\' x)" > /proc/1/fd/1');
    const readers: Socket[] = [];
    for (let i = 0; i < 10; i += 1) {
      const socket = await logsSocket();
      let lines = 0;
      socket.on('line', () => {
        lines += 1;
        // After the first lines this client stops reading its connection altogether.
        if (lines === 100) (socket.io.engine.transport as unknown as { ws: { _socket: { pause(): void } } }).ws._socket.pause();
      });
      socket.emit('follow', { instanceId: flood.id, tail: 0 });
      readers.push(socket);
    }
    global.gc?.();
    const start_ = process.memoryUsage();
    let peakRss = start_.rss;
    const deadline = Date.now() + FLOOD_SECONDS * 1_000;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 1_000));
      peakRss = Math.max(peakRss, process.memoryUsage().rss);
    }
    const end = process.memoryUsage();
    const figures = {
      seconds: FLOOD_SECONDS,
      rssStartMiB: Math.round(start_.rss / MiB),
      rssPeakMiB: Math.round(peakRss / MiB),
      heapGrowthMiB: Math.round((end.heapUsed - start_.heapUsed) / MiB),
      openStreams: t.app.runtime.openStreams,
    };
    console.warn(`[log streams] ${JSON.stringify(figures)}`);
    // Without backpressure each client's socket buffers every line the engine sends: hundreds of MB a minute.
    expect(peakRss - start_.rss).toBeLessThan(150 * MiB);
    expect(end.heapUsed - start_.heapUsed).toBeLessThan(100 * MiB);
    for (const socket of readers) socket.disconnect();
    await waitFor(async () => t.app.runtime.openStreams, (n) => n === baseline, 10_000);
    await start('killall yes');
  }, (FLOOD_SECONDS + 60) * 1_000);

  it('answers GET /logs?tail= with the newest lines within 4 MiB, however long they are', async () => {
    // 10,000 lines of 64 KiB would be 640 MB in one answer
    await start('(i=0; while [ $i -lt 200 ]; do head -c 65000 /dev/zero | tr \'\\0\' y; echo; i=$((i+1)); done; echo last-line) > /proc/1/fd/1');
    await new Promise((r) => setTimeout(r, 3_000));
    const r = await t.api<{ text: string }[]>('GET', `/api/v1/instances/${flood.id}/logs?tail=10000`, { token: lab.tokens.alice });
    expect(r.status).toBe(200);
    const chars = r.body.reduce((sum, line) => sum + line.text.length, 0);
    expect(chars).toBeLessThanOrEqual(4 * MiB);
    expect(r.body.length).toBeGreaterThan(10);
    expect(r.body.at(-1)!.text).toBe('last-line');
  }, 60_000);
});
