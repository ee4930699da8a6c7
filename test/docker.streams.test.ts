import net from 'node:net';
import { performance } from 'node:perf_hooks';
import Dockerode from 'dockerode';
import { firstValueFrom, lastValueFrom, take, toArray } from 'rxjs';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import type { DockerClient } from '../src/adapters/docker/docker-client.ts';
import { openDockerClient } from '../src/adapters/docker/docker-client.ts';
import { containerEvents } from '../src/adapters/docker/docker-events.ts';
import { containerLogs } from '../src/adapters/docker/docker-logs.ts';
import { containerStats } from '../src/adapters/docker/docker-stats.ts';
import type { ContainerEvent, LogLine } from '../src/ports/container-runtime.port.ts';
import { describeWithService } from './support/services.ts';
import { ensureTestImage, TEST_IMAGE } from './support/test-image.ts';

/**
 * The event, stats and logs streams against a real dockerd: what Docker really sends (frames,
 * timestamps, partial messages, TTY output, event replay), and a TCP proxy in front of the
 * engine's socket to cut the connection and to see whether a request is still open.
 */

const socketPath = process.env.TIANQI_TEST_DOCKER_SOCKET;
const RUN = `st-${process.pid}-${Date.now().toString(36)}`;
const RFC3339_NANO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z$/;

/** A TCP port that forwards to the engine's unix socket, and can be shut and opened again. */
class SocketProxy {
  private server: net.Server | undefined;
  private readonly clients = new Set<net.Socket>();
  port = 0;

  constructor(private readonly target: string) {}

  /** Connections from clients that are still open. */
  get open(): number {
    return this.clients.size;
  }

