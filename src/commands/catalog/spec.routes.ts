import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { DEFAULT_STOP_GRACE_SECONDS, SPEC_LIMITS, imageCanRun, specDecider, specStream } from '../../domain/catalog/spec.decider.ts';
import { MAX_PUBLIC_PORTS } from '../../domain/instance/service-ports.ts';
import { NotFoundError } from '../../domain/shared/errors.ts';
import { reply, route, type RouteSpec } from '../../http/route.ts';
import type { ReadStore } from '../../ports/read-store.port.ts';
import { SPECS, type SpecView } from '../../projections/catalog.projection.ts';
import type { CommandBus } from '../command-bus.ts';
import { liveInstancesUsing } from './catalog-usage.ts';
import { catalogListQuery, name, nameFilter, nonNegativeInt, text } from './fields.ts';
import { visibleImage } from './image.routes.ts';

const number = (max: number) => z.number().min(0, 'must be at least 0').max(max, `must be at most ${max}`);
const fields = {
  name,
  gpuModel: text(64).meta({ description: 'GPU model; may be empty when gpuCount is 0', example: 'NVIDIA A100-SXM4-80GB' }),
  gpuCount: nonNegativeInt(SPEC_LIMITS.gpuCount).meta({ description: '0 = CPU-only spec' }),
  gpuMemoryGb: number(SPEC_LIMITS.gpuMemoryGb).meta({ description: 'per card; with vGPU the slice granted on each card' }),
  vgpuSupported: z.boolean(),
  cpuCores: nonNegativeInt(SPEC_LIMITS.cpuCores),
  memoryGb: nonNegativeInt(SPEC_LIMITS.memoryGb),
  systemDiskGb: nonNegativeInt(SPEC_LIMITS.systemDiskGb),
  dataDiskGb: nonNegativeInt(SPEC_LIMITS.dataDiskGb),
  pricePerHour: number(SPEC_LIMITS.pricePerHour).meta({ description: 'at most 4 decimals' }),
  listed: z.boolean(),
  remark: text(2_000),
  containerOverrides: z.strictObject({
    pidsLimit: nonNegativeInt(4_194_304).optional().meta({ description: 'processes and threads at most; 0 = no limit' }),
    noNewPrivileges: z.boolean().optional().meta({ description: 'false lets setuid programs (sudo) work' }),
  }).optional().meta({ description: "exceptions to the platform's container limits (TIANQI_CONTAINER_*) for this spec's instances" }),
  internet: z.boolean().meta({ description: '无外网 when false: instances reach nothing beyond their own bridge (no internet, no private networks); takes effect for instances created after the change' }),
  idleStop: z.strictObject({
    minutes: z.number().int().meta({ description: 'idle this long (5–10080 minutes), the instance is stopped; warned 10 minutes before (or at the half)' }),
    cpuPercent: z.number().meta({ description: 'CPU below this (percent of one core) counts as idle, 0–100' }),
    gpuPercent: z.number().meta({ description: 'every GPU below this utilisation counts as idle, 0–100' }),
    optOutAllowed: z.boolean().meta({ description: 'whether owners may switch it off for their instance' }),
  }).nullable().meta({ description: '空闲自动关机 for this spec\'s running instances (also those running now); null: none' }),
  noGpuPricePerHour: z.number().nullable().meta({ description: '无卡模式: the price per hour of an instance started without its GPUs (GPU specs only; at most 4 decimals); null: the mode is not offered' }),
  stopGraceSeconds: nonNegativeInt(600).meta({
    description: '停止宽限期: seconds a stop or restart gives the processes after SIGTERM before they are killed (0–600; default 10, as docker stop); applies to running instances too',
  }),
  publicPorts: nonNegativeInt(MAX_PUBLIC_PORTS).meta({
    description: '公网端口: service ports an instance may publish on its node\'s public IP, open to anyone without sign-in; 0 = none',
  }),
};
const CreateSpec = z.strictObject({
  name: fields.name,
  gpuModel: fields.gpuModel.default(''),
  gpuCount: fields.gpuCount.default(0),
  gpuMemoryGb: fields.gpuMemoryGb.default(0),
  vgpuSupported: fields.vgpuSupported.default(false),
  cpuCores: fields.cpuCores,
  memoryGb: fields.memoryGb,
  systemDiskGb: fields.systemDiskGb.default(0),
  dataDiskGb: fields.dataDiskGb.default(0),
  pricePerHour: fields.pricePerHour.default(0),
  listed: fields.listed.default(true),
  remark: fields.remark.default(''),
  containerOverrides: fields.containerOverrides,
  internet: fields.internet.default(true),
  idleStop: fields.idleStop.default(null),
  noGpuPricePerHour: fields.noGpuPricePerHour.default(null),
  publicPorts: fields.publicPorts.default(0),
  stopGraceSeconds: fields.stopGraceSeconds.default(DEFAULT_STOP_GRACE_SECONDS),
});
const UpdateSpec = z.strictObject(fields).partial();
export const SpecSchema = z.object({ id: z.string(), ...fields, createdAt: z.string(), updatedAt: z.string() });
const SpecListQuery = catalogListQuery.extend({
  imageId: z.string().max(64).optional().meta({ description: 'only specs this image can run' }),
});

