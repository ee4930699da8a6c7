import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { share, type Subscription } from 'rxjs';
import { PlatformMetrics } from './http/metrics.ts';
import { INSTANCES } from './projections/instances.projection.ts';
import { SqliteEventStore } from './adapters/eventstore/sqlite.event-store.ts';
import { MemoryReadStore } from './adapters/readstore/memory.read-store.ts';
import { MemoryLeaseStore } from './adapters/leases/memory.lease-store.ts';
import { AesGcmSecretBox, loadMasterKey } from './adapters/secrets/aes-gcm.secret-box.ts';
import { DockerPool } from './adapters/docker/docker-pool.ts';
import { DockerodeEngines } from './adapters/docker/dockerode.engines.ts';
import { DockerodeRuntime } from './adapters/docker/dockerode.runtime.ts';
import { FileHelperBuilds } from './adapters/helper/file.helper-builds.ts';
import { platformPki } from './adapters/pki/platform-pki.ts';
import { auditRoutes } from './commands/audit/audit.routes.ts';
import { quotaRoutes } from './commands/quota/quota.routes.ts';
import { balanceRoutes } from './commands/billing/balance.routes.ts';
import { Balances } from './commands/billing/balances.ts';
import { usageRoutes } from './commands/usage/usage.routes.ts';
import { usageProjection } from './projections/usage.projection.ts';
import { instanceRoutes } from './commands/instance/instance.routes.ts';
import { Instances } from './commands/instance/instances.ts';
import { ContainerHelper } from './commands/instance/container-helper.ts';
import { ServiceAccess, ServiceGrants } from './commands/instance/service-access.ts';
import { ServiceDialer } from './commands/instance/service-dialer.ts';
import { serviceRoutes } from './commands/instance/service.routes.ts';
import { NodeGuard } from './commands/instance/node-guard.ts';
import { GpuDiscovery } from './commands/catalog/gpu-discovery.ts';
import { ServiceProxy } from './http/service-proxy.ts';
import { preflight } from './preflight.ts';
import { systemRoutes } from './commands/system.routes.ts';
import { provisionerPlugin } from './plugins/instances/provisioner.plugin.ts';
import { reconcilerPlugin } from './plugins/instances/reconciler.plugin.ts';
import { schedulerPlugin } from './plugins/instances/scheduler.plugin.ts';
import { idleStopPlugin } from './plugins/instances/idle-stop.plugin.ts';
import { arrearsPlugin } from './plugins/instances/arrears.plugin.ts';
import { livePlugin } from './plugins/live/live.plugin.ts';
import { logsPlugin } from './plugins/live/logs.plugin.ts';
import { jumpHostPlugin } from './plugins/jump-host/jump-host.plugin.ts';
import { terminalPlugin } from './plugins/terminal/terminal.plugin.ts';
import { Server as SocketServer } from 'socket.io';
import { instancesProjection } from './projections/instances.projection.ts';
import { serviceOriginsProjection } from './projections/service-origins.projection.ts';
import { imageRoutes } from './commands/catalog/image.routes.ts';
import { joinRoutes, nodeRoutes, type HasHelper } from './commands/catalog/node.routes.ts';
import { NodeAgents, requestBase } from './commands/catalog/node-agents.ts';
import { Nodes } from './commands/catalog/nodes.ts';
import { specRoutes } from './commands/catalog/spec.routes.ts';
import { CommandBus } from './commands/command-bus.ts';
import { Accounts } from './commands/user/accounts.ts';
import { TokenService } from './commands/user/token.ts';
import { userRoutes } from './commands/user/user.routes.ts';
import type { Config } from './config.ts';
import { IdempotencyGuard } from './http/idempotency.ts';
import { createHttpApp } from './http/server.ts';
import { serveConsole } from './http/static.ts';
import { PluginHost, type Plugin } from './plugins/plugin-host.ts';
import type { EventStore } from './ports/event-store.port.ts';
import type { ReadStore } from './ports/read-store.port.ts';
import type { LeaseStore } from './ports/lease.port.ts';
import type { Projection } from './projections/projection-runner.ts';
import { LeasedProjectionRunner } from './projections/leased-projection-runner.ts';
import { checkLogIdentity, type StoreDescriptions } from './projections/log-identity.ts';
import { NODES, imagesProjection, nodesProjection, specsProjection } from './projections/catalog.projection.ts';
import { usersProjection } from './projections/users.projection.ts';
import { quotasProjection } from './projections/quotas.projection.ts';
import { groupsProjection } from './projections/groups.projection.ts';
import { balancesProjection } from './projections/balances.projection.ts';
import { webhooksProjection } from './projections/webhooks.projection.ts';
import { webhookRoutes } from './commands/webhook/webhook.routes.ts';
import { webhooksPlugin } from './plugins/webhooks/webhooks.plugin.ts';

