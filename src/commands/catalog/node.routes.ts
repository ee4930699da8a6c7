import { isAbsolute, normalize } from 'node:path';
import { z } from 'zod';
import { DEFAULT_PUBLIC_PORT_RANGE, publicPortRange } from '../../domain/catalog/node.decider.ts';
import { modelMatches } from '../../domain/catalog/gpu-inventory.ts';
import { SPEC_LIMITS } from '../../domain/catalog/spec.decider.ts';
import { isIP } from 'node:net';
import { engineFailure, words, type Words } from '../../domain/instance/words.ts';
import { DomainError } from '../../domain/shared/errors.ts';
import { RawBody, reply, route, type RouteSpec } from '../../http/route.ts';
import { refusalScript, type NodeAgents } from './node-agents.ts';
import { goArchitecture } from '../../ports/helper-builds.port.ts';
import type { ReadStore } from '../../ports/read-store.port.ts';
import { NODES, type NodeView } from '../../projections/catalog.projection.ts';
import { catalogListQuery, cidr, dockerEndpoint, ipAddress, name, nameFilter, nonNegativeInt, pem, text } from './fields.ts';
import { NODE_CHECKS, type NodeCheck, type Nodes } from './nodes.ts';

const capacity = (max: number, what: string) =>
  nonNegativeInt(max).nullable().meta({ description: `${what} for placement; empty = the engine's own report` });
const publicPort = z.number().int('must be a whole number').min(1_024, 'must be 1024–65535').max(65_535, 'must be 1024–65535');
const fields = {
  name,
  region: text(64),
  cpu: text(255).meta({ description: 'CPU description (CPU)' }),
  memory: text(255).meta({ description: 'memory description (内存)' }),
  systemDisk: text(255).meta({ description: 'system disk description (系统盘容量)' }),
  dataDisk: text(255).meta({ description: 'data disk description (数据盘容量)' }),
  cpuCores: capacity(SPEC_LIMITS.cpuCores * 8, 'CPU cores'),
  memoryGb: capacity(SPEC_LIMITS.memoryGb * 8, 'memory in GB'),
  dataDiskGb: capacity(SPEC_LIMITS.dataDiskGb * 64, 'data disk in GB'),
  publicIp: ipAddress,
  privateIp: ipAddress,
  sshPort: z.number().int('must be a whole number').min(1, 'must be 1–65535').max(65_535, 'must be 1–65535'),
  sshUser: text(64),
  sshPassword: z.string().max(256, 'is too long').meta({ description: 'write-only; "" clears it', writeOnly: true }),
  gpuModel: text(64),
  gpuCount: nonNegativeInt(64),
  gpuMemoryGb: nonNegativeInt(SPEC_LIMITS.gpuMemoryGb).meta({ description: 'per card, GB' }),
  hamiCoreDir: text(255).refine((s) => s === '' || (isAbsolute(s) && normalize(s) !== '/' && !s.split('/').includes('..')), 'must be an absolute directory other than /, without ..').meta({
    description: 'HAMi-core build directory on the node; empty = /root/HAMi-core/build',
  }),
  dockerEndpoint: dockerEndpoint.or(z.literal('')).meta({ description: 'empty = tcp://<privateIp>:2376 (TLS) or :2375' }),
  dockerTls: z.boolean(),
  tlsCa: pem('CA certificate').or(z.literal('')),
  tlsCert: pem('client certificate').or(z.literal('')),
  tlsKey: pem('client private key; write-only; "" clears it').meta({ writeOnly: true }),
  listed: z.boolean(),
  remark: text(2_000),
  egressAllow: z.array(cidr).max(32, 'at most 32 entries').meta({
    description: '出站白名单: private addresses or networks (CIDR) tenants on this node may reach despite the node guard (a NAS, a package mirror); everything private, link-local, CGNAT and the node\'s own subnets is refused otherwise',
  }),
  publicPortMin: publicPort.meta({ description: '公网端口范围: the first host port public service ports are mapped to' }),
  publicPortMax: publicPort.meta({ description: 'the last host port of that range' }),
  agentPort: publicPort.nullable().meta({
    description: '添加节点 with the join command: the node agent serves the node\'s Docker socket over mutual TLS on this port (9376 unless given); null: reached through dockerEndpoint',
  }),
};
const CreateNode = z.strictObject({
  ...fields,
  region: fields.region.default(''),
  cpu: fields.cpu.default(''),
  memory: fields.memory.default(''),
  systemDisk: fields.systemDisk.default(''),
  dataDisk: fields.dataDisk.default(''),
  cpuCores: fields.cpuCores.default(null),
  memoryGb: fields.memoryGb.default(null),
  dataDiskGb: fields.dataDiskGb.default(null),
  sshPort: fields.sshPort.default(22),
  sshUser: fields.sshUser.default(''),
  sshPassword: fields.sshPassword.optional(),
  gpuModel: fields.gpuModel.default(''),
  gpuCount: fields.gpuCount.default(0),
  gpuMemoryGb: fields.gpuMemoryGb.default(0),
  hamiCoreDir: fields.hamiCoreDir.default(''),
  dockerEndpoint: fields.dockerEndpoint.default(''),
  dockerTls: fields.dockerTls.default(true),
  tlsCa: fields.tlsCa.default(''),
  tlsCert: fields.tlsCert.default(''),
  tlsKey: fields.tlsKey.optional(),
  listed: fields.listed.default(true),
  remark: fields.remark.default(''),
  egressAllow: fields.egressAllow.default([]),
  publicPortMin: fields.publicPortMin.default(DEFAULT_PUBLIC_PORT_RANGE.min),
  publicPortMax: fields.publicPortMax.default(DEFAULT_PUBLIC_PORT_RANGE.max),
  agentPort: fields.agentPort.default(null),
});
const { agentPort: _agentPort, ...changeable } = fields;
const UpdateNode = z.strictObject(changeable).partial();

