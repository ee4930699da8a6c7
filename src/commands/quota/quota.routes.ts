import { z } from 'zod';
import { randomUUID } from 'node:crypto';
import { GROUP_NAME, groupDecider, groupStream } from '../../domain/group/group.decider.ts';
import { groupQuotaStream, MAX_QUOTA, NO_LIMITS, quotaDecider, quotaStream } from '../../domain/quota/quota.decider.ts';
import { ConflictError, NotFoundError, ValidationError } from '../../domain/shared/errors.ts';
import { GROUPS, type GroupView } from '../../projections/groups.projection.ts';
import { reply, route, type RouteSpec } from '../../http/route.ts';
import type { ReadStore } from '../../ports/read-store.port.ts';
import { groupQuotaId, QUOTAS, type QuotaView } from '../../projections/quotas.projection.ts';
import { usageRecords } from '../../projections/usage.projection.ts';
import { gpuHoursThisMonth } from '../../domain/usage/metering.ts';
import type { CommandBus } from '../command-bus.ts';
import { assertSelfOrAdmin, type Accounts } from '../user/accounts.ts';

const Limits = z.strictObject({
  maxInstances: z.number().int().min(0).max(MAX_QUOTA).nullable()
    .meta({ description: 'instances holding compute at once (creating or running; stopped ones hold none); null: no limit' }),
  maxGpus: z.number().min(0).max(MAX_QUOTA).multipleOf(0.01).nullable()
    .meta({ description: 'GPUs held at once: a whole card counts 1, a vGPU slice its share of the card (20 of 80 GB: 0.25); null: no limit' }),
  maxGpuHoursPerMonth: z.number().min(0).max(MAX_QUOTA).multipleOf(0.01).nullable().optional()
    .meta({ description: 'GPU-hours per calendar month (UTC): running time × GPUs; once used up, GPU instances are refused at create and start; null or omitted: no limit' }),
});
const QuotaSchema = z.object({
  userId: z.string(),
  groupId: z.string().nullable().meta({ description: 'the user\'s 用户组, whose quota their instances count against too' }),
  limits: z.object({ maxInstances: z.number().nullable(), maxGpus: z.number().nullable(), maxGpuHoursPerMonth: z.number().nullable() }),
  used: z.object({ instances: z.number(), gpus: z.number(), gpuHoursThisMonth: z.number() }),
  holdings: z.array(z.object({ instanceId: z.string(), instanceName: z.string(), gpus: z.number() })),
});

function toQuotaDto(userId: string, view: QuotaView | null, gpuHoursThisMonth: number): z.infer<typeof QuotaSchema> {
  const limits = view?.limits ?? NO_LIMITS;
  return {
    userId,
    groupId: view?.groupId ?? null,
    limits: { maxInstances: limits.maxInstances, maxGpus: limits.maxGpus, maxGpuHoursPerMonth: limits.maxGpuHoursPerMonth ?? null },
    used: { ...(view?.used ?? { instances: 0, gpus: 0 }), gpuHoursThisMonth },
    holdings: (view?.holdings ?? []).map((h) => ({ instanceId: h.instanceId, instanceName: h.instanceName, gpus: h.gpus })),
  };
}

const GroupSchema = z.object({
  id: z.string(),
  name: z.string(),
  members: z.array(z.object({ userId: z.string() })),
  quota: z.object({
    limits: z.object({ maxInstances: z.number().nullable(), maxGpus: z.number().nullable(), maxGpuHoursPerMonth: z.number().nullable() }),
    used: z.object({ instances: z.number(), gpus: z.number() }),
  }),
  createdAt: z.string(),
});

