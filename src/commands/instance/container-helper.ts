import type { ContainerRuntime, ExecSession, NodeTarget } from '../../ports/container-runtime.port.ts';
import type { HelperBuild, HelperBuilds } from '../../ports/helper-builds.port.ts';
import { tarOf } from './tar.ts';

/** Where in a container the helper goes: a directory per build, so an upgrade never runs an old one. */
export const HELPER_ROOT = '.tianqi';

/** Why the helper cannot serve a container: said to the user as it is. */
export class HelperUnavailableError extends Error {}

/** Containers remembered as holding the helper; a forgotten one is only checked again. */
const REMEMBERED = 4_096;
/** How long the helper may take to report its connection: it dials with a 10 s timeout itself. */
const CONNECT_WAIT_MS = 15_000;

/** A connection the helper made in the container: its stdin and stdout are the connection's two ways. */
export type HelperConnection = { readonly ok: true; readonly exec: ExecSession } | { readonly ok: false; readonly reason: string | null };

/**
 * tianqi-helper in a container: SFTP and port forwarding run through it, so they work in any
 * image, even one with nothing but a static binary. It is copied in once per container with the
 * engine's archive API (as `docker cp`) and found there afterwards by its build digest.
 */
export class ContainerHelper {
  private readonly installed = new Map<string, Promise<string>>();

  constructor(
    private readonly runtime: ContainerRuntime,
    private readonly builds: HelperBuilds,
  ) {}

  /** The helper's path in the container, copied there first if it is not. */
  async ensure(target: NodeTarget, containerId: string): Promise<string> {
    const key = `${target.nodeId}/${containerId}`;
    let path = this.installed.get(key);
    if (!path) {
      path = this.install(target, containerId);
      this.installed.set(key, path);
      if (this.installed.size > REMEMBERED) this.installed.delete(this.installed.keys().next().value!);
      path.catch(() => this.installed.delete(key));
    }
    return path;
  }

  /**
   * `tianqi-helper connect HOST PORT` in the container (at `path`, from `ensure`): a TCP
   * connection from inside it, to its own loopback or addresses only. The reason of a refusal
   * is the helper's (connection refused, not the container's address…), null when it said nothing.
   */
  async connect(target: NodeTarget, containerId: string, path: string, host: string, port: number): Promise<HelperConnection> {
    const exec = await this.runtime.exec(target, containerId, { cmd: [path, 'connect', host, String(port)], tty: false });
    const status = await firstLine(exec);
    if (status === 'ok') return { ok: true, exec };
    exec.close();
    return { ok: false, reason: status };
  }

  private async install(target: NodeTarget, containerId: string): Promise<string> {
    const arch = await this.runtime.architecture(target);
    const build = this.build(arch);
    const dir = `${HELPER_ROOT}/${build.digest}`;
    const path = `/${dir}/tianqi-helper`;
    const there = await this.runtime.statPath(target, containerId, path);
    if (there?.size === build.binary.length) return path;
    const tar = tarOf([
      { name: `${HELPER_ROOT}/`, mode: 0o755 },
      { name: `${dir}/`, mode: 0o755 },
      { name: `${dir}/tianqi-helper`, mode: 0o755, content: build.binary },
    ]);
    try {
      await this.runtime.putArchive(target, containerId, '/', tar);
    } catch (error) {
      const why = error instanceof Error ? error.message : String(error);
      throw new HelperUnavailableError(`无法把文件传输组件放入容器（${why}）`);
    }
    return path;
  }

  private build(arch: string): HelperBuild {
    const build = this.builds.forArch(arch);
    if (!build) throw new HelperUnavailableError(`此平台未安装 ${arch} 架构的文件传输组件 tianqi-helper（安装时需要 Go，见 README“文件与端口”）`);
    return build;
  }
}

/**
 * The helper's first line on stdout: `ok`, or `error <why>` (then the reason is returned), null
 * when it ended or said nothing in time. What came after the line is put back in front of the
 * stream: a service that speaks first (SSH, SMTP, a file server) loses none of it.
 */
function firstLine(exec: ExecSession): Promise<string | null> {
  const stdout = exec.stream;
  exec.stderr?.resume();
  return new Promise((resolve) => {
    let pending = Buffer.alloc(0);
    const finish = (line: string | null, rest?: Buffer) => {
      clearTimeout(timer);
      stdout.off('data', onData);
      stdout.off('end', onEnd);
      stdout.pause();
      if (rest && rest.length > 0) stdout.unshift(rest);
      resolve(line);
    };
    const onData = (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      const newline = pending.indexOf(0x0a);
      if (newline >= 0) {
        const line = pending.subarray(0, newline).toString('utf8').trim();
        finish(line.startsWith('error ') ? line.slice('error '.length) : line, pending.subarray(newline + 1));
      } else if (pending.length > 4096) finish(pending.subarray(0, 200).toString('utf8'));
    };
    const onEnd = () => finish(pending.toString('utf8').trim() || null);
    const timer = setTimeout(() => finish(null), CONNECT_WAIT_MS);
    stdout.on('data', onData);
    stdout.on('end', onEnd);
  });
}
