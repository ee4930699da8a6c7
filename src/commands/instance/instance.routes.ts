import { Readable } from 'node:stream';
import { BehaviorSubject, firstValueFrom, last, map, scan, take, timeout, type Subscription } from 'rxjs';
import { z } from 'zod';
import { INSTANCE_NAME } from '../../domain/instance/instance.decider.ts';
import { ConflictError } from '../../domain/shared/errors.ts';
import { RawBody, reply, route, type RouteSpec } from '../../http/route.ts';
import { EngineRejectedError, EngineUnavailableError, type ContainerRuntime, type LogLine, type NodeTarget } from '../../ports/container-runtime.port.ts';
import type { ReadStore } from '../../ports/read-store.port.ts';
import { INSTANCE_SERIES, type InstanceView } from '../../projections/instances.projection.ts';
import { USERS, type UserView } from '../../projections/users.projection.ts';
import { portNumber, servicePorts, text } from '../catalog/fields.ts';
import { MAX_OWN_SERVICE_PORTS, MAX_PUBLIC_PORTS } from '../../domain/instance/service-ports.ts';
import { ServicePortSchema } from './service.routes.ts';
import { reasonWords } from '../../domain/instance/words.ts';
import { DAY_BUCKET_MS, HOUR_BUCKET_MS, pointsOf, type Series } from '../../domain/usage/series.ts';
import { describeInstanceEvent, instanceEventWords, type HistoryContext } from './history.ts';
import { SshAccessSchema, sshAccess } from './ssh-access.ts';
import { EngineRejectedAnswer, EngineUnavailableAnswer, type Instances } from './instances.ts';

