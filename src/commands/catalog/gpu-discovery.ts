import { GPU_QUERY, mergeInventory, parseCudaVersion, parseGpuQuery, type GpuInventory } from '../../domain/catalog/gpu-inventory.ts';
import type { ContainerRuntime, NodeTarget, SystemContainer } from '../../ports/container-runtime.port.ts';
import type { HelperBuilds } from '../../ports/helper-builds.port.ts';
import { randomBytes } from 'node:crypto';
import { tarOf } from '../instance/tar.ts';

/**
 * Card discovery through the engine: nvidia-smi in a short-lived container given every card. The
 * container is made from the node guard's one-file image (the NVIDIA container toolkit mounts
 * nvidia-smi into it), or from TIANQI_GPU_PROBE_IMAGE where set (an image the node has, e.g. a
 * CUDA base image; the tests' stand-in).
 */
export class GpuDiscovery {
  constructor(
    private readonly runtime: ContainerRuntime,
    private readonly builds: HelperBuilds,
    private readonly probeImage?: string,
  ) {}

  /** The inventory after this read (missing cards unavailable); undefined where the node has no NVIDIA driver and never had cards. */
  async read(target: NodeTarget, previous: GpuInventory | undefined): Promise<GpuInventory | undefined> {
    const image = await this.image(target);
    const query = await this.runtime.runGpuQuery(target, image, GPU_QUERY);
    if (query === null) {
      const error = 'the engine has no NVIDIA device driver (is the NVIDIA container toolkit installed?)';
      return { ...mergeInventory(previous, { error }), noDeviceDriver: true };
    }
    if ('error' in query) return mergeInventory(previous, { error: query.error });
    const parsed = parseGpuQuery(query.stdout);
    if (!parsed) return mergeInventory(previous, { error: `nvidia-smi listed no cards: ${query.stdout.trim().split('\n')[0]?.slice(0, 200) ?? ''}` });
    const header = await this.runtime.runGpuQuery(target, image, []);
    const cudaVersion = header && 'stdout' in header ? parseCudaVersion(header.stdout) : null;
    return mergeInventory(previous, { ...parsed, cudaVersion });
  }

  /** Whether HAMi-core's library is in the node's HAMi-core directory (vGPU specs need it). */
  async hamiCorePresent(target: NodeTarget, dir: string): Promise<boolean> {
    return this.runtime.hostFileExists(target, await this.image(target), dir, 'libvgpu.so');
  }

  /** The size of the filesystem holding `dir` on the node (the engine's data directory), in bytes. */
  async diskSize(target: NodeTarget, dir: string): Promise<number> {
    const helper = await this.helperImage(target);
    const { exitCode, output } = await this.runtime.runSystemTask(target, {
      ...helper, name: `tianqi-disk-probe-${randomBytes(4).toString('hex')}`, labels: { 'tianqi.role': 'disk-probe' },
      cmd: ['/tianqi-helper', 'statfs', '/probe'], binds: [`${dir}:/probe:ro`],
    });
    const total = /^(\d+) \d+$/m.exec(output)?.[1];
    if (exitCode !== 0 || !total) throw new Error(`statfs of ${dir} on the node failed: ${output.trim().slice(0, 200)}`);
    return Number(total);
  }

  private async image(target: NodeTarget): Promise<SystemContainer> {
    const labels = { 'tianqi.role': 'gpu-probe' };
    if (this.probeImage) {
      const image = this.probeImage;
      return { name: '', image, labels, capAdd: [], cmd: [], rootfs: () => { throw new Error(`the GPU probe image ${image} is not on the node`); } };
    }
    return { ...(await this.helperImage(target)), labels };
  }

  /** The node guard's one-file image: tianqi-helper alone. */
  private async helperImage(target: NodeTarget): Promise<SystemContainer> {
    const labels = {};
    const arch = await this.runtime.architecture(target);
    const build = this.builds.forArch(arch);
    if (!build) throw new Error(`card discovery needs tianqi-helper built for ${arch}`);
    return {
      name: '', image: `tianqi/node-guard:${build.digest}`, labels, capAdd: [], cmd: [],
      rootfs: () => tarOf([{ name: 'tianqi-helper', mode: 0o755, content: build.binary }]),
    };
  }
}
