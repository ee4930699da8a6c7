import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { DEFAULT_CONTAINER_LIMITS } from './commands/instance/container-plan.ts';
import { zodFields } from './http/errors.ts';
import type { ContainerLimits } from './ports/container-runtime.port.ts';

const port = z.coerce.number().int().min(0).max(65_535);

/** 200 ports below Linux's ephemeral range (32768–60999), clear of the HTTP (8080) and SSH (2026) defaults. */
export const DEFAULT_SERVICE_PORTS = '28000-28199';

const Env = z.object({
  TIANQI_DATA_DIR: z.string().default('./data'),
  TIANQI_HTTP_PORT: port.default(8080),
  TIANQI_SSH_PORT: port.default(2026),
  TIANQI_HOST: z.string().default('0.0.0.0'),
  TIANQI_ADMIN_PASSWORD: z.string().min(8, 'must be at least 8 characters').optional(),
  TIANQI_EVENTSTORE_URL: z.string().regex(/^(kurrentdb|esdb|kdb)(\+discover)?:\/\//, 'must start with kurrentdb:// or esdb://').optional(),
  TIANQI_MONGO_URL: z.string().regex(/^mongodb(\+srv)?:\/\//, 'must start with mongodb:// or mongodb+srv://').optional(),
  TIANQI_MASTER_KEY: z.string().optional(),
  TIANQI_POLL_INTERVAL_MS: z.coerce.number().int().min(1_000).default(30_000),
  TIANQI_SCHEDULER_TICK_MS: z.coerce.number().int().min(50).max(5_000).default(1_000),
  TIANQI_IDLE_TICK_MS: z.coerce.number().int().min(50).max(300_000).default(30_000),
  TIANQI_PREPAID: z.enum(['0', '1']).default('0'),
  TIANQI_GPU_PROBE_IMAGE: z.string().max(255).optional(),
  TIANQI_LOW_BALANCE: z.coerce.number().min(0).max(1_000_000).default(10),
  TIANQI_BILLING_TICK_MS: z.coerce.number().int().min(50).max(600_000).default(30_000),
  TIANQI_TIME_ZONE: z.string().default('Asia/Shanghai').refine((zone) => {
    try {
      new Intl.DateTimeFormat('en', { timeZone: zone });
      return true;
    } catch {
      return false;
    }
  }, 'must be an IANA time zone such as Asia/Shanghai'),
  TIANQI_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  /** Comma-separated plugin names to switch off, e.g. `jump-host,webhooks`. */
  TIANQI_DISABLED_PLUGINS: z.string().default(''),
  /** `FULL` makes every SQLite append survive a power loss too (one fsync per append). */
  TIANQI_SQLITE_SYNCHRONOUS: z.enum(['NORMAL', 'FULL']).default('NORMAL'),
  /** Bearer token a Prometheus scraper may use for GET /metrics (admins' tokens work too). */
  TIANQI_METRICS_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  TIANQI_SMTP_URL: z.string().regex(/^smtps?:\/\/[^\s]+$/, 'must be smtp://[user:password@]host[:port] or smtps://…').optional(),
  TIANQI_SMTP_FROM: z.string().min(3).max(320).default('TianQi GPU Manager <noreply@localhost>'),
  /** How long a replica's lease on singleton work lasts unrenewed: the takeover time after a crash. */
  TIANQI_LEASE_TTL_MS: z.coerce.number().int().min(1_000).default(15_000),
  TIANQI_LEASE_RENEW_MS: z.coerce.number().int().min(100).default(5_000),
  /** This replica's name as a lease holder; unique per replica. Kept across restarts, it takes its leases back at once after a crash. */
  /** `1` (or a count) behind that many reverse proxies: the client address comes from X-Forwarded-For. */
  TIANQI_TRUST_PROXY: z.coerce.number().int().min(0, 'must be 0, 1 or the number of proxies').max(10, 'at most 10 proxies').default(0),
  /** Limits of every instance's container (see DEFAULT_CONTAINER_LIMITS). */
  TIANQI_CONTAINER_PIDS_LIMIT: z.coerce.number().int().min(0).max(4_194_304).optional(),
  TIANQI_CONTAINER_LOG_MAX_SIZE_MB: z.coerce.number().int().min(1).max(10_240).optional(),
  TIANQI_CONTAINER_LOG_MAX_FILES: z.coerce.number().int().min(1).max(100).optional(),
  TIANQI_CONTAINER_NO_NEW_PRIVILEGES: z.enum(['0', '1']).optional(),
  TIANQI_CONTAINER_CAP_DROP: z.string().regex(/^(none|[A-Z_]+(,[A-Z_]+)*)$/, 'comma-separated capability names, e.g. NET_RAW,MKNOD, or none').optional(),
  /** `0`: no node guard (tenant containers may reach the node's own ports). */
  TIANQI_NODE_GUARD: z.enum(['0', '1']).default('1'),
  TIANQI_KEEP_GPUS_WHEN_STOPPED: z.enum(['0', '1']).default('0'),
  /** Builds of tianqi-helper (`linux-<arch>/tianqi-helper`), made by scripts/build-helper.ts. */
  TIANQI_HELPER_DIR: z.string().optional(),
  /** Host name (and :port) under which each service gets an origin of its own: `<port>-<instance id>.<domain>` (wildcard DNS). */
  /** The platform's URL as GPU servers reach it (join commands); default: the URL the admin's browser uses. */
  TIANQI_PUBLIC_URL: z.string().regex(/^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/, 'must be http(s)://host[:port][/path]').optional(),
  TIANQI_SERVICE_DOMAIN: z.string().regex(/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$/, 'a host name such as svc.gpu.example.com (lower case), optionally with :port').optional(),
  /**
   * The port form of service links: each open service gets a port of this range on the platform's
   * host (`first-last`), an origin of its own; `off` where only the host form is wanted.
   */
  TIANQI_SERVICE_PORTS: z.string().regex(/^(off|[0-9]{1,5}-[0-9]{1,5})$/, 'a range such as 28000-28199, or off').default(DEFAULT_SERVICE_PORTS)
    .refine((v) => v === 'off' || (() => {
      const [min, max] = v.split('-').map(Number) as [number, number];
      return min >= 1024 && max <= 65_535 && min <= max && max - min < 10_000;
    })(), 'the range must lie within 1024–65535, first ≤ last, at most 10000 ports'),
  /** How the proxy reaches a service: `auto` dials the container directly on a node served by a local socket, else through the engine; `tunnel`: always through the engine. */
  TIANQI_SERVICE_ROUTE: z.enum(['auto', 'tunnel']).default('auto'),
  /** How long a service may take to start answering a proxied request before it is a 504. */
  TIANQI_SERVICE_TIMEOUT_MS: z.coerce.number().int().min(1_000).max(3_600_000).default(60_000),
  TIANQI_REPLICA_ID: z.string().regex(/^[\w.:-]{1,100}$/, 'letters, digits and . _ : - only, at most 100').optional(),
});

export interface Config {
  readonly dataDir: string;
  readonly httpPort: number;
  readonly sshPort: number;
  readonly host: string;
  readonly adminPassword?: string;
  readonly eventStoreUrl?: string;
  readonly mongoUrl?: string;
  readonly masterKey?: string;
  readonly pollIntervalMs: number;
  /** How often the scheduler looks for due stops: a stop fires at most this late (plus the stop itself). */
  readonly schedulerTickMs: number;
  /** How often the idle auto-stop looks at running instances (their samples come every TIANQI_POLL_INTERVAL_MS). */
  readonly idleTickMs: number;
  /**
   * 预付费 (TIANQI_PREPAID): users pay from a balance admins credit; creates and starts need a
   * positive balance and running instances stop when it is used up. `lowBalance` (currency) is
   * when the owner is warned; `billingTickMs` how often balances are checked.
   */
  /** TIANQI_GPU_PROBE_IMAGE: the image card discovery runs nvidia-smi in (default: the node guard's). */
  readonly gpuProbeImage?: string;
  readonly prepaid: { readonly enabled: boolean; readonly lowBalance: number; readonly tickMs: number };
  /** Times in messages to people (group bots): TIANQI_TIME_ZONE, an IANA zone. */
  readonly timeZone: string;
  readonly logLevel: string;
  readonly disabledPlugins: ReadonlySet<string>;
  readonly sqliteSynchronous: 'NORMAL' | 'FULL';
  readonly metricsToken?: string;
  /** The SMTP relay for email notifications (TIANQI_SMTP_URL; its password is never logged), and the sender. */
  readonly smtp?: { readonly url: string; readonly from: string };
  /** Leases of the projections and singleton plugins among replicas (MongoDB `leases`). */
  readonly lease: { readonly ttlMs: number; readonly renewEveryMs: number };
  readonly replicaId?: string;
  /** Reverse proxies in front of the HTTP port (0: none); the client is that many hops from the right of X-Forwarded-For. */
  readonly trustProxy: number;
  /** TIANQI_PUBLIC_URL: the platform's URL in join commands; absent: the URL the admin's request came to. */
  readonly publicUrl?: string;
  /**
   * TIANQI_KEEP_GPUS_WHEN_STOPPED: whether a stopped instance keeps its cards, CPU and memory
   * reserved (a lab that wants a place kept); by default a stop gives them back and a start takes
   * the same cards again, or is refused while somebody else has them.
   */
  readonly keepGpusWhenStopped: boolean;
  /** Whether instances are placed only on nodes whose guard runs (TIANQI_NODE_GUARD). */
  readonly nodeGuard: boolean;
  /** Limits of every instance's container. */
  readonly containerLimits: ContainerLimits;
  /** Where the builds of tianqi-helper are, per architecture (SFTP and port forwarding). */
  readonly helperDir: string;
  /** Service links (自定义服务): the proxy's settings. */
  readonly services: {
    readonly domain?: string;
    /** The port form's range; null: off. */
    readonly ports: { readonly min: number; readonly max: number } | null;
    readonly route: 'auto' | 'tunnel';
    readonly timeoutMs: number;
  };
}

/** dist/helper of this checkout, where scripts/build-helper.ts puts its builds. */
const DEFAULT_HELPER_DIR = fileURLToPath(new URL('../dist/helper/', import.meta.url));

export class ConfigError extends Error {}

/** Reads the process settings of API.md; a bad value stops the start with the variable named. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const blankless = Object.fromEntries(Object.entries(env).filter(([k, v]) => k.startsWith('TIANQI_') && v !== ''));
  const parsed = Env.safeParse(blankless);
  if (!parsed.success) {
    const lines = Object.entries(zodFields(parsed.error)).map(([k, why]) => `  ${k}: ${why}`);
    throw new ConfigError(`invalid settings:\n${lines.join('\n')}`);
  }
  const e = parsed.data;
  if (e.TIANQI_LEASE_RENEW_MS * 2 >= e.TIANQI_LEASE_TTL_MS) {
    throw new ConfigError(`invalid settings:\n  TIANQI_LEASE_RENEW_MS: must be less than half of TIANQI_LEASE_TTL_MS (${e.TIANQI_LEASE_TTL_MS})`);
  }
  return {
    dataDir: resolve(e.TIANQI_DATA_DIR),
    httpPort: e.TIANQI_HTTP_PORT,
    sshPort: e.TIANQI_SSH_PORT,
    host: e.TIANQI_HOST,
    ...(e.TIANQI_ADMIN_PASSWORD ? { adminPassword: e.TIANQI_ADMIN_PASSWORD } : {}),
    ...(e.TIANQI_EVENTSTORE_URL ? { eventStoreUrl: e.TIANQI_EVENTSTORE_URL } : {}),
    ...(e.TIANQI_MONGO_URL ? { mongoUrl: e.TIANQI_MONGO_URL } : {}),
    ...(e.TIANQI_MASTER_KEY ? { masterKey: e.TIANQI_MASTER_KEY } : {}),
    pollIntervalMs: e.TIANQI_POLL_INTERVAL_MS,
    schedulerTickMs: e.TIANQI_SCHEDULER_TICK_MS,
    idleTickMs: e.TIANQI_IDLE_TICK_MS,
    ...(e.TIANQI_GPU_PROBE_IMAGE ? { gpuProbeImage: e.TIANQI_GPU_PROBE_IMAGE } : {}),
    prepaid: { enabled: e.TIANQI_PREPAID === '1', lowBalance: e.TIANQI_LOW_BALANCE, tickMs: e.TIANQI_BILLING_TICK_MS },
    timeZone: e.TIANQI_TIME_ZONE,
    logLevel: e.TIANQI_LOG_LEVEL,
    disabledPlugins: new Set(e.TIANQI_DISABLED_PLUGINS.split(',').map((s) => s.trim()).filter(Boolean)),
    sqliteSynchronous: e.TIANQI_SQLITE_SYNCHRONOUS,
    ...(e.TIANQI_METRICS_TOKEN ? { metricsToken: e.TIANQI_METRICS_TOKEN } : {}),
    ...(e.TIANQI_SMTP_URL ? { smtp: { url: e.TIANQI_SMTP_URL, from: e.TIANQI_SMTP_FROM } } : {}),
    lease: { ttlMs: e.TIANQI_LEASE_TTL_MS, renewEveryMs: e.TIANQI_LEASE_RENEW_MS },
    ...(e.TIANQI_REPLICA_ID ? { replicaId: e.TIANQI_REPLICA_ID } : {}),
    trustProxy: e.TIANQI_TRUST_PROXY,
    ...(e.TIANQI_PUBLIC_URL ? { publicUrl: e.TIANQI_PUBLIC_URL.replace(/\/+$/, '') } : {}),
    nodeGuard: e.TIANQI_NODE_GUARD === '1',
    keepGpusWhenStopped: e.TIANQI_KEEP_GPUS_WHEN_STOPPED === '1',
    containerLimits: {
      pidsLimit: e.TIANQI_CONTAINER_PIDS_LIMIT ?? DEFAULT_CONTAINER_LIMITS.pidsLimit,
      logMaxSizeMb: e.TIANQI_CONTAINER_LOG_MAX_SIZE_MB ?? DEFAULT_CONTAINER_LIMITS.logMaxSizeMb,
      logMaxFiles: e.TIANQI_CONTAINER_LOG_MAX_FILES ?? DEFAULT_CONTAINER_LIMITS.logMaxFiles,
      noNewPrivileges: e.TIANQI_CONTAINER_NO_NEW_PRIVILEGES === undefined ? DEFAULT_CONTAINER_LIMITS.noNewPrivileges : e.TIANQI_CONTAINER_NO_NEW_PRIVILEGES === '1',
      capDrop: e.TIANQI_CONTAINER_CAP_DROP === undefined
        ? DEFAULT_CONTAINER_LIMITS.capDrop
        : e.TIANQI_CONTAINER_CAP_DROP === 'none' ? [] : e.TIANQI_CONTAINER_CAP_DROP.split(','),
    },
    helperDir: resolve(e.TIANQI_HELPER_DIR ?? DEFAULT_HELPER_DIR),
    services: {
      ...(e.TIANQI_SERVICE_DOMAIN ? { domain: e.TIANQI_SERVICE_DOMAIN } : {}),
      ports: servicePorts(e.TIANQI_SERVICE_PORTS, e.TIANQI_HTTP_PORT, e.TIANQI_SSH_PORT),
      route: e.TIANQI_SERVICE_ROUTE,
      timeoutMs: e.TIANQI_SERVICE_TIMEOUT_MS,
    },
  };
}


function servicePorts(setting: string, httpPort: number, sshPort: number): { min: number; max: number } | null {
  if (setting === 'off') return null;
  const [min, max] = setting.split('-').map(Number) as [number, number];
  for (const [name, port] of [['TIANQI_HTTP_PORT', httpPort], ['TIANQI_SSH_PORT', sshPort]] as const) {
    if (port >= min && port <= max) throw new ConfigError(`TIANQI_SERVICE_PORTS ${setting} must leave out ${name} ${port}`);
  }
  return { min, max };
}