const CreateInstance = z.strictObject({
  name: z.string().regex(INSTANCE_NAME, 'must be 1–63 letters, digits, "-" or "_", starting with a letter or digit (no spaces, no Chinese characters)'),
  imageId: z.string().min(1, 'is required').max(64),
  specId: z.string().min(1, 'is required').max(64),
  nodeId: z.string().max(64).optional().meta({ description: 'restrict placement to this node; omitted = the best node' }),
  remark: text(2_000).optional(),
  policy: z.enum(['binpack', 'spread']).optional().meta({ description: 'placement policy; binpack (default) keeps whole cards free' }),
  servicePorts: servicePorts(MAX_OWN_SERVICE_PORTS).optional()
    .meta({ description: 'service ports of its own, beside the image\'s (e.g. a Gradio app on 7860)' }),
  publicPorts: z.array(portNumber).max(MAX_PUBLIC_PORTS, `at most ${MAX_PUBLIC_PORTS} ports`)
    .refine((ports) => new Set(ports).size === ports.length, 'each port may be published once').optional()
    .meta({
      description: '公网端口: service ports (the image\'s or servicePorts) to map to host ports of the node, open to anyone without sign-in; only where the spec allows (spec.publicPorts)',
    }),
});
const PublishedPortSchema = z.object({
  port: z.number().meta({ description: 'the service port in the container' }),
  hostPort: z.number().meta({ description: 'the node\'s port it is mapped to: reach it at <node public IP>:<hostPort>' }),
});
const GpuCard = z.object({ index: z.number(), memoryGb: z.number() });
export const InstanceSchema = z.object({
  id: z.string(),
  name: z.string(),
  ownerId: z.string(),
  ownerName: z.string(),
  imageId: z.string(),
  imageAddress: z.string(),
  specId: z.string(),
  spec: z.object({
    name: z.string(), gpuModel: z.string(), gpuCount: z.number(), gpuMemoryGb: z.number(), vgpu: z.boolean(), cpuCores: z.number(),
    memoryGb: z.number(), systemDiskGb: z.number(), dataDiskGb: z.number(), pricePerHour: z.number(),
    containerOverrides: z.object({ pidsLimit: z.number().optional(), noNewPrivileges: z.boolean().optional() }).optional(),
    internet: z.boolean().optional().meta({ description: 'false: no network beyond its own bridge (the spec\'s 无外网 at the request)' }),
  }),
  nodeId: z.string(),
  nodeName: z.string(),
  containerId: z.string().nullable(),
  containerName: z.string(),
  status: z.enum(['creating', 'running', 'exited', 'failed']),
  statusReason: z.string(),
  statusWords: z.object({
    code: z.string(), params: z.record(z.string(), z.union([z.string(), z.number()])), detail: z.string().optional(),
  }).meta({ description: 'statusReason as a code with its params (the console\'s words.<code>), and the engine\'s own text where the reason came from it' }),
  pending: z.enum(['start', 'stop', 'restart', 'delete']).nullable(),
  gpuCards: z.array(GpuCard),
  gpuMode: z.enum(['gpu', 'none']).meta({ description: '无卡模式: `none` while a GPU instance is without its cards (started with `?gpuMode=none`); `gpu` otherwise' }),
  servicePorts: z.array(ServicePortSchema),
  scheduledStop: z.object({ at: z.string(), byUsername: z.string() }).nullable()
    .meta({ description: '定时关机: when the instance is to be stopped and who set it; null when none is set' }),
  idle: z.object({ since: z.string(), stopAt: z.string().nullable() }).nullable()
    .meta({ description: '空闲自动关机: idle since then (and, once warned, when it will be stopped unless used); null while in use or without a policy' }),
  idleOptOut: z.boolean().meta({ description: 'the owner switched the spec\'s idle auto-stop off for it' }),
  publicPorts: z.array(PublishedPortSchema),
  remark: z.string(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
const ListQuery = z.strictObject({
  status: z.enum(['creating', 'running', 'exited', 'failed']).optional(),
  q: z.string().max(63).optional(),
  nodeId: z.string().max(64).optional(),
  ownerId: z.string().max(64).optional().meta({ description: 'admins only' }),
});
const ScheduleStopBody = z.strictObject({
  at: z.iso.datetime({ offset: true }).optional().meta({ description: 'stop at this time (ISO 8601 with offset)' }),
  afterHours: z.number().positive().max(8784).optional().meta({ description: 'or: stop this many hours from now (0.5 = 30 minutes)' }),
}).superRefine((body, ctx) => {
  if ((body.at === undefined) === (body.afterHours === undefined)) {
    ctx.addIssue({ code: 'custom', path: ['at'], message: 'give either at or afterHours' });
  }
});
const PlacementQuery = z.strictObject({ specId: z.string().min(1).max(64), imageId: z.string().min(1).max(64) });
const Candidate = z.object({
  nodeId: z.string(),
  name: z.string(),
  cards: z.array(z.object({ index: z.number(), totalMemoryGb: z.number(), freeMemoryGb: z.number(), whole: z.boolean() })),
  freeCpuCores: z.number().nullable(),
  freeMemoryGb: z.number().nullable(),
  freeDataDiskGb: z.number().nullable(),
  freePublicPorts: z.number().meta({ description: 'ports left in the node\'s public port range' }),
});
const StatsSchema = z.object({
  cpuPercent: z.number(), memoryUsageBytes: z.number(), memoryLimitBytes: z.number(), memoryPercent: z.number(),
  networkRxBytes: z.number(), networkTxBytes: z.number(), blockReadBytes: z.number(), blockWriteBytes: z.number(), pids: z.number(),
  gpus: z.array(z.object({ index: z.number(), memoryUsedBytes: z.number().nullable(), memoryTotalBytes: z.number().nullable(), utilizationPercent: z.number().nullable() })),
  at: z.string(),
});

export function toInstanceDto(view: InstanceView): z.infer<typeof InstanceSchema> {
  const { _position: _, dataVolume: _v, scheduledStopAt: _s, scheduledStop, openSessions: _o, lastActivityAt: _l, idle, idleOptOut, pendingBy: _pb, stopCause: _sc, ...dto } = view as InstanceView & { _position?: number };
  return {
    ...dto,
    spec: { ...dto.spec },
    gpuCards: dto.gpuCards.map((g) => ({ ...g })),
    servicePorts: (dto.servicePorts ?? []).map((p) => ({ ...p })),
    scheduledStop: scheduledStop ? { at: scheduledStop.at, byUsername: scheduledStop.byUsername } : null,
    idle: idle ? { since: idle.since, stopAt: idle.stopAt } : null,
    idleOptOut: idleOptOut ?? false,
    gpuMode: dto.gpuMode ?? 'gpu',
    statusWords: reasonWords(dto.statusReason),
    publicPorts: (dto.publicPorts ?? []).map((p) => ({ ...p })),
  };
}

/**
 * Docker calls from a request: an unreachable node is a 503, a refusal a 502, both in words.
 * The engine's 404 for the instance's own container means it went away between the read model
 * and the call (a delete or stop in flight, or removed by hand; the reconciler catches up): that
 * is the instance's state, answered as `gone`, not an engine fault.
 */
async function engineCall<T>(call: () => Promise<T>, gone: () => ConflictError): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof EngineUnavailableError) throw new EngineUnavailableAnswer(err.message);
    if (err instanceof EngineRejectedError && err.statusCode === 404) throw gone();
    if (err instanceof Error && err.name === 'EngineRejectedError') throw new EngineRejectedAnswer(err.message);
    if (err instanceof Error && err.name === 'TimeoutError') throw new EngineUnavailableAnswer('no answer within 10 s');
    throw err;
  }
}

