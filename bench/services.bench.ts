// The service proxy (自定义服务) next to a direct connection to the same container port, in one
// run against the local dockerd: bulk HTTP download with curl (a process of its own, as a browser
// is) and WebSocket echo round trips (one client in this process, one message at a time, the same
// client code both ways). The direct baseline is the container's bridge address, which only this
// host reaches; the proxy's path to it on a local engine is the same TCP connection, plus the
// proxy. A service on the container's loopback only goes through the engine (tianqi-helper over
// an exec stream, the way every remote node is reached): its figure is reported beside them.
// nginx (Debian's nginx-light, installed by the bench when missing, one worker, a keep-alive
// upstream to the same container port, on a free loopback port, stopped after) is the baseline a
// user would run instead: download, upload and WebSocket echo through it in the same run. The
// engine tunnel's baselines are the engine's exec stream alone carrying the same number of bytes
// (`dd` in the same container, the hijacked stream read here: the most that path can move) and
// the same download through an exec by hand (`nc 127.0.0.1 6006` in the container).
import { execFile, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { promisify } from 'node:util';
import { freePort } from '../test/support/ports.ts';
import Dockerode from 'dockerode';
import { startTestApp } from '../test/support/app.ts';
import { removeContainersOf, setUpLab, waitFor } from '../test/support/fixtures.ts';
import { RawWebSocket } from '../test/support/raw-http.ts';
import { ensureWebServiceImage } from '../test/support/test-image.ts';
import { percentile } from './stats.ts';

const dockerSocket = process.env.TIANQI_TEST_DOCKER_SOCKET ?? '/var/run/docker.sock';
const run = promisify(execFile);
const round = (n: number) => Math.round(n * 100) / 100;
const median = (values: number[]) => percentile(values, 50);

const BULK_BYTES = 200 * 1024 * 1024;
const ROUNDS = 5;
const ECHOES = 2000;
const WARM_UP = 50;

/** MB/s of one curl download of `url` to /dev/null. */
async function download(url: string, headers: string[] = []): Promise<number> {
  const { stdout } = await run('curl', ['-sS', '--fail', '-o', '/dev/null', '-w', '%{size_download} %{time_total}', ...headers.flatMap((h) => ['-H', h]), url]);
  const [size, seconds] = stdout.trim().split(' ').map(Number);
  if (size !== BULK_BYTES) throw new Error(`downloaded ${size} of ${BULK_BYTES} bytes from ${url}`);
  return size! / 1e6 / seconds!;
}

/** MB/s of one curl upload of `file` (BULK_BYTES) to `url`. */
async function upload(url: string, file: string, headers: string[] = []): Promise<number> {
  const { stdout } = await run('curl', ['-sS', '--fail', '-o', '/dev/null', '-w', '%{size_upload} %{time_total}', '-H', 'content-type: application/octet-stream',
    ...headers.flatMap((h) => ['-H', h]), '--data-binary', `@${file}`, url], { maxBuffer: 1024 * 1024 });
  const [size, seconds] = stdout.trim().split(' ').map(Number);
  if (size !== BULK_BYTES) throw new Error(`uploaded ${size} of ${BULK_BYTES} bytes to ${url}`);
  return size! / 1e6 / seconds!;
}

/**
 * MB/s of BULK_BYTES through an exec stream with nothing of the platform's on it, the hijacked
 * stream counted here: `cmd` in the container, `input` on its stdin.
 */
async function execStream(docker: Dockerode, containerId: string, cmd: string[], input?: string): Promise<number> {
  const exec = await docker.getContainer(containerId).exec({ Cmd: cmd, AttachStdin: true, AttachStdout: true, AttachStderr: true });
  const started = performance.now();
  const stream = (await exec.start({ hijack: true, stdin: true })) as unknown as Duplex;
  if (input !== undefined) stream.write(input);
  let bytes = 0;
  stream.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
  });
  await once(stream, 'end');
  const seconds = (performance.now() - started) / 1000;
  stream.destroy();
  // The payload and an 8-byte header per frame.
  if (bytes < BULK_BYTES) throw new Error(`the exec stream of ${cmd.join(' ')} carried ${bytes} of ${BULK_BYTES} bytes`);
  return BULK_BYTES / 1e6 / seconds;
}

/** nginx on PATH, installed from Debian's packages (nginx-light) when missing. */
function ensureNginx(): string {
  const find = () => {
    try {
      return execFileSync('sh', ['-c', 'command -v nginx || ls /usr/sbin/nginx']).toString().trim().split('\n')[0]!;
    } catch {
      return '';
    }
  };
  let nginx = find();
  if (!nginx) {
    execFileSync('apt-get', ['install', '-y', '-q', 'nginx-light'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, stdio: 'ignore' });
    nginx = find();
  }
  if (!nginx) throw new Error('the services bench needs nginx as its baseline (apt-get install nginx-light)');
  return nginx;
}