export function toSpecDto(view: SpecView): z.infer<typeof SpecSchema> {
  const { nameLower: _n, _position: _p, ...dto } = view as SpecView & { _position?: number };
  return { ...dto, internet: dto.internet ?? true, idleStop: dto.idleStop ?? null, noGpuPricePerHour: dto.noGpuPricePerHour ?? null, publicPorts: dto.publicPorts ?? 0, stopGraceSeconds: dto.stopGraceSeconds ?? DEFAULT_STOP_GRACE_SECONDS };
}

export function specRoutes(bus: CommandBus, store: ReadStore): RouteSpec[] {
  const specs = () => store.collection<SpecView>(SPECS);
  return [
    route({
      method: 'get', path: '/specs', tag: 'specs', access: 'user',
      summary: 'List specs, sorted by name; with imageId only those the image can run (users: listed ones)',
      query: SpecListQuery, response: z.array(SpecSchema),
      async handler({ actor, query }) {
        const listed = actor.role === 'admin' ? (query.listed === undefined ? {} : { listed: query.listed === 'true' }) : { listed: true };
        const image = query.imageId ? await visibleImage(store, actor, query.imageId) : undefined;
        const all = await specs().find({ ...listed, ...nameFilter(query.q) }, { sort: { nameLower: 1 } });
        return all.filter((spec) => !image || imageCanRun(image, spec)).map(toSpecDto);
      },
    }),
    route({
      method: 'post', path: '/specs', tag: 'specs', access: 'admin', status: 201, summary: 'Add a spec',
      body: CreateSpec, response: SpecSchema,
      async handler({ body, context }) {
        const specId = randomUUID();
        await bus.execute(specDecider, specStream(specId), { type: 'CreateSpec', data: { specId, ...body } }, context);
        return reply(201, toSpecDto((await specs().get(specId))!));
      },
    }),
    route({
      method: 'get', path: '/specs/:id', tag: 'specs', access: 'user', summary: 'One spec', response: SpecSchema,
      async handler({ actor, params }) {
        const spec = await specs().get(params.id!);
        if (!spec || (actor.role !== 'admin' && !spec.listed)) throw new NotFoundError('Spec');
        return toSpecDto(spec);
      },
    }),
    route({
      method: 'patch', path: '/specs/:id', tag: 'specs', access: 'admin', summary: 'Change a spec (rules are checked on the result)',
      body: UpdateSpec, response: SpecSchema,
      async handler({ params, body, context }) {
        await bus.execute(specDecider, specStream(params.id!), { type: 'UpdateSpec', data: body }, context);
        return toSpecDto((await specs().get(params.id!))!);
      },
    }),
    route({
      method: 'delete', path: '/specs/:id', tag: 'specs', access: 'admin', status: 204,
      summary: 'Delete a spec (409 IN_USE while a live instance uses it)',
      async handler({ params, context }) {
        const liveInstances = await liveInstancesUsing(store, 'specId', params.id!);
        await bus.execute(specDecider, specStream(params.id!), { type: 'DeleteSpec', data: { liveInstances } }, context);
        return reply(204);
      },
    }),
  ];
}