/** GPU memory of each granted card, read inside the container; null values when unreadable (never 0). */
export async function gpuUsage(runtime: ContainerRuntime, target: NodeTarget, instance: InstanceView) {
  if (instance.gpuCards.length === 0 || !instance.containerId) return [];
  const readings = await runtime.gpuMemory(target, instance.containerId).catch(() => null);
  return instance.gpuCards.map((card, position) => {
    const reading = readings?.find((g) => g.index === position);
    return {
      index: card.index, memoryUsedBytes: reading?.usedBytes ?? null, memoryTotalBytes: reading?.totalBytes ?? null, utilizationPercent: reading?.utilizationPercent ?? null,
    };
  });
}

export async function statsSnapshot(runtime: ContainerRuntime, target: NodeTarget, instance: InstanceView) {
  if (!instance.containerId || instance.status !== 'running') throw new ConflictError('NOT_RUNNING', 'Stats are there while the instance runs.');
  const containerId = instance.containerId;
  // Like `docker stats --no-stream`: the second sample has a CPU delta to compare with.
  const [sample, gpus] = await Promise.all([
    // A container that stops meanwhile ends its stats stream without a sample: that is a 409, not a fault.
    engineCall(
      () => firstValueFrom(runtime.stats(target, containerId).pipe(take(2), last(undefined, null), timeout(10_000))),
      () => new ConflictError('NOT_RUNNING', 'The container is no longer on its node (stopped or deleted meanwhile).'),
    ),
    gpuUsage(runtime, target, instance),
  ]);
  if (!sample) throw new ConflictError('NOT_RUNNING', 'The container stopped before its stats could be read.');
  return { ...sample, gpus };
}

/** The last `tail` lines of a container's log, like `docker logs --tail`. */
/** What one `GET /logs` answer holds at most: the newest lines that fit (10,000 lines of 64 KiB would be 640 MB). */
export const LOG_TAIL_MAX_CHARS = 4 * 1024 * 1024;

/** The last `tail` lines, or the newest of them within LOG_TAIL_MAX_CHARS; memory stays within that as they stream in. */
/**
 * A container's log as a stream of text lines, paced by whoever reads it: the engine's stream is
 * paused while the reader (a slow download) has not taken what was sent.
 */
function logFile(runtime: ContainerRuntime, target: NodeTarget, containerId: string, tail: number): Readable {
  const paused$ = new BehaviorSubject(false);
  let subscription: Subscription | undefined;
  const stream = new Readable({
    highWaterMark: 256 * 1024,
    read() {
      if (paused$.value) paused$.next(false);
      if (subscription) return;
      subscription = runtime.logs(target, containerId, { tail, follow: false, paused$ }).subscribe({
        next: (line) => {
          if (!stream.push(`${line.time} ${line.stream} ${line.text}\n`)) paused$.next(true);
        },
        error: (err: unknown) => stream.destroy(err instanceof Error ? err : new Error(String(err))),
        complete: () => stream.push(null),
      });
    },
    destroy(err, callback) {
      subscription?.unsubscribe();
      callback(err);
    },
  });
  return stream;
}

