import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, copyFileSync, mkdirSync, chmodSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A tiny image made with `docker import` from Debian's static busybox: no registry needed. */
export const TEST_IMAGE = 'tianqi-test/busybox:1';
/** The same files with a default command that keeps running (like a real instance image) and stops at once on TERM. */
export const SERVICE_IMAGE = 'tianqi-test/busybox-service:1';
const SERVICE_CMD = `CMD ["/bin/sh","-c","trap 'exit 0' TERM; echo ready; echo 显存切分 >&2; while :; do sleep 1; done"]`;

/** Builds SERVICE_IMAGE on the engine behind `socket` unless it is there already. */
export function ensureServiceImage(socket = process.env.TIANQI_TEST_DOCKER_SOCKET ?? '/var/run/docker.sock'): string {
  return ensureTestImage(socket, SERVICE_IMAGE, SERVICE_CMD);
}

/** A workload that ignores SIGTERM: a stop ends it only with SIGKILL, when the grace period is over. */
export const STUBBORN_IMAGE = 'tianqi-test/ignores-term:1';

export function ensureStubbornImage(socket = process.env.TIANQI_TEST_DOCKER_SOCKET ?? '/var/run/docker.sock'): string {
  return ensureTestImage(socket, STUBBORN_IMAGE, `CMD ["/bin/sh","-c","trap '' TERM; while :; do sleep 1; done"]`);
}

/** An image with nothing but one static binary (busybox, as `/busybox`, no applet links): no shell, no tools. */
export const STATIC_IMAGE = 'tianqi-test/static-only:1';

export function ensureStaticImage(socket = process.env.TIANQI_TEST_DOCKER_SOCKET ?? '/var/run/docker.sock'): string {
  return buildImage(socket, STATIC_IMAGE, 'CMD ["/busybox","sleep","2147483647"]', (root, busybox) => {
    copyFileSync(busybox, join(root, 'busybox'));
    chmodSync(join(root, 'busybox'), 0o755);
  });
}

/**
 * The busybox service image plus this machine's `scp`, `rsync` and (dynamically linked) `env`
 * with the libraries they load (found with ldd): classic scp and rsync over the jump host, and a
 * program that ld.so.preload applies to.
 */
export const TOOLS_IMAGE = 'tianqi-test/busybox-tools:2';

export function ensureToolsImage(socket = process.env.TIANQI_TEST_DOCKER_SOCKET ?? '/var/run/docker.sock'): string {
  return buildImage(socket, TOOLS_IMAGE, SERVICE_CMD, (root, busybox) => {
    busyboxTree(root, busybox);
    for (const program of ['scp', 'rsync', '/usr/bin/env']) {
      copyWithLibraries(root, program.startsWith('/') ? program : execFileSync('sh', ['-c', `command -v ${program}`]).toString().trim());
    }
  });
}

/**
 * The busybox tree plus this machine's node (with its libraries) running
 * test/support/service/web-service.cjs: HTTP and a WebSocket echo on 0.0.0.0:8888 and on the
 * container's loopback only at 127.0.0.1:6006 (and on any port asked for with `/listen?port=`), for
 * the service proxy's tests and benchmark.
 */
export const WEB_SERVICE_IMAGE = 'tianqi-test/web-service:6';

export function ensureWebServiceImage(socket = process.env.TIANQI_TEST_DOCKER_SOCKET ?? '/var/run/docker.sock'): string {
  return buildImage(socket, WEB_SERVICE_IMAGE, 'CMD ["/usr/bin/node","/srv/web-service.cjs"]', (root, busybox) => {
    busyboxTree(root, busybox);
    copyWithLibraries(root, process.execPath, '/usr/bin/node');
    mkdirSync(join(root, 'srv'), { recursive: true });
    copyFileSync(fileURLToPath(new URL('./service/web-service.cjs', import.meta.url)), join(root, 'srv/web-service.cjs'));
  });
}