const AgentSchema = z.object({
  joinedAt: z.string(), hostname: z.string(), arch: z.string(),
  version: z.string().meta({ description: 'the agent\'s tianqi-helper build as it joined: SHA-256 of the binary, 16 hex digits' }),
  address: z.string().meta({ description: 'the address the platform reaches the agent on' }),
  serverFingerprint: z.string(), clientFingerprint: z.string(),
  certExpiresAt: z.string().meta({ description: 'when the first of the agent\'s server and the platform\'s client certificate expires: rotate before' }),
  rotatedAt: z.string().nullable(),
});
const JoinTokenSchema = z.object({
  tokenId: z.string(), issuedAt: z.string(), expiresAt: z.string(), revokedAt: z.string().nullable(), usedAt: z.string().nullable(),
});
const IssueJoinToken = z.strictObject({
  ttlMinutes: z.number().int('must be a whole number').min(5, 'must be 5–10080 (a week)').max(10_080, 'must be 5–10080 (a week)').default(120),
});

const GpuSchema = z.object({
  index: z.number(), totalMemoryGb: z.number(), freeMemoryGb: z.number(),
  model: z.string().optional().meta({ description: 'discovered cards: the card\'s own model (a mixed node has several)' }),
  uuid: z.string().optional().meta({ description: 'discovered cards: the UUID containers are given the card by' }),
});
const EngineSchema = z
  .object({
    serverVersion: z.string(), cpus: z.number(), memoryBytes: z.number(), operatingSystem: z.string(), kernelVersion: z.string(),
    architecture: z.string(), storageDriver: z.string(), nvidiaRuntime: z.boolean(), runtimes: z.array(z.string()),
    dockerRootDir: z.string().optional(), apiVersion: z.string().optional(),
    diskBytes: z.number().optional().meta({ description: 'the size of the disk holding the engine\'s data directory' }),
    agentVersion: z.string().optional().meta({ description: 'nodes with the node agent: its tianqi-helper build as it answers now' }),
    hamiCore: z.object({ dir: z.string(), present: z.boolean() }).optional().meta({ description: 'on GPU nodes: whether HAMi-core\'s libvgpu.so is in the HAMi-core directory' }),
    gpuInventory: z.object({
      cards: z.array(z.object({
        index: z.number(), uuid: z.string(), model: z.string(), memoryGb: z.number(),
        migMode: z.enum(['enabled', 'disabled', 'n/a']), available: z.boolean(),
      })),
      driverVersion: z.string().nullable(), cudaVersion: z.string().nullable(), error: z.string().nullable(),
      noDeviceDriver: z.literal(true).optional().meta({ description: 'the engine has no NVIDIA device driver: no card, found or declared, is placed on' }),
    }).optional().meta({ description: 'card discovery: each card as nvidia-smi reads it through the engine (unavailable: not seen on the last read); absent where the node has no NVIDIA driver' }),
  })
  .nullable();
