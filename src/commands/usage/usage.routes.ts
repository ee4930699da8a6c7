import { z } from 'zod';
import { usageInWindow } from '../../domain/usage/metering.ts';
import { ValidationError } from '../../domain/shared/errors.ts';
import { route, type RouteSpec } from '../../http/route.ts';
import type { ReadStore } from '../../ports/read-store.port.ts';
import { usageRecords } from '../../projections/usage.projection.ts';

const UsageQuery = z.strictObject({
  from: z.iso.datetime({ offset: true }).optional().meta({ description: 'default: the start of the current month (UTC)' }),
  to: z.iso.datetime({ offset: true }).optional().meta({ description: 'default: now' }),
  userId: z.string().max(64).optional().meta({ description: 'admins only: one user' }),
});
const Line = z.object({ seconds: z.number(), cost: z.number() });
const UsageReport = z.object({
  from: z.string(),
  to: z.string(),
  users: z.array(Line.extend({
    userId: z.string(),
    username: z.string(),
    instances: z.array(Line.extend({ instanceId: z.string(), name: z.string(), deleted: z.boolean(), pricePerHour: z.number() })),
  })),
  totalSeconds: z.number(),
  totalCost: z.number(),
});

const round4 = (n: number) => Math.round(n * 10_000) / 10_000;

/** 计费: billed time and cost per user and instance; users see their own, admins everyone. */
export function usageRoutes(store: ReadStore): RouteSpec[] {
  return [
    route({
      method: 'get', path: '/usage', tag: 'usage', access: 'user',
      summary: 'Billed running time and cost, grouped by user and instance (users: their own)',
      query: UsageQuery, response: UsageReport,
      async handler({ actor, query }) {
        const now = new Date();
        const to = query.to ? new Date(query.to).toISOString() : now.toISOString();
        const from = query.from ? new Date(query.from).toISOString() : new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1)).toISOString();
        if (from >= to) throw new ValidationError({ from: 'must be before to' });
        const owner = actor.role === 'admin' ? query.userId : actor.id;
        const byUser = new Map<string, z.infer<typeof UsageReport>['users'][number]>();
        for (const record of await usageRecords(store, owner)) {
          const { seconds, cost } = usageInWindow(record, from, to, now.toISOString());
          if (seconds === 0 && record.intervals.every((i) => i.end !== null && i.end <= from)) continue;
          let user = byUser.get(record.ownerId);
          if (!user) byUser.set(record.ownerId, (user = { userId: record.ownerId, username: record.ownerName, seconds: 0, cost: 0, instances: [] }));
          user.instances.push({ instanceId: record.id, name: record.name, deleted: record.deleted, pricePerHour: record.pricePerHour, seconds, cost });
          user.seconds += seconds;
          user.cost = round4(user.cost + cost);
        }
        const users = [...byUser.values()];
        return {
          from,
          to,
          users,
          totalSeconds: users.reduce((sum, u) => sum + u.seconds, 0),
          totalCost: round4(users.reduce((sum, u) => sum + u.cost, 0)),
        };
      },
    }),
  ];
}