/** nginx as a user would put it in front of the service: one worker, keep-alive upstream, no buffering of uploads; stopped by the returned function. */
async function startNginx(upstream: string): Promise<{ port: number; stop: () => void }> {
  const nginx = ensureNginx();
  const dir = mkdtempSync(join(tmpdir(), 'tianqi-nginx-'));
  // Its worker runs as an unprivileged user (nginx started as root drops to it).
  chmodSync(dir, 0o755);
  const port = await freePort();
  writeFileSync(join(dir, 'nginx.conf'), `
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream service { server ${upstream}; keepalive 16; }
  map $http_upgrade $connection_upgrade { default upgrade; '' ''; }
  server {
    listen 127.0.0.1:${port};
    client_max_body_size 0;
    location / {
      proxy_pass http://service;
      proxy_http_version 1.1;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Upgrade $http_upgrade;
      proxy_request_buffering off;
      # Answers buffered in memory, never spilled to disk (a download streams through).
      proxy_max_temp_file_size 0;
      proxy_read_timeout 300s;
    }
  }
}
`);
  const child = spawn(nginx, ['-c', join(dir, 'nginx.conf'), '-p', dir, '-g', 'daemon off;'], { stdio: 'ignore' });
  const up = async () => new Promise<boolean>((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port }, () => { socket.destroy(); resolve(true); });
    socket.on('error', () => resolve(false));
  });
  await waitFor(up, (ok) => ok, 10_000);
  return {
    port,
    stop: () => {
      child.kill('SIGQUIT');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Median and p99 of one-message round trips, in ms. */
async function echoes(open: () => Promise<RawWebSocket>): Promise<{ p50: number; p99: number }> {
  const ws = await open();
  const times: number[] = [];
  for (let i = 0; i < WARM_UP + ECHOES; i++) {
    const started = performance.now();
    ws.send(`{"seq":${i},"msg_type":"status"}`);
    await ws.next();
    if (i >= WARM_UP) times.push(performance.now() - started);
  }
  ws.close();
  return { p50: percentile(times, 50), p99: percentile(times, 99) };
}

export async function servicesBench(): Promise<Record<string, number>> {
  const t = await startTestApp({ TIANQI_LOG_LEVEL: 'warn', TIANQI_POLL_INTERVAL_MS: '60000' });
  try {
    const lab = await setUpLab(t, dockerSocket, ['alice']);
    const token = lab.tokens.alice!;
    const image = await t.api<{ id: string }>('POST', '/api/v1/images', {
      token: lab.admin, body: { name: 'notebook', address: ensureWebServiceImage(dockerSocket), ports: [{ port: 8888, name: 'JupyterLab' }, { port: 6006, name: 'TensorBoard' }] },
    });
    const created = await t.api<{ id: string }>('POST', '/api/v1/instances', { token, body: { name: 'bench', imageId: image.body.id, specId: lab.specId } });
    const id = created.body.id;
    const ready = await waitFor(() => t.api<{ status: string; containerId: string | null }>('GET', `/api/v1/instances/${id}`, { token }).then((r) => r.body),
      (i) => i.status === 'running' && i.containerId !== null, 60_000);
    await waitFor(() => t.api<{ listening: boolean }[]>('GET', `/api/v1/instances/${id}/services`, { token }).then((r) => r.body), (s) => s.every((x) => x.listening), 30_000);
    const docker = new Dockerode({ socketPath: dockerSocket });
    const info = await docker.getContainer(ready.containerId!).inspect();
    const address = Object.values(info.NetworkSettings.Networks)[0]!.IPAddress;
    const auth = `authorization: Bearer ${token}`;
    // Each service on a port of its own (the port form, the default), as the console opens it.
    const portOf = async (servicePort: number) => {
      const link = await t.api<{ url: string }>('POST', `/api/v1/instances/${id}/services/${servicePort}/link?form=port`, { token });
      return Number(new URL(link.body.url).port);
    };
    const ports: Record<number, number> = { 8888: await portOf(8888), 6006: await portOf(6006) };
    const proxied = (port: number, path: string) => `http://127.0.0.1:${ports[port]}${path}`;

    const nginx = await startNginx(`${address}:8888`);
    const file = join(mkdtempSync(join(tmpdir(), 'tianqi-upload-')), 'payload');
    writeFileSync(file, Buffer.alloc(BULK_BYTES, 'u'));
    const direct: number[] = [];
    const proxy: number[] = [];
    const tunnel: number[] = [];
    const exec: number[] = [];
    const relay: number[] = [];
    const viaNginx: number[] = [];
    const up = { direct: [] as number[], proxy: [] as number[], nginx: [] as number[] };
    let wsNginx: { p50: number; p99: number };
    try {
      // One round unmeasured first, each path alike: a long-running server's code is warm, and the
      // first transfers of a fresh process measure its compiler, not its path (about half speed).
      for (const url of [`http://${address}:8888`, proxied(8888, ''), `http://127.0.0.1:${nginx.port}`, proxied(6006, '')]) {
        await run('curl', ['-sS', '--fail', '-o', '/dev/null', '-H', auth, `${url}/bytes?n=${BULK_BYTES}`]);
      }
      for (let r = 0; r < ROUNDS; r++) {
        direct.push(await download(`http://${address}:8888/bytes?n=${BULK_BYTES}`));
        proxy.push(await download(proxied(8888, `/bytes?n=${BULK_BYTES}`), [auth]));
        viaNginx.push(await download(`http://127.0.0.1:${nginx.port}/bytes?n=${BULK_BYTES}`));
        tunnel.push(await download(proxied(6006, `/bytes?n=${BULK_BYTES}`), [auth]));
        // The engine's exec stream alone (dd writing 256 KB at a time, as tianqi-helper does), and the
        // same download through it by hand (`docker exec -i <c> nc 127.0.0.1 6006`).
        exec.push(await execStream(docker, ready.containerId!, ['dd', 'if=/dev/zero', `bs=${256 * 1024}`, `count=${BULK_BYTES / (256 * 1024)}`]));
        relay.push(await execStream(docker, ready.containerId!, ['nc', '127.0.0.1', '6006'], `GET /bytes?n=${BULK_BYTES} HTTP/1.1\r\nHost: 127.0.0.1:6006\r\nConnection: close\r\n\r\n`));
        up.direct.push(await upload(`http://${address}:8888/upload`, file));
        up.proxy.push(await upload(proxied(8888, '/upload'), file, [auth]));
        up.nginx.push(await upload(`http://127.0.0.1:${nginx.port}/upload`, file));
      }
      wsNginx = await echoes(() => RawWebSocket.open(nginx.port, '/ws', {}));
    } finally {
      nginx.stop();
      rmSync(file, { force: true });
    }
    const wsDirect = await echoes(() => openAt(address));
    const wsProxy = await echoes(() => RawWebSocket.open(ports[8888]!, '/ws', { authorization: `Bearer ${token}` }));
    const wsTunnel = await echoes(() => RawWebSocket.open(ports[6006]!, '/ws', { authorization: `Bearer ${token}` }));
    await removeContainersOf(t, dockerSocket);
    const d = median(direct);
    const p = median(proxy);
    const k = median(tunnel);
    const n = median(viaNginx);
    return {
      httpNginxMBps: round(n),
      httpProxyOfNginx: round(p / n),
      uploadDirectMBps: round(median(up.direct)),
      uploadProxyMBps: round(median(up.proxy)),
      uploadNginxMBps: round(median(up.nginx)),
      uploadProxyOfNginx: round(median(up.proxy) / median(up.nginx)),
      wsNginxP50Ms: round(wsNginx.p50),
      wsNginxP99Ms: round(wsNginx.p99),
      wsProxyP99OverNginxMs: round(wsProxy.p99 - wsNginx.p99),
      httpDirectMBps: round(d),
      httpProxyMBps: round(p),
      httpProxyOfDirect: round(p / d),
      httpTunnelMBps: round(k),
      httpTunnelOfDirect: round(k / d),
      execStreamMBps: round(median(exec)),
      httpTunnelOfExecStream: round(k / median(exec)),
      execRelayMBps: round(median(relay)),
      httpTunnelOfExecRelay: round(k / median(relay)),
      wsDirectP50Ms: round(wsDirect.p50),
      wsProxyP50Ms: round(wsProxy.p50),
      wsProxyP99Ms: round(wsProxy.p99),
      wsDirectOfProxyLatency: round(wsDirect.p50 / wsProxy.p50),
      wsTunnelP50Ms: round(wsTunnel.p50),
    };
  } finally {
    await t.stop();
  }
}

/** The WebSocket client dials 127.0.0.1: for the container's own address, a client that dials it. */
function openAt(address: string): Promise<RawWebSocket> {
  return RawWebSocket.open(8888, '/ws', { host: `${address}:8888`, dial: address });
}