const { sshPassword: _sp, tlsKey: _tk, ...readable } = fields;
export const NodeSchema = z.object({
  id: z.string(),
  ...readable,
  hasSshPassword: z.boolean(),
  hasTlsKey: z.boolean(),
  readiness: z.array(z.object({
    code: z.string(), ok: z.boolean().nullable(), detail: z.string(),
    words: z.array(z.object({ code: z.string(), params: z.record(z.string(), z.union([z.string(), z.number()])), detail: z.string().optional() }))
      .meta({ description: 'the detail as codes with params for the console\'s words (R_…), the engine\'s text as detail' }),
  }))
    .meta({ description: 'HELPER, CAPACITY and, on GPU nodes, NVIDIA_RUNTIME, DRIVER, HAMI_CORE: whether each holds (null: not known yet), and what was found' }),
  dockerStatus: z.enum(['connected', 'failed', 'unknown']),
  dockerError: z.string().nullable(),
  dockerErrorWords: z.object({ code: z.string(), params: z.record(z.string(), z.union([z.string(), z.number()])), detail: z.string().optional() }).nullable()
    .meta({ description: 'dockerError as a plain reason (ENGINE_UNREACHABLE, ENGINE_TLS…) for the console\'s words, the engine\'s text as detail' }),
  /** What an admin should fix about this node, as codes with a sentence each (an engine without TLS on TCP). */
  warnings: z.array(z.object({ code: z.string(), message: z.string() })),
  dockerCheckedAt: z.string().nullable(),
  engine: EngineSchema,
  capacity: z.object({ cpuCores: z.number().nullable(), memoryGb: z.number().nullable(), dataDiskGb: z.number().nullable() }),
  used: z.object({
    cpuCores: z.number(), memoryGb: z.number(), dataDiskGb: z.number(),
    publicPorts: z.number().meta({ description: 'host ports of the public port range held by instances' }),
  }),
  reservations: z.array(z.object({
    instanceId: z.string(),
    gpus: z.array(z.object({ index: z.number(), memoryGb: z.number() })),
    vgpu: z.boolean(),
    cpuCores: z.number(),
    memoryGb: z.number(),
    dataDiskGb: z.number(),
    hostPorts: z.array(z.object({ port: z.number(), hostPort: z.number() })).optional()
      .meta({ description: 'the instance\'s public service ports and the host ports they are mapped to' }),
  })),
  gpus: z.array(GpuSchema),
  join: z.object({ agent: AgentSchema.nullable(), tokens: z.array(JoinTokenSchema) }).nullable()
    .meta({ description: 'nodes added with the join command: the agent once joined, and the join tokens issued (never the tokens themselves)' }),
  createdAt: z.string(),
  updatedAt: z.string(),
});

/** What is unsafe in a node's settings. Pure. */
/** Whether the platform has a tianqi-helper build for an architecture (`amd64`, `arm64`…). */
export type HasHelper = ((arch: string) => boolean) & {
  /** The platform's build for an architecture, as agents report theirs (SHA-256, 16 hex digits). */
  digest?: (arch: string) => string | null;
};

