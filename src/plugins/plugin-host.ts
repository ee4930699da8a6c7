import type { Logger } from 'pino';
import type { Observable } from 'rxjs';
import type { Server as SocketServer } from 'socket.io';
import type { Accounts, Actor } from '../commands/user/accounts.ts';
import type { CommandBus } from '../commands/command-bus.ts';
import type { Nodes } from '../commands/catalog/nodes.ts';
import type { Instances } from '../commands/instance/instances.ts';
import type { ContainerRuntime } from '../ports/container-runtime.port.ts';
import type { Config } from '../config.ts';
import type { EventStore, RecordedEvent } from '../ports/event-store.port.ts';
import type { ReadStore } from '../ports/read-store.port.ts';
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
}

export interface PluginHandle {
  stop(): Promise<void>;
}

/** An extension that reacts to the event stream (jump host, web terminal, webhooks, reconciler…). */
export interface Plugin {
  readonly name: string;
  start(context: PluginContext): Promise<PluginHandle>;
}

/** Starts the enabled plugins in order and stops them in reverse; a plugin that fails to start stops the boot. */
export class PluginHost {
  private readonly running: { name: string; handle: PluginHandle }[] = [];

  constructor(
    private readonly plugins: readonly Plugin[],
    private readonly disabled: ReadonlySet<string>,
    private readonly logger: Logger,
  ) {}

  async start(context: Omit<PluginContext, 'logger'>): Promise<void> {
    for (const plugin of this.plugins) {
      if (this.disabled.has(plugin.name)) {
        this.logger.info({ plugin: plugin.name }, 'plugin switched off in config');
        continue;
      }
      const logger = this.logger.child({ plugin: plugin.name });
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