export const VERSION = '0.1.0';

export const projections: readonly Projection[] = [usersProjection, imagesProjection, specsProjection, nodesProjection, instancesProjection, webhooksProjection, usageProjection, serviceOriginsProjection, quotasProjection, groupsProjection, balancesProjection];

/** Plugins on by default; each can be switched off with TIANQI_DISABLED_PLUGINS. */
export const defaultPlugins: readonly Plugin[] = [provisionerPlugin, reconcilerPlugin, schedulerPlugin, idleStopPlugin, arrearsPlugin, livePlugin, logsPlugin, webhooksPlugin, jumpHostPlugin, terminalPlugin];

export async function openEventStore(config: Config): Promise<EventStore> {
  if (config.eventStoreUrl) {
    const { openKurrentEventStore } = await import('./adapters/eventstore/kurrent.event-store.ts');
    return openKurrentEventStore(config.eventStoreUrl);
  }
  mkdirSync(config.dataDir, { recursive: true });
  return new SqliteEventStore(join(config.dataDir, 'events.db'), { synchronous: config.sqliteSynchronous });
}

export async function openReadStore(config: Config): Promise<ReadStore> {
  if (config.mongoUrl) {
    const { openMongoReadStore } = await import('./adapters/readstore/mongo.read-store.ts');
    return openMongoReadStore(config.mongoUrl);
  }
  return new MemoryReadStore();
}

/**
 * Leases live beside the shared read models: with MongoDB, replicas share them; without it, one
 * process serves the lab and is granted every lease.
 */
export async function openLeaseStore(config: Config): Promise<LeaseStore> {
  if (config.mongoUrl) {
    const { openMongoLeaseStore } = await import('./adapters/leases/mongo.lease-store.ts');
    return openMongoLeaseStore(config.mongoUrl);
  }
  return new MemoryLeaseStore();
}

/** Where the event log and the read models are, in words (for errors; no passwords). */
export async function describeStores(config: Config): Promise<StoreDescriptions> {
  const eventStore = config.eventStoreUrl
    ? `the KurrentDB event store at ${config.eventStoreUrl.replace(/^([a-z+]+:\/\/[^:/@]*):[^@/]*@/, '$1:***@')}`
    : `the SQLite event log ${join(config.dataDir, 'events.db')}`;
  if (!config.mongoUrl) return { eventStore, readStore: 'memory' };
  const { DEFAULT_DATABASE, databaseFromUrl, redactMongoUrl } = await import('./adapters/readstore/mongo.read-store.ts');
  return { eventStore, readStore: `MongoDB database "${databaseFromUrl(config.mongoUrl) || DEFAULT_DATABASE}" at ${redactMongoUrl(config.mongoUrl)}` };
}

export interface AppOptions {
  readonly plugins?: readonly Plugin[];
  /** Where the generated first-start admin password goes (stdout by default). */
  readonly announce?: (message: string) => void;
  /** The clock time-driven behaviour goes by (scheduled stops); Date.now unless a test moves it. */
  readonly clock?: () => number;
}