export function nodeWarnings(
  node: Pick<NodeView, 'dockerEndpoint' | 'dockerTls'> & Partial<Pick<NodeView, 'gpuModel' | 'gpuCount' | 'gpuMemoryGb'>> & { engine?: NodeView['engine'] },
  hasHelper?: HasHelper,
): { code: string; message: string }[] {
  const warnings: { code: string; message: string }[] = [...cardWarnings(node)];
  if (node.dockerEndpoint.startsWith('tcp://') && !node.dockerTls) {
    warnings.push({
      code: 'DOCKER_WITHOUT_TLS',
      message: 'The Docker API of this node is reached over TCP without TLS: anyone who can reach that port is root on the node. Use tcp://…:2376 with the CA, client certificate and key, or a unix socket.',
    });
  }
  const arch = node.engine?.architecture ? goArchitecture(node.engine.architecture) : undefined;
  if (arch && hasHelper && !hasHelper(arch)) {
    warnings.push({
      code: 'HELPER_MISSING',
      message: `The platform has no tianqi-helper build for this node's architecture (${arch}): no instance can be placed here (the node guard runs it), and SFTP and port forwarding do not work. Run npm run build:helper with Go installed, or use the platform's release, which ships linux/amd64 and linux/arm64.`,
    });
  }
  return warnings;
}

/** What card discovery found against the form: disagreements, cards gone, a failed read. */
function cardWarnings(node: Partial<Pick<NodeView, 'gpuModel' | 'gpuCount' | 'gpuMemoryGb'>> & { engine?: NodeView['engine'] }): { code: string; message: string }[] {
  const inventory = node.engine?.gpuInventory;
  if (!inventory) return [];
  const out: { code: string; message: string }[] = [];
  if (inventory.error) {
    out.push({ code: 'GPU_READ_FAILED', message: `Reading the cards through the engine failed: ${inventory.error}. The cards known before are marked unavailable until a read succeeds.` });
  }
  const gone = inventory.cards.filter((c) => !c.available);
  if (gone.length > 0 && !inventory.error) {
    out.push({ code: 'GPU_UNAVAILABLE', message: `${gone.map((c) => `GPU ${c.index} (${c.uuid})`).join(', ')} ${gone.length === 1 ? 'was' : 'were'} not seen on the last read (fallen off the bus, or the driver reloaded?): nothing new is placed there, and instances holding ${gone.length === 1 ? 'it' : 'them'} may have lost ${gone.length === 1 ? 'it' : 'them'}.` });
  }
  const seen = inventory.cards.filter((c) => c.available);
  const declared = node.gpuCount ?? 0;
  if (declared > 0 && seen.length > 0) {
    const models = [...new Set(seen.map((c) => c.model))];
    const problems: string[] = [];
    if (declared !== seen.length) problems.push(`${declared} card${declared === 1 ? '' : 's'} declared, ${seen.length} found`);
    if (node.gpuModel && !seen.every((c) => modelMatches(node.gpuModel!, c.model))) problems.push(`model "${node.gpuModel}" declared, ${models.join(' + ')} found`);
    const memory = seen[0]!.memoryGb;
    if (node.gpuMemoryGb && Math.abs(node.gpuMemoryGb - memory) > memory * 0.1) problems.push(`${node.gpuMemoryGb} GB per card declared, ${memory} GB found`);
    if (problems.length > 0) {
      out.push({ code: 'GPU_DECLARED_MISMATCH', message: `The form's cards disagree with what the engine reports (${problems.join('; ')}); placement goes by the cards found.` });
    }
  }
  return out;
}

/** A readiness check: whether it holds (null: not known), in English, and as words for the console. */
interface Check {
  code: string;
  ok: boolean | null;
  detail: string;
  words: Words[];
}

const w = words;