/** Quotas (配额): each user's and each group's limits on instances and GPUs, checked at create and start. */
export function quotaRoutes(bus: CommandBus, store: ReadStore, accounts: Accounts): RouteSpec[] {
  const groups = () => store.collection<GroupView>(GROUPS);
  const quotas = () => store.collection<QuotaView>(QUOTAS);
  const groupDto = async (group: GroupView): Promise<z.infer<typeof GroupSchema>> => {
    const quota = await quotas().get(groupQuotaId(group.id));
    const limits = quota?.limits ?? NO_LIMITS;
    return {
      id: group.id,
      name: group.name,
      members: (await quotas().find({ groupId: group.id })).map((m) => ({ userId: m.id })),
      quota: {
        limits: { maxInstances: limits.maxInstances, maxGpus: limits.maxGpus, maxGpuHoursPerMonth: limits.maxGpuHoursPerMonth ?? null },
        used: { ...(quota?.used ?? { instances: 0, gpus: 0 }) },
      },
      createdAt: group.createdAt,
    };
  };
  const existingGroup = async (id: string) => {
    const group = await groups().get(id);
    if (!group) throw new NotFoundError('Group');
    return group;
  };
  const read = async (userId: string) => toQuotaDto(userId, await store.collection<QuotaView>(QUOTAS).get(userId),
    gpuHoursThisMonth(await usageRecords(store, userId), new Date().toISOString()));
  return [
    route({
      method: 'get', path: '/users/:id/quota', tag: 'users', access: 'user',
      summary: 'A user\'s quota, what they hold and with which instances (admins: anyone; users: themselves)',
      response: QuotaSchema,
      async handler({ actor, params }) {
        assertSelfOrAdmin(actor, params.id!);
        await accounts.get(params.id!);
        return read(params.id!);
      },
    }),
    route({
      method: 'put', path: '/users/:id/quota', tag: 'users', access: 'admin',
      summary: 'Set a user\'s quota; what they hold already stays, the next create or start is checked against it',
      body: Limits, response: QuotaSchema,
      async handler({ params, body, context }) {
        await accounts.get(params.id!);
        await bus.execute(quotaDecider, quotaStream(params.id!), { type: 'SetQuotaLimits', data: { ...body, maxGpuHoursPerMonth: body.maxGpuHoursPerMonth ?? null } }, context);
        return read(params.id!);
      },
    }),
    route({
      method: 'put', path: '/users/:id/group', tag: 'users', access: 'admin',
      summary: 'Put a user in a 用户组 (or none): their next creates and starts count against the group\'s quota too; what they hold stays where it was counted',
      body: z.strictObject({ groupId: z.string().max(64).nullable() }), response: QuotaSchema,
      async handler({ params, body, context }) {
        await accounts.get(params.id!);
        if (body.groupId !== null && !(await groups().get(body.groupId))) throw new ValidationError({ groupId: 'no such group' });
        await bus.execute(quotaDecider, quotaStream(params.id!), { type: 'SetQuotaGroup', data: { groupId: body.groupId } }, context);
        return read(params.id!);
      },
    }),
    route({
      method: 'get', path: '/groups', tag: 'users', access: 'admin', summary: '用户组, by name, with their members and quotas',
      response: z.array(GroupSchema),
      async handler() {
        return Promise.all((await groups().find({}, { sort: { nameLower: 1 } })).map(groupDto));
      },
    }),
    route({
      method: 'post', path: '/groups', tag: 'users', access: 'admin', status: 201, summary: 'Add a 用户组 (names are unique, case aside)',
      body: z.strictObject({ name: z.string().trim().regex(GROUP_NAME, 'must be 1–64 letters, digits, spaces, ".", "_" or "-", starting with a letter or digit') }),
      response: GroupSchema,
      async handler({ body, context }) {
        if (await groups().findOne({ nameLower: body.name.toLowerCase() })) throw new ConflictError('NAME_TAKEN', 'A group with this name exists.', { name: 'is taken' });
        const groupId = randomUUID();
        await bus.execute(groupDecider, groupStream(groupId), { type: 'CreateGroup', data: { groupId, name: body.name } }, context);
        return reply(201, await groupDto(await existingGroup(groupId)));
      },
    }),
    route({
      method: 'delete', path: '/groups/:id', tag: 'users', access: 'admin', status: 204, summary: 'Delete a 用户组 without members (409 GROUP_IN_USE otherwise)',
      async handler({ params, context }) {
        await existingGroup(params.id!);
        const members = await quotas().count({ groupId: params.id! });
        await bus.execute(groupDecider, groupStream(params.id!), { type: 'DeleteGroup', data: { members } }, context);
        return reply(204);
      },
    }),
    route({
      method: 'put', path: '/groups/:id/quota', tag: 'users', access: 'admin', summary: 'Set a 用户组\'s quota, shared by its members',
      body: Limits, response: GroupSchema,
      async handler({ params, body, context }) {
        const group = await existingGroup(params.id!);
        await bus.execute(quotaDecider, groupQuotaStream(group.id), { type: 'SetQuotaLimits', data: { ...body, maxGpuHoursPerMonth: body.maxGpuHoursPerMonth ?? null } }, context);
        return groupDto(group);
      },
    }),
  ];
}
