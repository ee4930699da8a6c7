import { z } from 'zod';
import { route, type RouteSpec } from '../../http/route.ts';
import { assertSelfOrAdmin, type Accounts } from '../user/accounts.ts';
import type { Balances } from './balances.ts';

const Money = z.number();
const StatementSchema = z.object({
  userId: z.string(),
  enabled: z.boolean().meta({ description: 'whether this deployment is prepaid (TIANQI_PREPAID=1)' }),
  openedAt: z.string().nullable().meta({ description: 'the first credit or debit: usage counts from then; null: no account yet' }),
  balance: Money.meta({ description: 'credited − usage since the opening, 4 decimals' }),
  credited: Money.meta({ description: 'Σ credits − Σ debits' }),
  usage: Money.meta({ description: 'the meter\'s cost since the opening (each instance rounded to 4 decimals once)' }),
  lowBalance: Money.meta({ description: 'below this the owner is warned once (TIANQI_LOW_BALANCE)' }),
  warned: z.boolean(),
  exhausted: z.boolean().meta({ description: 'used up: running instances were stopped (欠费停机); creates and starts are refused until a credit' }),
  adjustments: z.array(z.object({ amount: Money, reason: z.string(), byUsername: z.string(), at: z.string() })).meta({ description: 'newest first' }),
  instances: z.array(z.object({ instanceId: z.string(), name: z.string(), deleted: z.boolean(), seconds: z.number(), cost: Money })),
  asOf: z.string(),
});

const Adjustment = z.strictObject({
  amount: z.number().refine((n) => n !== 0, 'must not be 0').refine((n) => Math.abs(n) <= 100_000_000, 'at most 100,000,000 either way')
    .refine((n) => Math.abs(Math.round(n * 10_000) - n * 10_000) < 1e-6, 'at most 4 decimals')
    .meta({ description: '> 0: a credit (充值); < 0: a debit (扣款)' }),
  reason: z.string().trim().min(1, 'say why (it is on the statement)').max(200),
});

/** 预付费余额: a user's statement (themselves or an admin) and an admin's credits and debits. */
export function balanceRoutes(balances: Balances, accounts: Accounts): RouteSpec[] {
  return [
    route({
      method: 'get', path: '/users/:id/balance', tag: 'users', access: 'user',
      summary: 'A user\'s prepaid balance and statement: credits and debits with their reasons, usage per instance since the opening (admins: anyone; users: themselves)',
      response: StatementSchema,
      async handler({ actor, params }) {
        assertSelfOrAdmin(actor, params.id!);
        await accounts.get(params.id!);
        return balances.statement(params.id!);
      },
    }),
    route({
      method: 'post', path: '/users/:id/balance/adjustments', tag: 'users', access: 'admin', status: 201,
      summary: 'Credit (充值) or debit (扣款) a user\'s prepaid balance, with a reason; the first one opens the account (usage counts from then). 409 PREPAID_OFF unless TIANQI_PREPAID=1',
      body: Adjustment, response: StatementSchema,
      async handler({ actor, params, body, context }) {
        await accounts.get(params.id!);
        await balances.adjust(params.id!, body.amount, body.reason, actor.username, context);
        return balances.statement(params.id!);
      },
    }),
  ];
}