/** Whether the node is ready for what its cards promise, check by check (null: does not apply or not known). */
function readiness(node: NodeView, hasHelper?: HasHelper): Check[] {
  const facts = node.engine;
  const inventory = facts?.gpuInventory;
  const gpuNode = (inventory?.cards.length ?? 0) > 0 || node.gpuCount > 0 || Boolean(facts?.nvidiaRuntime);
  const arch = facts?.architecture ? goArchitecture(facts.architecture) : undefined;
  const out: Check[] = [];
  const helperOk = arch && hasHelper ? hasHelper(arch) : null;
  out.push({
    code: 'HELPER', ok: helperOk,
    detail: arch ? `tianqi-helper built for ${arch} (the node guard, SFTP, forwarding, card discovery)` : 'the engine has not been reached yet',
    words: [arch ? w(helperOk === false ? 'R_HELPER_MISSING' : 'R_HELPER_BUILT', { arch }) : w('R_NOT_REACHED')],
  });
  if (node.agentPort) out.push(agentReadiness(node, hasHelper));
  if (facts) {
    const over: string[] = [];
    const overWords: Words[] = [];
    if (node.cpuCores !== null && node.cpuCores > facts.cpus) {
      over.push(`${node.cpuCores} CPU cores declared, the engine has ${facts.cpus}`);
      overWords.push(w('R_OVER_CPU', { declared: node.cpuCores, actual: facts.cpus }));
    }
    const engineGb = Math.floor(facts.memoryBytes / 1024 ** 3);
    if (node.memoryGb !== null && node.memoryGb > engineGb) {
      over.push(`${node.memoryGb} GB memory declared, the engine has ${engineGb}`);
      overWords.push(w('R_OVER_MEMORY', { declared: node.memoryGb, actual: engineGb }));
    }
    const diskGb = facts.diskBytes ? Math.floor(facts.diskBytes / 1024 ** 3) : null;
    const dir = facts.dockerRootDir || 'its data directory';
    if (node.dataDiskGb !== null && diskGb !== null && node.dataDiskGb > diskGb) {
      over.push(`${node.dataDiskGb} GB data disk declared, the engine's disk (${dir}) has ${diskGb}`);
      overWords.push(w('R_OVER_DISK', { declared: node.dataDiskGb, actual: diskGb, dir }));
    }
    out.push({
      code: 'CAPACITY', ok: over.length === 0,
      detail: over.length > 0 ? `${over.join('; ')}: placement would promise what is not there` : `declared within what the engine reports (${facts.cpus} cores, ${engineGb} GB${diskGb !== null ? `, ${diskGb} GB disk` : ''})`,
      words: over.length > 0
        ? [...overWords, w('R_OVER_NOTE')]
        : [diskGb !== null ? w('R_CAPACITY_OK_DISK', { cpus: facts.cpus, gb: engineGb, disk: diskGb }) : w('R_CAPACITY_OK', { cpus: facts.cpus, gb: engineGb })],
    });
  }
  if (!gpuNode) return out;
  const cardsSeen = (inventory?.cards.filter((c) => c.available).length ?? 0) > 0;
  out.push({
    code: 'NVIDIA_RUNTIME', ok: facts ? facts.nvidiaRuntime || cardsSeen : null,
    detail: cardsSeen ? 'the engine gives containers their cards (NVIDIA container toolkit)' : facts?.nvidiaRuntime ? 'the NVIDIA runtime is registered' : 'no NVIDIA runtime or device driver in the engine: install the NVIDIA container toolkit',
    words: [w(cardsSeen ? 'R_NVIDIA_CARDS' : facts?.nvidiaRuntime ? 'R_NVIDIA_RUNTIME' : 'R_NVIDIA_MISSING')],
  });
  const driverWords: Words[] = inventory?.driverVersion
    ? [w(inventory.cudaVersion ? 'R_DRIVER_CUDA' : 'R_DRIVER', { driver: inventory.driverVersion, cuda: inventory.cudaVersion ?? '' }), ...(inventory.error ? [w('R_READ_FAILED', {}, inventory.error)] : [])]
    : [inventory?.error ? w('R_READ_FAILED', {}, inventory.error) : w('R_NOT_READ')];
  out.push({
    code: 'DRIVER', ok: inventory ? Boolean(inventory.driverVersion) && !inventory.error : null,
    detail: inventory?.driverVersion ? `driver ${inventory.driverVersion}${inventory.cudaVersion ? `, CUDA ${inventory.cudaVersion}` : ''}${inventory.error ? ` (last read failed: ${inventory.error})` : ''}` : inventory?.error ?? 'not read yet',
    words: driverWords,
  });
  out.push({
    code: 'HAMI_CORE', ok: facts?.hamiCore ? facts.hamiCore.present : null,
    detail: facts?.hamiCore ? `${facts.hamiCore.dir}/libvgpu.so ${facts.hamiCore.present ? 'present: vGPU specs can be placed here' : 'missing: vGPU specs are not placed here'}` : 'not checked yet',
    words: [facts?.hamiCore ? w(facts.hamiCore.present ? 'R_HAMI_PRESENT' : 'R_HAMI_MISSING', { dir: facts.hamiCore.dir }) : w('R_NOT_CHECKED')],
  });
  return out;
}