async function logTail(runtime: ContainerRuntime, target: NodeTarget, containerId: string, tail: number) {
  return engineCall(
    () => firstValueFrom(runtime.logs(target, containerId, { tail, follow: false }).pipe(
      scan((kept: { lines: LogLine[]; chars: number }, line) => {
        kept.lines.push(line);
        kept.chars += line.text.length;
        while (kept.chars > LOG_TAIL_MAX_CHARS && kept.lines.length > 1) kept.chars -= kept.lines.shift()!.text.length;
        return kept;
      }, { lines: [], chars: 0 }),
      last(null, { lines: [] as LogLine[], chars: 0 }),
      map((kept) => kept.lines),
      timeout(10_000),
    )),
    () => new ConflictError('CONTAINER_GONE', 'The container is no longer on its node (deleted meanwhile); its log went with it.'),
  );
}

export function instanceRoutes(instances: Instances, runtime: ContainerRuntime, targetOf: (nodeId: string) => Promise<NodeTarget>, store: ReadStore, sshPort: number): RouteSpec[] {
  return [
    route({
      method: 'get', path: '/placements', tag: 'instances', access: 'user',
      summary: 'Nodes that can run this image + spec now, with their free cards and each card\'s free memory',
      query: PlacementQuery, response: z.array(Candidate),
      async handler({ actor, query }) {
        return instances.placements(actor, query.imageId, query.specId);
      },
    }),
    route({
      method: 'get', path: '/instances', tag: 'instances', access: 'user', summary: 'Your instances (admins: all), newest first',
      query: ListQuery, response: z.array(InstanceSchema),
      async handler({ actor, query }) {
        return (await instances.list(actor, query)).map(toInstanceDto);
      },
    }),
    route({
      method: 'post', path: '/instances', tag: 'instances', access: 'user', status: 201,
      summary: 'Create an instance: placed and reserved at once (201, status creating); 409 NO_CAPACITY when nothing fits',
      body: CreateInstance, response: InstanceSchema,
      async handler({ actor, body, context }) {
        return reply(201, toInstanceDto(await instances.create(actor, body, context)));
      },
    }),
    route({
      method: 'get', path: '/instances/:id', tag: 'instances', access: 'user',
      summary: 'One instance; with `at` (ISO time) the instance as it was then, folded from its history (time travel)',
      query: z.strictObject({ at: z.iso.datetime({ offset: true }).optional() }),
      response: InstanceSchema.extend({ deleted: z.boolean().optional() }),
      async handler({ actor, params, query }) {
        if (query.at) {
          const { deleted, ...view } = await instances.at(actor, params.id!, query.at);
          return { ...toInstanceDto(view), deleted };
        }
        return toInstanceDto(await instances.visible(actor, params.id!));
      },
    }),
    route({
      method: 'post', path: '/instances/:id/start', tag: 'instances', access: 'user', response: InstanceSchema,
      summary: 'Start the instance (503 when the node is unreachable: it runs when the node is back). `gpuMode=none`: 无卡模式, a stopped GPU instance starts without its cards at the spec\'s no-GPU price (its container is made again from its own files; the cards go back to the node); a plain start of such an instance takes free cards of its node again (409 NO_CAPACITY when none is free)',
      query: z.strictObject({ gpuMode: z.enum(['gpu', 'none']).optional().meta({ description: 'none: without GPUs (无卡模式); gpu (the default): with them' }) }),
      async handler({ actor, params, query, context }) {
        return toInstanceDto((await instances.operate(actor, params.id!, 'start', context, { gpuMode: query.gpuMode ?? 'gpu' }))!);
      },
    }),
    route({
      method: 'post', path: '/instances/:id/retry', tag: 'instances', access: 'user', response: InstanceSchema,
      summary: '重试创建: create a failed instance again on its node (its capacity taken again, the container it left replaced, its data volume kept); 409 NOT_FAILED unless failed, NO_CAPACITY when its cards are taken',
      async handler({ actor, params, context }) {
        return toInstanceDto((await instances.retry(actor, params.id!, context))!);
      },
    }),
    ...(['stop', 'restart'] as const).map((operation) =>
      route({
        method: 'post', path: `/instances/:id/${operation}`, tag: 'instances', access: 'user', response: InstanceSchema, status: 202,
        summary: `${operation[0]!.toUpperCase()}${operation.slice(1)} the instance: 202 at once with the instance \`pending: "${operation}"\`; the engine's work (the spec's stopGraceSeconds before SIGKILL) runs after and its outcome arrives on /live and in the history (an unreachable node: it runs when the node is back). \`wait=true\`: 200 once done (503 when the node is unreachable, 502 when the engine refuses)`,
        query: z.strictObject({ wait: z.enum(['true', 'false']).optional().meta({ description: 'true: answer when the operation is done' }) }),
        async handler({ actor, params, query, context }) {
          const wait = query.wait === 'true';
          const view = await instances.operate(actor, params.id!, operation, context, { background: !wait });
          return reply(wait ? 200 : 202, toInstanceDto(view!));
        },
      }),
    ),
    route({
      method: 'put', path: '/instances/:id/scheduled-stop', tag: 'instances', access: 'user', response: InstanceSchema,
      summary: '定时关机: stop the running instance at a time or after some hours (replaces an earlier one); survives restarts, fires within seconds of its time',
      body: ScheduleStopBody,
      // Somebody else's instance is a 404 before the body is read, as everywhere.
      guard: ({ actor, params }) => instances.visible(actor, params.id!),
      async handler({ actor, params, body, context }) {
        return toInstanceDto(await instances.scheduleStop(actor, params.id!, body, context));
      },
    }),
    route({
      method: 'put', path: '/instances/:id/idle-stop', tag: 'instances', access: 'user', response: InstanceSchema,
      summary: '空闲自动关机 for this instance: `{optOut: true}` switches the spec\'s idle auto-stop off (409 IDLE_STOP_REQUIRED where the spec does not allow it), `false` on again',
      body: z.strictObject({ optOut: z.boolean() }),
      guard: ({ actor, params }) => instances.visible(actor, params.id!),
      async handler({ actor, params, body, context }) {
        return toInstanceDto(await instances.setIdleOptOut(actor, params.id!, body.optOut, context));
      },
    }),
    route({
      method: 'delete', path: '/instances/:id/scheduled-stop', tag: 'instances', access: 'user', status: 204,
      summary: 'Cancel the scheduled stop (nothing to cancel is fine)',
      async handler({ actor, params, context }) {
        await instances.unscheduleStop(actor, params.id!, context);
        return reply(204);
      },
    }),
    route({
      method: 'delete', path: '/instances/:id', tag: 'instances', access: 'user', status: 204,
      summary: 'Delete the instance: its container, then every named volume it mounted, and its reservation',
      async handler({ actor, params, context }) {
        await instances.operate(actor, params.id!, 'delete', context);
        return reply(204);
      },
    }),
    route({
      method: 'get', path: '/instances/:id/history', tag: 'instances', access: 'user', summary: 'What happened to the instance: who, what, when',
      response: z.array(z.object({
        revision: z.number(), type: z.string(), at: z.string(), by: z.string().nullable(),
        summary: z.string().meta({ description: 'the entry in English (operators\' internals for admins only)' }),
        code: z.string().meta({ description: 'the entry as a code with its params, for a console to put in its reader\'s language (the console\'s words.<code>)' }),
        params: z.record(z.string(), z.union([z.string(), z.number()])),
        detail: z.string().optional().meta({ description: 'the engine\'s own text behind a plain reason' }),
      })),
      async handler({ actor, params }) {
        await instances.visible(actor, params.id!);
        // A service's use is recorded once a minute for the idle auto-stop: activity, not history.
        const events = (await instances.history(params.id!)).filter((e) => e.type !== 'InstanceServiceUsed');
        const users = store.collection<UserView>(USERS);
        const names = new Map<string, string>();
        for (const id of new Set(events.map((e) => e.metadata.userId).filter((u): u is string => Boolean(u)))) {
          names.set(id, (await users.get(id))?.username ?? id);
        }
        const admin = actor.role === 'admin';
        const context: HistoryContext = { pending: null };
        return events.map((e) => ({
          revision: e.revision,
          type: e.type,
          at: e.metadata.time,
          by: e.metadata.userId ? names.get(e.metadata.userId)! : null,
          summary: describeInstanceEvent(e, admin),
          ...instanceEventWords(e, context, admin),
        }));
      },
    }),
    route({
      method: 'get', path: '/instances/:id/metrics', tag: 'instances', access: 'user',
      summary: 'The instance\'s charts: CPU, memory, GPU memory and network over the last hour (a point a minute) or day (a point per 15 minutes), each point the mean of the reconcile loop\'s samples in it',
      query: z.strictObject({ range: z.enum(['hour', 'day']).default('hour') }),
      response: z.object({
        range: z.enum(['hour', 'day']), bucketSeconds: z.number(),
        points: z.array(z.object({
          t: z.string(), cpuPercent: z.number().nullable(), memoryBytes: z.number().nullable(), gpuMemoryBytes: z.number().nullable(),
          rxBytesPerSecond: z.number().nullable(), txBytesPerSecond: z.number().nullable(),
        })),
      }),
      async handler({ actor, params, query }) {
        await instances.visible(actor, params.id!);
        const series = await store.collection<Series>(INSTANCE_SERIES).get(params.id!);
        return {
          range: query.range,
          bucketSeconds: (query.range === 'hour' ? HOUR_BUCKET_MS : DAY_BUCKET_MS) / 1000,
          points: pointsOf(series, query.range, Date.now()).map(({ n: _n, ...p }) => p),
        };
      },
    }),
    route({
      method: 'get', path: '/instances/:id/logs/download', tag: 'instances', access: 'user',
      summary: 'The container log as a text file (日志下载): the last `tail` lines (100,000 unless given, at most 1,000,000), "<time> <stream> <text>" each, streamed',
      query: z.strictObject({ tail: z.coerce.number().int().min(1).max(1_000_000).default(100_000) }),
      async handler({ actor, params, query }) {
        const instance = await instances.visible(actor, params.id!);
        if (!instance.containerId) throw new ConflictError('NO_CONTAINER', 'This instance has no container yet, so no log.');
        const target = await targetOf(instance.nodeId);
        const name = `${instance.name}-${new Date().toISOString().slice(0, 19).replace(/[-:T]/g, '')}.log`;
        return new RawBody('text/plain; charset=utf-8', logFile(runtime, target, instance.containerId, query.tail), name);
      },
    }),
    route({
      method: 'get', path: '/instances/:id/logs', tag: 'instances', access: 'user', summary: 'The last lines of the container log (stdout and stderr, with timestamps)',
      query: z.strictObject({ tail: z.coerce.number().int().min(1).max(10_000).default(200) }),
      response: z.array(z.object({ stream: z.enum(['stdout', 'stderr']), time: z.string(), text: z.string() })),
      async handler({ actor, params, query }) {
        const instance = await instances.visible(actor, params.id!);
        if (!instance.containerId) return [];
        return logTail(runtime, await targetOf(instance.nodeId), instance.containerId, query.tail);
      },
    }),
    route({
      method: 'get', path: '/instances/:id/stats', tag: 'instances', access: 'user',
      summary: 'CPU, memory, network, block I/O, PIDs and GPU memory per granted card (null when unreadable)', response: StatsSchema,
      async handler({ actor, params }) {
        const instance = await instances.visible(actor, params.id!);
        return statsSnapshot(runtime, await targetOf(instance.nodeId), instance);
      },
    }),
    route({
      method: 'get', path: '/instances/:id/ssh', tag: 'instances', access: 'user',
      summary: 'How to reach the instance through the SSH jump host: shell, file transfer, port forwarding and VS Code',
      response: SshAccessSchema,
      async handler({ actor, params, headers }) {
        const instance = await instances.visible(actor, params.id!);
        const host = String(headers.host ?? 'localhost').replace(/:\d+$/, '');
        return sshAccess({ host, port: sshPort, user: `${actor.username}+${instance.name}`, instanceName: instance.name });
      },
    }),
  ];
}