/** The composition root: the one place that knows every adapter. */
export class App {
  private ready = false;
  private server?: Server;
  private following?: Subscription;
  metrics!: PlatformMetrics;
  private io?: SocketServer;
  eventStore!: EventStore;
  readStore!: ReadStore;
  leases!: LeaseStore;
  runner!: LeasedProjectionRunner;
  /** This process among the replicas: the holder name of its leases. */
  readonly replicaId: string;
  bus!: CommandBus;
  accounts!: Accounts;
  nodes!: Nodes;
  instances!: Instances;
  /** 自定义服务: who may open which service of an instance, and how it is reached. */
  services!: ServiceAccess;
  private serviceProxy?: ServiceProxy;
  /** The port form's listeners: how many listen, and the ports another process holds. */
  serviceListeners?: { listening: number; skipped: number[] };
  runtime!: DockerodeRuntime;
  /** tianqi-helper's builds (dist/helper or TIANQI_HELPER_DIR). */
  helperBuilds!: FileHelperBuilds;
  nodeAgents!: NodeAgents;
  nodeGuard!: NodeGuard;
  balances!: Balances;
  docker!: DockerPool;
  private engines?: DockerodeEngines;
  private pluginHost!: PluginHost;

  constructor(
    readonly config: Config,
    readonly logger: Logger,
    private readonly options: AppOptions = {},
  ) {
    this.replicaId = config.replicaId ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  }

  /** Address the HTTP server listens on (useful with port 0 in tests). */
  get httpPort(): number {
    const address = this.server?.address();
    return typeof address === 'object' && address ? address.port : this.config.httpPort;
  }