/** Nodes added with the join command: joined, answering, and running the platform's build of the agent. */
function agentReadiness(node: NodeView, hasHelper?: HasHelper): Check {
  const agent = node.join?.agent;
  if (!agent) return { code: 'AGENT', ok: null, detail: 'waiting for the join command to be run on the node', words: [w('R_AGENT_WAITING')] };
  const running = node.engine?.agentVersion;
  const shipped = hasHelper?.digest?.(agent.arch) ?? null;
  if (node.dockerStatus !== 'connected') {
    return {
      code: 'AGENT', ok: false,
      detail: `the agent on ${agent.hostname} (${agent.address}:${node.agentPort}) does not answer: ${node.dockerError ?? 'not reached yet'}`,
      words: [w('R_AGENT_DOWN', { host: agent.hostname, address: agent.address, port: node.agentPort ?? '' }, node.dockerError ?? undefined)],
    };
  }
  if (running && shipped && running !== shipped) {
    return {
      code: 'AGENT', ok: false,
      detail: `the agent runs tianqi-helper ${running}, the platform ships ${shipped}: run a new join command on the node to update it`,
      words: [w('R_AGENT_OUTDATED', { running, shipped })],
    };
  }
  const until = agent.certExpiresAt.slice(0, 10);
  return {
    code: 'AGENT', ok: true, detail: `agent ${running ?? agent.version} on ${agent.hostname}, certificates valid until ${until}`,
    words: [w('R_AGENT_OK', { version: running ?? agent.version, host: agent.hostname, until })],
  };
}

function publicPortFields(node: Pick<NodeView, 'publicPortMin' | 'publicPortMax'>) {
  const range = publicPortRange(node);
  return { publicPortMin: range.min, publicPortMax: range.max };
}

export function toNodeDto(view: NodeView, hasHelper?: HasHelper): z.infer<typeof NodeSchema> {
  const { nameLower: _n, _position: _p, ...dto } = view as NodeView & { _position?: number };
  return {
    ...dto,
    ...publicPortFields(dto),
    // Documents projected before public ports lack the count.
    used: { ...dto.used, publicPorts: dto.used.publicPorts ?? 0 },
    egressAllow: [...(dto.egressAllow ?? [])],
    agentPort: dto.agentPort ?? null,
    dockerErrorWords: dto.dockerError ? engineFailure(dto.dockerError) : null,
    join: dto.join ? { agent: dto.join.agent ? { ...dto.join.agent } : null, tokens: dto.join.tokens.map((t) => ({ ...t })) } : null,
    warnings: nodeWarnings(view, hasHelper),
    readiness: readiness(view, hasHelper),
    engine: dto.engine && (({ gpuInventory, ...engine }) => ({
      ...engine, runtimes: [...engine.runtimes],
      ...(gpuInventory ? { gpuInventory: { ...gpuInventory, cards: gpuInventory.cards.map((c) => ({ ...c })) } } : {}),
    }))(dto.engine),
    gpus: dto.gpus.map((g) => ({ ...g })),
    reservations: dto.reservations.map(({ hostPorts, ...r }) => ({
      ...r, gpus: r.gpus.map((g) => ({ ...g })), ...(hostPorts ? { hostPorts: hostPorts.map((p) => ({ ...p })) } : {}),
    })),
  };
}

