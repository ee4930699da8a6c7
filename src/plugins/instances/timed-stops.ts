import type { Logger } from 'pino';
import type { PluginContext } from '../plugin-host.ts';

/** Engine stops a time-driven plugin has under way at most: 500 instances due at 18:00 do not all hit their nodes at once. */
export const MAX_STOPS_AT_ONCE = 32;

/**
 * What the time-driven plugins (定时关机, 空闲自动关机) share: a pass every `tickMs`, one at a time
 * (a slow read never piles passes up), and the stops they decide run beside each other, at most
 * MAX_STOPS_AT_ONCE, each as any stop is run (one at a time per instance; an unreachable node runs
 * it when it is back). `stop` waits for the pass and the stops under way.
 */
export class TimedStops {
  private stopped = false;
  private passing: Promise<void> = Promise.resolve();
  private readonly underWay = new Map<string, Promise<void>>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly ctx: PluginContext,
    private readonly log: Logger,
    private readonly correlationId: string,
    tickMs: number,
    pass: (stops: TimedStops) => Promise<void>,
  ) {
    this.timer = setInterval(() => {
      this.passing = this.passing
        .then(() => (this.stopped ? undefined : pass(this)))
        .catch((err: unknown) => log.error({ err }, `${correlationId} pass failed`));
    }, tickMs);
  }

  /** Whether a pass should end here (the plugin is stopping), or skip an instance (its stop runs, or too many do). */
  get ended(): boolean {
    return this.stopped;
  }

  canStop(instanceId: string): boolean {
    return !this.underWay.has(instanceId) && this.underWay.size < MAX_STOPS_AT_ONCE;
  }

  /** Runs the stop the instance's stream now asks for, without waiting for the engine. */
  run(instanceId: string): void {
    const job = this.ctx.instances.runPending(instanceId, { correlationId: this.correlationId })
      .catch((err: unknown) => this.log.warn({ err, instanceId }, 'stop requested; the engine did not do it yet'))
      .finally(() => this.underWay.delete(instanceId));
    this.underWay.set(instanceId, job);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.passing;
    await Promise.allSettled([...this.underWay.values()]);
  }
}
