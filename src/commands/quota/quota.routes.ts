import { z } from 'zod';
import { MAX_QUOTA, NO_LIMITS, quotaDecider, quotaStream } from '../../domain/quota/quota.decider.ts';
import { route, type RouteSpec } from '../../http/route.ts';
import type { ReadStore } from '../../ports/read-store.port.ts';
import { QUOTAS, type QuotaView } from '../../projections/quotas.projection.ts';
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
  limits: z.object({ maxInstances: z.number().nullable(), maxGpus: z.number().nullable(), maxGpuHoursPerMonth: z.number().nullable() }),
  used: z.object({ instances: z.number(), gpus: z.number(), gpuHoursThisMonth: z.number() }),
  holdings: z.array(z.object({ instanceId: z.string(), instanceName: z.string(), gpus: z.number() })),
});

function toQuotaDto(userId: string, view: QuotaView | null, gpuHoursThisMonth: number): z.infer<typeof QuotaSchema> {
  const limits = view?.limits ?? NO_LIMITS;
  return {
    userId,
    limits: { maxInstances: limits.maxInstances, maxGpus: limits.maxGpus, maxGpuHoursPerMonth: limits.maxGpuHoursPerMonth ?? null },
    used: { ...(view?.used ?? { instances: 0, gpus: 0 }), gpuHoursThisMonth },
    holdings: (view?.holdings ?? []).map((h) => ({ instanceId: h.instanceId, instanceName: h.instanceName, gpus: h.gpus })),
  };
}

/** Quotas (配额): each user's limits on instances and GPUs at once, checked at create and start. */
export function quotaRoutes(bus: CommandBus, store: ReadStore, accounts: Accounts): RouteSpec[] {
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
  ];
}