/** The platform's URL as a node reaches it: TIANQI_PUBLIC_URL, else the URL the admin's request came to. */
export type PublicBase = (headers: Record<string, string | string[] | undefined>) => string;

export function nodeRoutes(nodes: Nodes, store: ReadStore, hasHelper?: HasHelper, agents?: NodeAgents, publicBase?: PublicBase): RouteSpec[] {
  const checks = () => store.collection<NodeCheck>(NODE_CHECKS);
  /** The node as the API shows it, 检测时间 from its last check (events record only checks that changed something). */
  const dto = (view: NodeView, lastCheckedAt?: string) => {
    const shown = toNodeDto(view, hasHelper);
    return lastCheckedAt && (!shown.dockerCheckedAt || lastCheckedAt > shown.dockerCheckedAt) ? { ...shown, dockerCheckedAt: lastCheckedAt } : shown;
  };
  const one = async (view: NodeView) => dto(view, (await checks().get(view.id))?.checkedAt);
  return [
    route({
      method: 'get', path: '/nodes', tag: 'nodes', access: 'admin', summary: 'List compute nodes, sorted by name',
      query: catalogListQuery, response: z.array(NodeSchema),
      async handler({ query }) {
        const listed = query.listed === undefined ? {} : { listed: query.listed === 'true' };
        const lastChecks = new Map((await checks().find({})).map((c) => [c.id, c.checkedAt]));
        return (await store.collection<NodeView>(NODES).find({ ...listed, ...nameFilter(query.q) }, { sort: { nameLower: 1 } })).map((view) => dto(view, lastChecks.get(view.id)));
      },
    }),
    route({
      method: 'post', path: '/nodes', tag: 'nodes', access: 'admin', status: 201,
      summary: 'Register a node; its Docker connection is tested at once (a failed test still saves it)',
      body: CreateNode, response: NodeSchema,
      async handler({ body, context }) {
        return reply(201, await one(await nodes.register(body, context)));
      },
    }),
    route({
      method: 'get', path: '/nodes/:id', tag: 'nodes', access: 'admin', summary: 'One node', response: NodeSchema,
      async handler({ params }) {
        return one(await nodes.get(params.id!));
      },
    }),
    route({
      method: 'patch', path: '/nodes/:id', tag: 'nodes', access: 'admin',
      summary: 'Change a node; a change to the Docker connection re-tests it', body: UpdateNode, response: NodeSchema,
      async handler({ params, body, context }) {
        return one(await nodes.change(params.id!, body, context));
      },
    }),
    route({
      method: 'post', path: '/nodes/:id/test', tag: 'nodes', access: 'admin', summary: 'Test the Docker connection now (≤ 5 s)',
      response: NodeSchema,
      async handler({ params, context }) {
        await nodes.get(params.id!);
        await nodes.testConnection(params.id!, context);
        return one(await nodes.get(params.id!));
      },
    }),
    ...(agents && publicBase ? agentRoutes(nodes, agents, publicBase, one) : []),
    route({
      method: 'delete', path: '/nodes/:id', tag: 'nodes', access: 'admin', status: 204,
      summary: 'Delete a node (409 IN_USE while a live instance runs on it)',
      async handler({ params, context }) {
        await nodes.delete(params.id!, context);
        return reply(204);
      },
    }),
  ];
}

const IssuedJoinTokenSchema = z.object({
  tokenId: z.string(),
  token: z.string().meta({ description: 'shown this once; only its SHA-256 is kept' }),
  expiresAt: z.string(),
  command: z.string().meta({ description: 'the one line to run as root on the GPU server' }),
  caSha256: z.string().meta({ description: 'SHA-256 of the platform CA certificate the agent checks' }),
});