  async start(): Promise<void> {
    const server = net.createServer((client) => {
      const upstream = net.connect(this.target);
      this.clients.add(client);
      client.on('close', () => {
        this.clients.delete(client);
        upstream.destroy();
      });
      upstream.on('close', () => client.destroy());
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.port = (server.address() as net.AddressInfo).port;
    this.server = server;
  }

  /** Stops listening and cuts every connection, as a lost network would. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const client of this.clients) client.destroy();
    if (server) await new Promise((resolve) => server.close(resolve));
  }
}

describeWithService(
  'Docker engine',
  Boolean(socketPath),
  'start dockerd (see .ci/run) and set TIANQI_TEST_DOCKER_SOCKET',
  'Docker streams: events, stats and logs against a real dockerd',
  () => {
    let docker: Dockerode;
    let proxy: SocketProxy;
    let viaProxy: DockerClient;
    let serial = 0;
    const created: string[] = [];

    beforeAll(async () => {
      ensureTestImage(socketPath);
      docker = new Dockerode({ socketPath });
      proxy = new SocketProxy(socketPath!);
      await proxy.start();
      // No keep-alive: a connection the proxy still sees open is a request still running.
      viaProxy = openDockerClient({ endpoint: `tcp://127.0.0.1:${proxy.port}`, tls: false }, { keepAlive: false });
    });

    afterAll(async () => {
      viaProxy?.close();
      await proxy?.stop();
      await Promise.all(created.map((id) => docker.getContainer(id).remove({ force: true }).catch(() => undefined)));
    });

    /** Creates (and by default starts) a container of the test image running `script` with sh. */
    async function container(
      script: string,
      options: { tty?: boolean; start?: boolean; labels?: Record<string, string> } = {},
    ): Promise<Dockerode.Container> {
      serial += 1;
      const made = await docker.createContainer({
        name: `${RUN}-${serial}`,
        Image: TEST_IMAGE,
        Cmd: ['sh', '-c', script],
        Tty: options.tty ?? false,
        Labels: { 'tianqi-test': RUN, ...options.labels },
        HostConfig: { NetworkMode: 'none' },
      });
      created.push(made.id);
      if (options.start ?? true) await made.start();
      return made;
    }

    function byStream(lines: LogLine[], stream: LogLine['stream']): string[] {
      return lines.filter((line) => line.stream === stream).map((line) => line.text);
    }

    it('reads logs demultiplexed, with timestamps, Chinese intact and the last line without its newline', async () => {
      const job = await container("echo out-1; echo '显存切分 stderr' >&2; echo out-2; echo err-2 >&2; printf 'no newline'");
      await job.wait();
      const lines = await lastValueFrom(containerLogs(docker, job.id, { tail: 100, follow: false }).pipe(toArray()));
      expect(byStream(lines, 'stdout')).toEqual(['out-1', 'out-2', 'no newline']);
      expect(byStream(lines, 'stderr')).toEqual(['显存切分 stderr', 'err-2']);
      for (const line of lines) expect(line.time).toMatch(RFC3339_NANO);
      // In order within a stream; across the two, json-file keeps the order they reached it in.
      for (const stream of ['stdout', 'stderr'] as const) {
        const times = lines.filter((line) => line.stream === stream).map((line) => line.time);
        expect([...times].sort()).toEqual(times);
      }

      const last = await lastValueFrom(containerLogs(docker, job.id, { tail: 1, follow: false }).pipe(toArray()));
      expect(last).toEqual([lines.at(-1)]);
    });

    it('joins a line longer than the logging driver cuts (16 KiB) back together, characters whole', async () => {
      const job = await container("i=0; while [ $i -lt 2000 ]; do printf '显存切分'; i=$((i+1)); done; echo; echo after");
      await job.wait();
      const lines = await lastValueFrom(containerLogs(docker, job.id, { tail: 100, follow: false }).pipe(toArray()));
      expect(lines.map((line) => line.text.length > 1_000)).toEqual([true, false]);
      expect(lines[1]!.text).toBe('after');
      // json-file keeps each part as a JSON string, and Go's encoder turns the bytes of the character
      // cut at 16 KiB into U+FFFD: that one character is lost in the engine, the rest must be whole.
      const long = lines[0]!.text;
      expect(long).toMatch(/^[显存切分\uFFFD]+$/);
      expect(long.replace(/\uFFFD+/, '?')).toBe(`${'显存切分'.repeat(2000).slice(0, 5461)}?${'显存切分'.repeat(2000).slice(5462)}`);
    });

    it('reads the raw logs of a TTY container as stdout, without the \\r', async () => {
      const job = await container("echo tty-line; echo '显存切分'", { tty: true });
      await job.wait();
      const lines = await lastValueFrom(containerLogs(docker, job.id, { tail: 100, follow: false }).pipe(toArray()));
      expect(lines.map(({ stream, text }) => ({ stream, text }))).toEqual([
        { stream: 'stdout', text: 'tty-line' },
        { stream: 'stdout', text: '显存切分' },
      ]);
      expect(lines[0]!.time).toMatch(RFC3339_NANO);
    });

    it('follows the logs as they are written and completes when the container stops', async () => {
      const job = await container('echo before; sleep 1; for i in 1 2 3; do echo tick-$i; sleep 0.2; done');
      const seen: { text: string; at: number }[] = [];
      await new Promise<void>((resolve, reject) =>
        containerLogs(docker, job.id, { tail: 100, follow: true }).subscribe({
          next: (line) => seen.push({ text: line.text, at: performance.now() }),
          error: reject,
          complete: resolve,
        }),
      );
      expect(seen.map((line) => line.text)).toEqual(['before', 'tick-1', 'tick-2', 'tick-3']);
      // Delivered as written, not all at the end.
      expect(seen[1]!.at - seen[0]!.at).toBeGreaterThan(500);
    });

    it('ends the logs request when unsubscribed', async () => {
      const job = await container('echo ready; sleep 300');
      const first = await firstValueFrom(containerLogs(viaProxy.docker, job.id, { tail: 10, follow: true }));
      expect(first.text).toBe('ready');
      await vi.waitFor(() => expect(proxy.open).toBe(0), { timeout: 2_000 });
    });

    it('samples stats of a running container, and ends the request when unsubscribed', async () => {
      const job = await container('while :; do :; done');
      const samples = await lastValueFrom(containerStats(viaProxy.docker, job.id).pipe(take(2), toArray()));
      for (const sample of samples) {
        expect(sample.cpuPercent).toBeGreaterThanOrEqual(0);
        expect(sample.memoryUsageBytes).toBeGreaterThan(0);
        expect(sample.memoryLimitBytes).toBeGreaterThan(0);
        expect(sample.pids).toBeGreaterThanOrEqual(1);
        expect(sample.at).toMatch(/^\d{4}-\d{2}-\d{2}T/);
      }
      // A busy loop: the second sample has a baseline and shows about one CPU.
      expect(samples[1]!.cpuPercent).toBeGreaterThan(10);
      await vi.waitFor(() => expect(proxy.open).toBe(0), { timeout: 2_000 });
    });

    it('reports a die event with its exit code within a second of the kill', async () => {
      const events: { event: ContainerEvent; at: number }[] = [];
      const states: boolean[] = [];
      const subscription = containerEvents(docker, 'local', undefined, (up) => states.push(up)).subscribe((event) =>
        events.push({ event, at: performance.now() }),
      );
      try {
        await vi.waitFor(() => expect(states).toEqual([true]), { timeout: 5_000 });
        const job = await container('sleep 300');
        await vi.waitFor(() => expect(events.some(({ event }) => event.containerId === job.id && event.action === 'start')).toBe(true), {
          timeout: 5_000,
        });
        const killedAt = performance.now();
        await job.kill();
        await vi.waitFor(() => expect(events.some(({ event }) => event.containerId === job.id && event.action === 'die')).toBe(true), {
          timeout: 5_000,
        });
        const die = events.find(({ event }) => event.containerId === job.id && event.action === 'die')!;
        const latencyMs = die.at - killedAt;
        console.warn(`[docker streams] kill → die event: ${latencyMs.toFixed(1)} ms`);
        expect(latencyMs).toBeLessThan(1_000);
        expect(die.event).toMatchObject({ name: `${RUN}-${serial}`, exitCode: 137, labels: { 'tianqi-test': RUN } });
        expect(die.event.timeNano).toBeGreaterThan(0n);
      } finally {
        subscription.unsubscribe();
      }
    });

    it('replays from a sinceNano in the past, each event once', async () => {
      const before = BigInt(Date.now() - 1_000) * 1_000_000n;
      const job = await container('sleep 300');
      await job.kill();
      await job.wait();
      const events: ContainerEvent[] = [];
      const subscription = containerEvents(docker, 'local', before).subscribe((event) => {
        if (event.containerId === job.id) events.push(event);
      });
      try {
        await vi.waitFor(() => expect(events.map((event) => event.action)).toContain('die'), { timeout: 5_000 });
        await new Promise((resolve) => setTimeout(resolve, 300));
        expect(events.map((event) => event.action)).toEqual(['create', 'start', 'kill', 'die']);
        expect(events.every((event) => event.timeNano >= before)).toBe(true);
      } finally {
        subscription.unsubscribe();
      }
    });

    it('resumes after the connection is cut and delivers the events of the gap exactly once', async () => {
      const states: [boolean, string | undefined][] = [];
      const events: ContainerEvent[] = [];
      const labels = { 'tianqi-test-case': 'resume' };
      const subscription = containerEvents(viaProxy.docker, 'proxied', undefined, (up, reason) => states.push([up, reason])).subscribe(
        (event) => {
          if (event.labels['tianqi-test'] === RUN && event.labels['tianqi-test-case'] === 'resume') events.push(event);
        },
      );
      try {
        await vi.waitFor(() => expect(states).toHaveLength(1), { timeout: 5_000 });
        const first = await container('sleep 300', { labels });
        await vi.waitFor(() => expect(events.map((event) => event.action)).toContain('start'), { timeout: 5_000 });

        await proxy.stop();
        await vi.waitFor(() => expect(states.at(-1)?.[0]).toBe(false), { timeout: 5_000 });
        const second = await container('sleep 300', { labels });
        await second.kill();
        await second.wait();
        // Long enough for a couple of failed retries.
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        expect(events.filter((event) => event.containerId === second.id)).toEqual([]);

        await proxy.start();
        const reopened = performance.now();
        await vi.waitFor(() => expect(events.filter((event) => event.containerId === second.id).map((event) => event.action)).toContain('die'), {
          timeout: 10_000,
        });
        const resumedMs = performance.now() - reopened;
        await new Promise((resolve) => setTimeout(resolve, 300));
        expect(states.map(([up]) => up)).toEqual([true, false, true]);
        expect(events.map((event) => [event.containerId === first.id ? 'first' : 'second', event.action])).toEqual([
          ['first', 'create'],
          ['first', 'start'],
          ['second', 'create'],
          ['second', 'start'],
          ['second', 'kill'],
          ['second', 'die'],
        ]);
        console.warn(`[docker streams] outage reported as "${states[1]?.[1]}"; gap events ${resumedMs.toFixed(0)} ms after the proxy reopened`);
      } finally {
        subscription.unsubscribe();
      }
      await vi.waitFor(() => expect(proxy.open).toBe(0), { timeout: 2_000 });
    });
  },
);
