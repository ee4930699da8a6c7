import { createHash } from 'node:crypto';
import type { ContainerRuntime, NodeTarget } from '../../ports/container-runtime.port.ts';
import { EngineRejectedError, EngineUnavailableError } from '../../ports/container-runtime.port.ts';
import type { HelperBuilds } from '../../ports/helper-builds.port.ts';
import { HAMI_LIBRARY, VGPU_HOST_DIR } from './container-plan.ts';
import { tarOf } from './tar.ts';

/** The label that marks the node guard (not `managed-by=tianqi`: it is no instance). */
export const NODE_GUARD_LABELS = { 'tianqi.role': 'node-guard' } as const;
/** How long a node counts as guarded after the guard was seen running. */
const RECHECK_MS = 60_000;

/** What a node's guard lets tenants reach besides the internet: the node's egress allow-list. */
export interface GuardSettings {
  readonly egressAllow?: readonly string[];
}

/**
 * The node guard: `tianqi-helper guard` in a container of the node's own (host network,
 * NET_ADMIN only, restarted always), which drops what tenant bridges send to the node's own
 * addresses, to private, link-local and CGNAT ranges and to the node's own subnets, except the
 * node's allow-list. Instances are placed on a node only once it runs; the image is imported from
 * the helper build (no registry needed). One guard per node: a guard of another build or other
 * settings is replaced. TIANQI_NODE_GUARD=0 switches it off.
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
  async ensure(target: NodeTarget, needs: { vgpu: boolean } = { vgpu: false }, settings: GuardSettings = {}): Promise<void> {
    if (!this.enabled && !needs.vgpu) return;
    const allow = [...(settings.egressAllow ?? [])].sort();
    // Instances placed on one node at once wait for one check (per setting: a changed allow-list checks again).
    const key = `${target.nodeId}|${allow.join(',')}`;
    let running = this.inFlight.get(key);
    if (!running) {
      running = this.check(target, key, allow).finally(() => this.inFlight.delete(key));
      this.inFlight.set(key, running);
    }
    return running;
  }

  private async check(target: NodeTarget, key: string, allow: readonly string[]): Promise<void> {
    const last = this.checked.get(key);
    if (last !== undefined && this.clock() - last < RECHECK_MS) return;
    const build = await this.build(target);
    try {
      const allowing = this.enabled && allow.length > 0;
      const settingsTag = allowing ? `-${createHash('sha256').update(allow.join(',')).digest('hex').slice(0, 8)}` : '';
      await this.runtime.ensureSystemContainer(target, {
        name: `tianqi-node-guard-${build.digest}${this.enabled ? '' : '-no-firewall'}${settingsTag}`,
        image: `tianqi/node-guard:${build.digest}`,
        rootfs: () => tarOf([{ name: 'tianqi-helper', mode: 0o755, content: build.binary }]),
        cmd: ['/tianqi-helper', 'guard', ...(this.enabled ? [] : ['--no-firewall']), ...(allowing ? ['--allow', allow.join(',')] : []), '--preload', HAMI_LIBRARY],
        labels: { ...NODE_GUARD_LABELS },
        supersedes: { ...NODE_GUARD_LABELS },
        capAdd: this.enabled ? ['NET_ADMIN'] : [],
        binds: [`${VGPU_HOST_DIR}:/vgpu`],
      });
    } catch (error) {
      if (error instanceof EngineRejectedError || error instanceof EngineUnavailableError) throw error;
      throw new EngineRejectedError(500, `the node guard could not start: ${error instanceof Error ? error.message : String(error)}`);
    }
    this.forget(target.nodeId);
    this.checked.set(key, this.clock());
  }

  /**
   * Takes the guard off a node that leaves the platform: its container removed, then its rules
   * (which outlive a stopped guard on purpose) removed by `tianqi-helper guard --remove` run once.
   * While tenant containers are left on the engine (another deployment's, or leftovers) the guard
   * stays, for their sake. A node that never ran a guard is left alone (nothing imported).
   */
  async remove(target: NodeTarget): Promise<GuardRemoval> {
    this.forget(target.nodeId);
    const tenants = await this.runtime.listManaged(target);
    if (tenants.length > 0) return { removed: false, reason: `${tenants.length} tenant container(s) still on the engine` };
    const guards = await this.runtime.removeSystemContainers(target, NODE_GUARD_LABELS);
    if (guards === 0) return { removed: false, reason: 'no node guard ran there' };
    const build = await this.build(target);
    const { exitCode, output } = await this.runtime.runSystemTask(target, {
      name: `tianqi-node-guard-remove-${build.digest}`,
      image: `tianqi/node-guard:${build.digest}`,
      rootfs: () => tarOf([{ name: 'tianqi-helper', mode: 0o755, content: build.binary }]),
      cmd: ['/tianqi-helper', 'guard', '--remove'],
      labels: { 'tianqi.role': 'node-guard-remove' },
      capAdd: ['NET_ADMIN'],
    });
    if (exitCode !== 0) throw new EngineRejectedError(500, `the node guard's rules could not be removed: ${output || `exit code ${exitCode}`}`);
    return { removed: true };
  }

  private forget(nodeId: string): void {
    for (const key of this.checked.keys()) if (key.startsWith(`${nodeId}|`)) this.checked.delete(key);
  }

  private async build(target: NodeTarget) {
    const arch = await this.runtime.architecture(target);
    const build = this.builds.forArch(arch);
    if (!build) {
      throw new EngineRejectedError(500, `the node guard needs tianqi-helper built for ${arch} (npm run build:helper; or TIANQI_NODE_GUARD=0 to run tenants unguarded)`);
    }
    return build;
  }
}

/** What became of a node's guard when the node left the platform. */
export type GuardRemoval = { readonly removed: true } | { readonly removed: false; readonly reason: string };