/** A program and the libraries ldd says it loads, at their own paths (the program at `as`). */
function copyWithLibraries(root: string, path: string, as = path): void {
  const libraries = execFileSync('ldd', [path]).toString().match(/\/\S+/g) ?? [];
  for (const [from, to] of [[path, as], ...libraries.map((l) => [l, l])] as [string, string][]) {
    mkdirSync(join(root, dirname(to)), { recursive: true });
    copyFileSync(from, join(root, to));
    chmodSync(join(root, to), 0o755);
  }
}

/** Builds TEST_IMAGE on the engine behind `socket` unless it is there already. */
export function ensureTestImage(
  socket = process.env.TIANQI_TEST_DOCKER_SOCKET ?? '/var/run/docker.sock',
  image = TEST_IMAGE,
  cmd = 'CMD ["/bin/sh"]',
): string {
  return buildImage(socket, image, cmd, busyboxTree);
}

/** busybox with a link per applet in /bin, and the usual top-level directories. */
function busyboxTree(root: string, busybox: string): void {
  for (const dir of ['bin', 'tmp', 'root', 'data', 'etc', 'proc', 'sys', 'dev']) mkdirSync(join(root, dir), { recursive: true });
  chmodSync(join(root, 'tmp'), 0o1777);
  copyFileSync(busybox, join(root, 'bin/busybox'));
  chmodSync(join(root, 'bin/busybox'), 0o755);
  const applets = execFileSync(busybox, ['--list']).toString().split('\n').filter((a) => a && a !== 'busybox');
  for (const applet of applets) symlinkSync('busybox', join(root, 'bin', applet));
  execFileSync('sh', ['-c', `printf 'root:x:0:0:root:/root:/bin/sh\\n' > ${join(root, 'etc/passwd')}`]);
}

/** `docker import` of the tree `fill` makes, unless the engine has the image already. */
function buildImage(socket: string, image: string, cmd: string, fill: (root: string, busybox: string) => void): string {
  const docker = (args: string[], input?: Buffer) =>
    execFileSync('docker', args, { env: { ...process.env, DOCKER_HOST: `unix://${socket}` }, input, stdio: ['pipe', 'pipe', 'pipe'] });
  try {
    docker(['image', 'inspect', image]);
    return image;
  } catch {
    // not there yet
  }
  const busybox = execFileSync('sh', ['-c', 'command -v busybox']).toString().trim();
  const root = mkdtempSync(join(tmpdir(), 'tianqi-rootfs-'));
  try {
    fill(root, busybox);
    const tar = execFileSync('tar', ['-C', root, '-c', '.'], { maxBuffer: 512 * 1024 * 1024 });
    docker(['import', '--change', cmd, '--change', 'ENV PATH=/bin:/usr/bin', '-', image], tar);
    return image;
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/**
 * A stand-in for the image card discovery runs nvidia-smi in: its `nvidia-smi` prints `query` (a
 * recorded `--query-gpu` output of real cards) when given arguments, and a real header without.
 * Made again each call (the second read of a test may find other cards).
 */
/** `hang`: the query never answers (a wedged driver). */
export function buildGpuProbeImage(socket: string, image: string, query: string, options: { hang?: boolean } = {}): string {
  execFileSync('docker', ['rmi', '-f', image], { env: { ...process.env, DOCKER_HOST: `unix://${socket}` }, stdio: 'ignore' });
  return buildImage(socket, image, 'CMD ["nvidia-smi"]', (root, busybox) => {
    busyboxTree(root, busybox);
    mkdirSync(join(root, 'usr/bin'), { recursive: true });
    writeFileSync(join(root, 'recorded.csv'), `${query}\n`);
    writeFileSync(join(root, 'usr/bin/nvidia-smi'), [
      '#!/bin/sh',
      'if [ $# -eq 0 ]; then',
      '  echo "| NVIDIA-SMI 550.127.05             Driver Version: 550.127.05     CUDA Version: 12.4     |"',
      '  exit 0',
      'fi',
      ...(options.hang ? ['sleep 600'] : []),
      'cat /recorded.csv',
      '',
    ].join('\n'), { mode: 0o755 });
  });
}
