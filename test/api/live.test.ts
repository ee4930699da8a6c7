import { io, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../support/app.ts';
import { removeContainersOf, runningInstance, setUpLab, type Lab, waitFor } from '../support/fixtures.ts';
import { describeWithService } from '../support/services.ts';

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;

describeWithService('Docker engine', Boolean(socketPath), 'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET', 'socket.io /live and /logs', () => {
  let t: TestApp;
  let lab: Lab;
  const sockets: Socket[] = [];
  const connect = (namespace: string, token: string | undefined) => {
    const socket = io(`${t.url}${namespace}`, { auth: token === undefined ? {} : { token }, transports: ['websocket'], reconnection: false });
    sockets.push(socket);
    return socket;
  };
  const connected = (socket: Socket) =>
    new Promise<void>((resolve, reject) => {
      socket.on('connect', () => resolve());
      socket.on('connect_error', (err) => reject(err));
    });

  beforeAll(async () => {
    t = await startTestApp({ TIANQI_POLL_INTERVAL_MS: '60000' });
    lab = await setUpLab(t, socketPath!);
  }, 120_000);
  afterAll(async () => {
    for (const s of sockets) s.disconnect();
    await removeContainersOf(t, socketPath);
    await t?.stop();
  });

  it('refuses a missing or bad token', async () => {
    await expect(connected(connect('/live', undefined))).rejects.toThrow(/UNAUTHORIZED/);
    await expect(connected(connect('/live', 'not.a.token'))).rejects.toThrow(/UNAUTHORIZED/);
    await expect(connected(connect('/logs', 'not.a.token'))).rejects.toThrow(/UNAUTHORIZED/);
  });

  it('pushes an instance to its owner and to admins as it changes, and nothing to other users', async () => {
    const alice = connect('/live', lab.tokens.alice);
    const bob = connect('/live', lab.tokens.bob);
    const admin = connect('/live', lab.admin);
    await Promise.all([connected(alice), connected(bob), connected(admin)]);
    const seen = { alice: [] as { name: string; status: string }[], bob: [] as unknown[], admin: [] as { name: string; status: string }[] };
    alice.on('instance', (i) => seen.alice.push(i));
    bob.on('instance', (i) => seen.bob.push(i));
    admin.on('instance', (i) => seen.admin.push(i));
    const adminNodes: unknown[] = [];
    admin.on('node', (n) => adminNodes.push(n));
    await runningInstance(t, lab.tokens.alice!, lab, 'pushed');
    await waitFor(async () => seen.alice, (list) => list.some((i) => i.name === 'pushed' && i.status === 'running'), 10_000);
    expect(seen.alice.map((i) => i.status)).toContain('creating');
    await waitFor(async () => seen.admin, (list) => list.some((i) => i.status === 'running'), 10_000);
    expect(seen.bob).toEqual([]);
    // the reservation changed the node: admins get it
    expect(adminNodes.length).toBeGreaterThan(0);
  });

  it('pushes stats every few seconds to a watcher, and stops on unwatch', async () => {
    const instance = (await t.api<{ id: string }[]>('GET', '/api/v1/instances?q=pushed', { token: lab.tokens.alice })).body[0]!;
    const alice = connect('/live', lab.tokens.alice);
    await connected(alice);
    const stats: { instanceId: string; memoryUsageBytes: number; pids: number }[] = [];
    alice.on('stats', (s) => stats.push(s));
    alice.emit('watch-stats', { instanceId: instance.id });
    await waitFor(async () => stats.length, (n) => n >= 1, 8_000);
    expect(stats[0]).toMatchObject({ instanceId: instance.id });
    expect(stats[0]!.memoryUsageBytes).toBeGreaterThan(0);
    alice.emit('unwatch-stats', { instanceId: instance.id });
    const count = stats.length;
    await new Promise((r) => setTimeout(r, 6_000));
    expect(stats.length).toBeLessThanOrEqual(count + 1);
  }, 30_000);

  it('refuses stats and logs of someone else’s instance', async () => {
    const instance = (await t.api<{ id: string }[]>('GET', '/api/v1/instances?q=pushed', { token: lab.tokens.alice })).body[0]!;
    const bob = connect('/live', lab.tokens.bob);
    await connected(bob);
    const errors: { code: string }[] = [];
    bob.on('error', (e) => errors.push(e));
    bob.emit('watch-stats', { instanceId: instance.id });
    const bobLogs = connect('/logs', lab.tokens.bob);
    await connected(bobLogs);
    const logErrors: { code: string }[] = [];
    bobLogs.on('error', (e) => logErrors.push(e));
    bobLogs.emit('follow', { instanceId: instance.id, tail: 10 });
    await waitFor(async () => errors.length + logErrors.length, (n) => n >= 2, 5_000);
    expect(errors[0]!.code).toBe('NOT_FOUND');
    expect(logErrors[0]!.code).toBe('NOT_FOUND');
  });

  it('follows logs: the tail first, then new lines', async () => {
    const instance = (await t.api<{ id: string }[]>('GET', '/api/v1/instances?q=pushed', { token: lab.tokens.alice })).body[0]!;
    const logs = connect('/logs', lab.tokens.alice);
    await connected(logs);
    const lines: { stream: string; text: string; time: string }[] = [];
    logs.on('line', (l) => lines.push(l));
    logs.emit('follow', { instanceId: instance.id, tail: 10 });
    await waitFor(async () => lines, (l) => l.some((x) => x.text === 'ready') && l.some((x) => x.text === '显存切分'), 5_000);
    expect(lines.find((l) => l.text === '显存切分')!.stream).toBe('stderr');
    const ends: unknown[] = [];
    logs.on('end', (e) => ends.push(e));
    // Docker ends a follow when the container stops; following again after the restart shows both runs.
    await t.api('POST', `/api/v1/instances/${instance.id}/restart?wait=true`, { token: lab.tokens.alice });
    await waitFor(async () => ends.length, (n) => n === 1, 10_000);
    lines.length = 0;
    logs.emit('follow', { instanceId: instance.id, tail: 10 });
    await waitFor(async () => lines.filter((l) => l.text === 'ready').length, (n) => n >= 2, 10_000);
    logs.emit('unfollow', { instanceId: instance.id });
  });
});
