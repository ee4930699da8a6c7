import type { Logger } from 'pino';
import { share, type Observable, type Subscription } from 'rxjs';
import type { Server as SocketServer } from 'socket.io';
import type { Accounts, Actor } from '../commands/user/accounts.ts';
import type { CommandBus } from '../commands/command-bus.ts';
import type { Nodes } from '../commands/catalog/nodes.ts';
import type { Instances } from '../commands/instance/instances.ts';
import type { NodeGuard } from '../commands/instance/node-guard.ts';
import type { Balances } from '../commands/billing/balances.ts';
import type { ContainerRuntime } from '../ports/container-runtime.port.ts';
import type { Config } from '../config.ts';
import type { EventStore, RecordedEvent } from '../ports/event-store.port.ts';
import { LeaseKeeper, type Leasing } from '../ports/lease.port.ts';
import type { ReadStore } from '../ports/read-store.port.ts';
import type { HelperBuilds } from '../ports/helper-builds.port.ts';
import type { SecretBox } from '../ports/secret-box.port.ts';

export interface PluginContext {
  /** Live events from the moment the plugin starts; `eventStore.subscribe(p)` for catch-up from a checkpoint. */
  readonly events$: Observable<RecordedEvent>;
  readonly eventStore: EventStore;
  readonly bus: CommandBus;
  readonly readStore: ReadStore;
  readonly config: Config;
  readonly logger: Logger;
  /** Resolves when the read models show everything up to `position`. */
  readonly waitForProjections: (position: number) => Promise<boolean>;
  /** Container operations on the nodes' engines. */
  readonly runtime: ContainerRuntime;
  readonly nodes: Nodes;
  readonly instances: Instances;
  /** socket.io on the HTTP port; each plugin adds its namespace. */
  readonly io: SocketServer;
  readonly accounts: Accounts;
  /** The actor behind a bearer token, or null (bad, expired, disabled). */
  readonly authenticate: (token: string) => Promise<Actor | null>;
  /** Opens secrets sealed in events (webhook signing keys). */
  readonly secrets: SecretBox;
  /** Builds of tianqi-helper: SFTP and forwarding in containers, the node guard. */
  readonly helperBuilds: HelperBuilds;
  /** The node guard each node runs before tenants are placed there (one per replica). */
  readonly nodeGuard: NodeGuard;
  /** Prepaid balances (TIANQI_PREPAID): the arrears check. */
  readonly balances: Balances;
  /** The platform's clock in ms (Date.now; tests move it): what time-driven plugins go by. */
  readonly clock: () => number;
}

export interface PluginHandle {
  stop(): Promise<void>;
}

/** An extension that reacts to the event stream (jump host, web terminal, webhooks, reconciler…). */
export interface Plugin {
  readonly name: string;
  /**
   * Runs in one replica at a time, the one holding the lease `plugin:<name>` (webhook deliveries,
   * provisioning, reconciling); the others start it when they take the lease over. Plugins that
   * serve connections (terminal, jump host, socket.io) run in every replica.
   */
  readonly singleton?: boolean;
  start(context: PluginContext): Promise<PluginHandle>;
}

/** Starts the enabled plugins in order and stops them in reverse; a plugin that fails to start stops the boot. */
export class PluginHost {
  private readonly running: { name: string; handle: PluginHandle }[] = [];

  constructor(
    private readonly plugins: readonly Plugin[],
    private readonly disabled: ReadonlySet<string>,
    private readonly logger: Logger,
    /** Without it (one process) singletons simply run. */
    private readonly leasing?: Leasing,
  ) {}

  async start(context: Omit<PluginContext, 'logger'>): Promise<void> {
    for (const plugin of this.plugins) {
      if (this.disabled.has(plugin.name)) {
        this.logger.info({ plugin: plugin.name }, 'plugin switched off in config');
        continue;
      }
      const logger = this.logger.child({ plugin: plugin.name });
      if (plugin.singleton && this.leasing) {
        const leased = new LeasedPlugin(plugin, { ...context, logger }, this.leasing);
        this.running.push({ name: plugin.name, handle: leased });
        await leased.start();
        continue;
      }
      const handle = await plugin.start({ ...context, logger });
      this.running.push({ name: plugin.name, handle });
      logger.info('plugin started');
    }
  }

  get names(): string[] {
    return this.running.map((p) => p.name);
  }

  async stop(): Promise<void> {
    while (this.running.length > 0) {
      const { name, handle } = this.running.pop()!;
      try {
        await handle.stop();
      } catch (err) {
        this.logger.error({ err, plugin: name }, 'plugin failed to stop cleanly');
      }
    }
  }
}

/**
 * Runs a singleton plugin while this replica holds its lease: starts it when the lease is taken,
 * stops it as soon as the lease is lost, and releases the lease after stopping it on shutdown, so
 * another replica takes over at once. A plugin taken over resumes from durable state (read models,
 * the event log): it starts once the read models show the log's head, with a live stream that
 * begins right after that head.
 */
class LeasedPlugin implements PluginHandle {
  private readonly keeper: LeaseKeeper;
  private handle?: PluginHandle;
  private subscription?: Subscription;
  private changes: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly plugin: Plugin,
    private readonly context: PluginContext,
    private readonly leasing: Leasing,
  ) {
    this.keeper = new LeaseKeeper(leasing.leases, `plugin:${plugin.name}`, leasing.holder, leasing.timing, context.logger);
  }

  async start(): Promise<void> {
    const { logger } = this.context;
    // At boot it shares the app's live stream, and a failure stops the boot, as without leases.
    if (await this.keeper.start()) {
      this.handle = await this.plugin.start(this.context);
      logger.info('plugin started (this replica holds its lease)');
    } else {
      const holder = (await this.leasing.leases.holderOf(this.keeper.name))?.holder;
      logger.info({ holder }, 'plugin left to the replica that holds its lease');
    }
    this.subscription = this.keeper.held$.subscribe(() => this.settle());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.subscription?.unsubscribe();
    await this.changes;
    const handle = this.handle;
    this.handle = undefined;
    try {
      await handle?.stop();
    } finally {
      await this.keeper.stop();
    }
  }

  /** Brings the plugin in line with the lease; one change at a time, in order. */
  private settle(): void {
    this.changes = this.changes.then(async () => {
      if (this.stopped) return;
      const { logger } = this.context;
      if (!this.keeper.held && this.handle) {
        const handle = this.handle;
        this.handle = undefined;
        logger.warn('lost the lease: stopping the plugin here');
        await handle.stop().catch((err: unknown) => logger.error({ err }, 'plugin failed to stop cleanly'));
      } else if (this.keeper.held && !this.handle) {
        try {
          this.handle = await this.takeOver();
          if (this.handle) logger.info('took the plugin over (this replica holds its lease now)');
        } catch (err) {
          logger.error({ err }, 'plugin failed to start after taking its lease; trying again');
          setTimeout(() => this.settle(), this.leasing.timing.renewEveryMs).unref();
        }
      }
    });
  }

  private async takeOver(): Promise<PluginHandle | undefined> {
    const { eventStore, waitForProjections } = this.context;
    const head = (await eventStore.headPosition()) ?? 0;
    while (!(await waitForProjections(head))) {
      if (!this.keeper.held || this.stopped) return undefined;
    }
    if (!this.keeper.held || this.stopped) return undefined;
    const events$ = eventStore.subscribe(head).pipe(share());
    return this.plugin.start({ ...this.context, events$ });
  }
}