function agentRoutes(nodes: Nodes, agents: NodeAgents, publicBase: PublicBase, one: (view: NodeView) => Promise<z.infer<typeof NodeSchema>>): RouteSpec[] {
  return [
    route({
      method: 'post', path: '/nodes/:id/join-tokens', tag: 'nodes', access: 'admin', status: 201,
      summary: '添加节点: a single-use join token and the command that uses it (shown once)',
      body: IssueJoinToken, response: IssuedJoinTokenSchema,
      async handler({ params, body, headers, context }) {
        await nodes.get(params.id!);
        return reply(201, await agents.issueToken(params.id!, publicBase(headers), body.ttlMinutes, context));
      },
    }),
    route({
      method: 'delete', path: '/nodes/:id/join-tokens/:tokenId', tag: 'nodes', access: 'admin', status: 204,
      summary: 'Revoke a join token (a used or revoked one: nothing changes)',
      async handler({ params, context }) {
        await nodes.get(params.id!);
        await agents.revokeToken(params.id!, params.tokenId!, context);
        return reply(204);
      },
    }),
    route({
      method: 'post', path: '/nodes/:id/rotate-certificates', tag: 'nodes', access: 'admin',
      summary: 'New certificates for the node agent (a new key on the node, a new client certificate here); the old client is refused after',
      response: NodeSchema,
      async handler({ params, context }) {
        await nodes.get(params.id!);
        await agents.rotate(params.id!, context);
        return one(await nodes.get(params.id!));
      },
    }),
  ];
}

const JoinBody = z.strictObject({
  token: z.string().max(200, 'is too long'),
  csr: z.string().max(16_384, 'is too long'),
  hostname: z.string().max(253, 'is too long'),
  arch: z.string().max(32, 'is too long'),
  version: z.string().max(64, 'is too long'),
  time: z.string().max(64, 'is too long'),
  address: z.string().max(255, 'is too long').refine((a) => a === '' || isIP(a) !== 0 || /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/i.test(a), 'must be an IP address or a host name').default(''),
  addresses: z.array(z.string().max(64, 'is too long')).max(64, 'at most 64').default([]),
});
const JoinAnswerSchema = z.object({
  nodeId: z.string(), caCert: z.string(), serverCert: z.string(), clients: z.array(z.string()), port: z.number(), address: z.string(),
});

/** What a GPU server asks while it joins: the script, the helper build, the join. The join token is the credential. */
export function joinRoutes(agents: NodeAgents, publicBase: PublicBase): RouteSpec[] {
  return [
    route({
      method: 'get', path: '/join/:token/install.sh', tag: 'nodes', access: 'public',
      summary: 'The install script the join command runs (a used, expired or revoked token: a script that says so and exits 1)',
      async handler({ params, headers }) {
        try {
          return new RawBody('text/x-shellscript; charset=utf-8', await agents.installScript(params.token!, publicBase(headers)));
        } catch (err) {
          if (err instanceof DomainError) return reply(err.status, new RawBody('text/x-shellscript; charset=utf-8', refusalScript(err.message)));
          throw err;
        }
      },
    }),
    route({
      method: 'get', path: '/join/:token/helper/:arch', tag: 'nodes', access: 'public',
      summary: 'The tianqi-helper build the install script fetches (for a live token only)',
      async handler({ params }) {
        return new RawBody('application/octet-stream', await agents.helperBinary(params.token!, params.arch!));
      },
    }),
    route({
      method: 'post', path: '/join', tag: 'nodes', access: 'public',
      summary: 'The agent joins: its certificate request and the token in, its server certificate and the platform\'s client fingerprint out (the token is spent)',
      body: JoinBody, response: JoinAnswerSchema,
      async handler({ body, context }) {
        return agents.join(body, context.clientIp ?? '', context);
      },
    }),
  ];
}
