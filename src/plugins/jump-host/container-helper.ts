import type { ContainerRuntime, NodeTarget } from '../../ports/container-runtime.port.ts';
import type { HelperBuild, HelperBuilds } from '../../ports/helper-builds.port.ts';
import { tarOf } from '../../commands/instance/tar.ts';

/** Where in a container the helper goes: a directory per build, so an upgrade never runs an old one. */
export const HELPER_ROOT = '.tianqi';

/** Why the helper cannot serve a container: said to the user as it is. */
export class HelperUnavailableError extends Error {}

/** Containers remembered as holding the helper; a forgotten one is only checked again. */
const REMEMBERED = 4_096;

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