  async start(): Promise<void> {
    const { config, logger } = this;
    const master = loadMasterKey(config.dataDir, config.masterKey);
    if (master.source === 'created') logger.warn({ file: join(config.dataDir, 'master.key') }, 'created a new master key: back it up');
    const secrets = new AesGcmSecretBox(master.key);

    this.eventStore = await openEventStore(config);
    this.readStore = await openReadStore(config);
    const identity = await checkLogIdentity(this.eventStore, this.readStore, projections.map((p) => p.name), await describeStores(config));
    if (identity === 'adopted') logger.info('the read models record the identity of this event log from now on');
    this.leases = await openLeaseStore(config);
    const leasing = { leases: this.leases, holder: this.replicaId, timing: config.lease };
    this.runner = new LeasedProjectionRunner(this.eventStore, this.readStore, projections, logger.child({ component: 'projections' }), leasing);
    const started = performance.now();
    await this.runner.start();
    logger.info({ position: this.runner.position, ms: Math.round(performance.now() - started) }, 'read models caught up');

    this.metrics = new PlatformMetrics({
      eventStore: this.eventStore,
      projectionPositions: () => this.runner.projectionPositions,
      instancesByStatus: () => this.countBy(INSTANCES, 'status', ['creating', 'running', 'exited', 'failed']),
      nodesByStatus: () => this.countBy(NODES, 'dockerStatus', ['connected', 'failed', 'unknown']),
    });
    this.bus = new CommandBus(this.eventStore, {
      waitForProjections: (p) => this.runner.waitFor(p),
      onCommand: this.metrics.observeCommand,
      onAppended: this.metrics.observeAppended,
    });
    this.accounts = new Accounts(this.bus, this.readStore, new TokenService(secrets.deriveKey('tokens/hs256')));
    await this.bootstrapAdmin();
    // A new log has its first event now: the new read store records which log it is built from.
    if (identity === 'pending') await checkLogIdentity(this.eventStore, this.readStore, projections.map((p) => p.name), await describeStores(config));
    this.docker = new DockerPool();
    this.engines = new DockerodeEngines(this.docker);
    this.runtime = new DockerodeRuntime(this.docker);
    this.helperBuilds = new FileHelperBuilds(config.helperDir);
    this.nodeGuard = new NodeGuard(this.runtime, this.helperBuilds, config.nodeGuard);
    this.nodes = new Nodes(this.bus, this.readStore, this.engines, secrets, (target) => this.nodeGuard.remove(target), logger.child({ component: 'nodes' }),
      new GpuDiscovery(this.runtime, this.helperBuilds, config.gpuProbeImage),
      { info: (settings) => this.nodeAgents.info(settings), leave: (settings) => this.nodeAgents.leave(settings) });
    this.nodeAgents = new NodeAgents(this.bus, platformPki, secrets, this.helperBuilds, this.nodes, logger.child({ component: 'node-agents' }), this.options.clock);
    const hasHelper: HasHelper = Object.assign((arch: string) => this.helperBuilds.forArch(arch) !== null, { digest: (arch: string) => this.helperBuilds.forArch(arch)?.digest ?? null });
    const publicBase = (headers: Record<string, string | string[] | undefined>) => config.publicUrl ?? requestBase(headers, config.trustProxy);
    const targetOf = (nodeId: string) => this.nodes.target(nodeId);
    this.balances = new Balances(this.bus, this.readStore, config.prepaid, this.options.clock);
    this.instances = new Instances(this.bus, this.readStore, this.runtime, targetOf, () => this.syncReadModels(), this.eventStore, this.options.clock, config.keepGpusWhenStopped, (ownerId) => this.balances.admit(ownerId), config.containerLimits, logger.child({ component: 'instances' }));
    const dialer = new ServiceDialer(this.runtime, new ContainerHelper(this.runtime, this.helperBuilds), config.services.route);
    this.services = new ServiceAccess(this.instances, this.accounts, new ServiceGrants(secrets.deriveKey('services/hs256')), dialer, targetOf, this.bus, this.readStore, {
      ...(config.services.domain ? { domain: config.services.domain } : {}),
      ports: config.services.ports,
    });

    const app = createHttpApp({
      routes: [
        ...userRoutes(this.accounts, this.accounts.signIns),
        ...imageRoutes(this.bus, this.readStore),
        ...specRoutes(this.bus, this.readStore),
        ...nodeRoutes(this.nodes, this.readStore, hasHelper, this.nodeAgents, publicBase),
        ...joinRoutes(this.nodeAgents, publicBase),
        ...instanceRoutes(this.instances, this.runtime, targetOf, this.readStore, config.sshPort),
        ...serviceRoutes(this.instances, this.services, config.trustProxy),
        ...auditRoutes(this.eventStore, this.readStore),
        ...webhookRoutes(this.bus, this.readStore, secrets, Boolean(config.smtp)),
        ...usageRoutes(this.readStore),
        ...quotaRoutes(this.bus, this.readStore, this.accounts),
        ...balanceRoutes(this.balances, this.accounts),
        ...systemRoutes(() => preflight(config, this.helperBuilds)),
      ],
      authenticate: (token) => this.accounts.authenticate(token),
      idempotency: new IdempotencyGuard(this.bus),
      trustProxy: config.trustProxy,
      logger: logger.child({ component: 'http' }),
      version: VERSION,
      isReady: () => this.ready,
      fallback: serveConsole(),
      metrics: { registry: this.metrics.registry, ...(config.metricsToken ? { token: config.metricsToken } : {}) },
    });
    const proxy = new ServiceProxy({
      access: this.services,
      dial: (service) => dialer.dial(service),
      ...(config.services.domain ? { domain: config.services.domain } : {}),
      timeoutMs: config.services.timeoutMs,
      trustProxy: config.trustProxy,
      isPlatformToken: (token) => this.accounts.isPlatformToken(token),
      logger: logger.child({ component: 'service-proxy' }),
      onUse: (instanceId) => this.instances.noteServiceUse(instanceId),
    });
    this.serviceProxy = proxy;
    const api = app.callback();
    // Services' requests go to the proxy before Koa: streamed as they come, never parsed here.
    const server = createServer((req, res) => {
      const address = proxy.match(req);
      if (address) void proxy.handle(req, res, address);
      else void api(req, res);
    });
    server.on('upgrade', (req, socket, head) => {
      const address = proxy.match(req);
      if (address) void proxy.upgrade(req, socket, head, address);
      else if (!(req.url ?? '').startsWith('/socket.io/')) socket.end('HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
    });
    this.server = await new Promise<Server>((resolve, reject) => {
      server.listen(config.httpPort, config.host, () => resolve(server)).on('error', reject);
    });
    this.server.keepAliveTimeout = 65_000;
    if (config.services.ports) this.serviceListeners = await proxy.listen(config.services.ports, config.host);
    // No CORS: the console is served from this origin. 1 MB messages, like HTTP bodies. Upgrades
    // that are not socket.io's are the service proxy's (above), not to be cut by engine.io.
    this.io = new SocketServer(this.server, { serveClient: false, maxHttpBufferSize: 1024 * 1024, destroyUpgrade: false });

    // With in-memory read models every process is a lab of its own: its singletons simply run (a
    // lease would only add a way to stop them, after a pause longer than its TTL).
    this.pluginHost = new PluginHost([...defaultPlugins, ...(this.options.plugins ?? [])], config.disabledPlugins, logger, this.readStore.durable ? leasing : undefined);
    const head = await this.eventStore.headPosition();
    const events$ = this.eventStore.subscribe(head).pipe(share());
    this.following = this.metrics.follow(events$);
    proxy.follow(events$);
    await this.pluginHost.start({
      events$,
      eventStore: this.eventStore,
      bus: this.bus,
      readStore: this.readStore,
      config,
      waitForProjections: (p) => this.runner.waitFor(p),
      runtime: this.runtime,
      nodes: this.nodes,
      instances: this.instances,
      io: this.io,
      accounts: this.accounts,
      authenticate: (token) => this.accounts.authenticate(token),
      secrets,
      helperBuilds: this.helperBuilds,
      nodeGuard: this.nodeGuard,
      balances: this.balances,
      clock: this.options.clock ?? Date.now,
    });
    this.ready = true;
    logger.info({ http: `${config.host}:${this.httpPort}`, plugins: this.pluginHost.names, replica: this.replicaId }, 'TianQi is ready');
  }

  async stop(): Promise<void> {
    this.ready = false;
    const server = this.server;
    await this.pluginHost?.stop();
    this.following?.unsubscribe();
    this.io?.disconnectSockets(true);
    this.serviceProxy?.close();
    if (server) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const force = setTimeout(() => server.closeAllConnections(), 5_000).unref();
      await closed;
      clearTimeout(force);
    }
    await this.engines?.close();
    await this.runner?.stop();
    await this.leases?.close();
    await this.readStore?.close();
    await this.eventStore?.close();
  }

  private async countBy(collection: string, field: string, values: string[]): Promise<Record<string, number>> {
    const counts: Record<string, number> = {};
    for (const value of values) counts[value] = await this.readStore.collection(collection).count({ [field]: value });
    return counts;
  }

  /** Waits until the read models show every event appended so far. */
  async syncReadModels(): Promise<void> {
    const head = await this.eventStore.headPosition();
    if (head !== undefined) await this.runner.waitFor(head);
  }

  private async bootstrapAdmin(): Promise<void> {
    if ((await this.accounts.count()) > 0) return;
    const generated = !this.config.adminPassword;
    const password = this.config.adminPassword ?? randomBytes(12).toString('base64url');
    if (!(await this.accounts.bootstrapAdmin(password))) return;
    if (generated) {
      // Printed once, outside the JSON log, so it is not kept in log files.
      const announce = this.options.announce ?? ((m: string) => process.stdout.write(m));
      announce(`\n  First start: created user "admin" with password  ${password}\n  Sign in and change it.\n\n`);
    } else {
      this.logger.info('first start: created user "admin" with the password from TIANQI_ADMIN_PASSWORD');
    }
  }
}
