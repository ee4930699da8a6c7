import type { ContainerRuntime, NodeTarget } from '../../ports/container-runtime.port.ts';
import { EngineRejectedError, EngineUnavailableError } from '../../ports/container-runtime.port.ts';
import type { HelperBuilds } from '../../ports/helper-builds.port.ts';
import { HAMI_LIBRARY, VGPU_HOST_DIR } from './container-plan.ts';
import { tarOf } from './tar.ts';

/** The label that marks the node guard (not `managed-by=tianqi`: it is no instance). */
export const NODE_GUARD_LABELS = { 'tianqi.role': 'node-guard' } as const;
/** How long a node counts as guarded after the guard was seen running. */
const RECHECK_MS = 60_000;

/**
 * The node guard: `tianqi-helper guard` in a container of the node's own (host network,
 * NET_ADMIN only, restarted always), which drops what tenant bridges send to the node's own
 * addresses. Instances are placed on a node only once it runs; the image is imported from the
 * helper build (no registry needed). TIANQI_NODE_GUARD=0 switches it off.
 */
export class NodeGuard {
  /** Per node (and whether only for vGPU): when its guard was last seen running. */
  private readonly checked = new Map<string, number>();
  private readonly inFlight = new Map<string, Promise<void>>();

  constructor(
    private readonly runtime: ContainerRuntime,
    private readonly builds: HelperBuilds,
    private readonly enabled: boolean,
    private readonly clock: () => number = Date.now,
  ) {}

  /**
   * Runs the node's guard unless it runs already. With `firewall` off (TIANQI_NODE_GUARD=0) it
   * only keeps the vGPU preload file, which a vGPU instance needs in any case.
   */
  async ensure(target: NodeTarget, needs: { vgpu: boolean } = { vgpu: false }): Promise<void> {
    if (!this.enabled && !needs.vgpu) return;
    // Instances placed on one node at once wait for one check.
    let running = this.inFlight.get(target.nodeId);
    if (!running) {
      running = this.check(target).finally(() => this.inFlight.delete(target.nodeId));
      this.inFlight.set(target.nodeId, running);
    }
    return running;
  }

  private async check(target: NodeTarget): Promise<void> {
    const last = this.checked.get(target.nodeId);
    if (last !== undefined && this.clock() - last < RECHECK_MS) return;
    const arch = await this.runtime.architecture(target);
    const build = this.builds.forArch(arch);
    if (!build) {
      throw new EngineRejectedError(500, `the node guard needs tianqi-helper built for ${arch} (npm run build:helper; or TIANQI_NODE_GUARD=0 to run tenants unguarded)`);
    }
    try {
      await this.runtime.ensureSystemContainer(target, {
        name: `tianqi-node-guard-${build.digest}${this.enabled ? '' : '-no-firewall'}`,
        image: `tianqi/node-guard:${build.digest}`,
        rootfs: () => tarOf([{ name: 'tianqi-helper', mode: 0o755, content: build.binary }]),
        cmd: ['/tianqi-helper', 'guard', ...(this.enabled ? [] : ['--no-firewall']), '--preload', HAMI_LIBRARY],
        labels: { ...NODE_GUARD_LABELS },
        capAdd: this.enabled ? ['NET_ADMIN'] : [],
        binds: [`${VGPU_HOST_DIR}:/vgpu`],
      });
    } catch (error) {
      if (error instanceof EngineRejectedError || error instanceof EngineUnavailableError) throw error;
      throw new EngineRejectedError(500, `the node guard could not start: ${error instanceof Error ? error.message : String(error)}`);
    }
    this.checked.set(target.nodeId, this.clock());
  }
}
