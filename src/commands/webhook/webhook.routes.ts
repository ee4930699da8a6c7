import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { ForbiddenError, NotFoundError, ValidationError } from '../../domain/shared/errors.ts';
import type { Actor } from '../user/accounts.ts';
import { webhookDecider, webhookStream } from '../../domain/webhook/webhook.decider.ts';
import { MAILTO, WEBHOOK_FORMATS, maskBotUrl, type WebhookFormat } from '../../domain/webhook/bots.ts';
import { reply, route, type RouteSpec } from '../../http/route.ts';
import type { ReadStore } from '../../ports/read-store.port.ts';
import type { SecretBox } from '../../ports/secret-box.port.ts';
import { WEBHOOKS, type WebhookView } from '../../projections/webhooks.projection.ts';
import type { CommandBus } from '../command-bus.ts';
import { text } from '../catalog/fields.ts';

/**
 * Only http and https, and no user name or password in the address: it is shown in lists and kept
 * in plain text in the log, so credentials belong in the secret (receivers check the signature).
 */
const webhookUrl = z
  .string()
  .trim()
  .max(2_048, 'must be at most 2048 characters')
  .meta({ example: 'https://hooks.example.com/tianqi', description: 'http(s) address; for format email: mailto:<one address>' });

/** Why an address does not fit its format, or null. */
function urlProblem(url: string, format: WebhookFormat): string | null {
  if (format === 'email') return MAILTO.test(url) ? null : 'must be mailto: and one email address, such as mailto:zhangsan@lab.example.cn';
  if (!URL.canParse(url) || !['http:', 'https:'].includes(new URL(url).protocol)) return 'must be an http:// or https:// URL';
  if (new URL(url).username !== '' || new URL(url).password !== '') return 'must not contain a user name or password';
  return null;
}

const eventPattern = z
  .string()
  .regex(/^(?:[A-Za-z][A-Za-z0-9]*\*?|\*)$/, 'must be an event type name such as InstanceStateObserved, or a prefix ending in * such as Instance*');

const CreateWebhook = z.strictObject({
  url: webhookUrl,
  events: z.array(eventPattern).min(1, 'must name at least one event type').max(100, 'must name at most 100 event types'),
  format: z.enum(WEBHOOK_FORMATS).default('tianqi').meta({
    description: 'tianqi: the event as signed JSON; wecom, dingtalk, feishu: a message in Chinese to a 企业微信 / 钉钉 / 飞书 group bot (its address is then kept sealed and shown masked)',
  }),
  secret: z
    .string()
    .max(256, 'must be at most 256 characters')
    .optional()
    .meta({ description: 'write-only; tianqi: the HMAC-SHA256 key of the X-TianQi-Signature header (16+ characters, required); dingtalk, feishu: the bot\'s 加签 / 签名校验 secret, if it has one', writeOnly: true }),
  description: text(500).default(''),
  scope: z.enum(['platform', 'mine']).optional().meta({
    description: 'platform (admins only; their default): every matching event; mine (users\' only kind): only events of the caller\'s own instances',
  }),
}).superRefine((body, ctx) => {
  const problem = urlProblem(body.url, body.format);
  if (problem) ctx.addIssue({ code: 'custom', path: ['url'], message: problem });
  if (body.format === 'tianqi' && (body.secret ?? '').length < 16) ctx.addIssue({ code: 'custom', path: ['secret'], message: 'must be at least 16 characters' });
  if ((body.format === 'wecom' || body.format === 'email') && body.secret) ctx.addIssue({ code: 'custom', path: ['secret'], message: `${body.format === 'wecom' ? '企业微信 bots do not sign' : 'email is not signed'}: leave it out` });
});

export const WebhookSchema = z.object({
  id: z.string(),
  url: z.string(),
  events: z.array(z.string()),
  description: z.string(),
  format: z.enum(WEBHOOK_FORMATS),
  scope: z.enum(['platform', 'mine']),
  ownerId: z.string().nullable().meta({ description: 'whose own instances it follows; null for the platform\'s' }),
  hasSecret: z.boolean(),
  createdAt: z.string(),
});

export const DeliveryAttemptSchema = z.object({
  eventId: z.string(),
  type: z.string(),
  position: z.number(),
  attempt: z.number().meta({ description: '1 for the first try of the event, 2 for the first retry…' }),
  status: z.number().nullable().meta({ description: 'HTTP status of the answer; null when none came' }),
  error: z.string().nullable(),
  durationMs: z.number(),
  at: z.string(),
});

function toWebhookDto(view: WebhookView): z.infer<typeof WebhookSchema> {
  const { id, url, events, description, createdAt } = view;
  return {
    id, url, events: [...events], description, format: view.format ?? 'tianqi', scope: view.ownerId ? 'mine' : 'platform', ownerId: view.ownerId ?? null,
    hasSecret: view.hasSecret ?? true, createdAt,
  };
}

export function webhookRoutes(bus: CommandBus, store: ReadStore, secrets: SecretBox, emailEnabled = false): RouteSpec[] {
  const webhooks = () => store.collection<WebhookView>(WEBHOOKS);
  /** A webhook the actor may see: admins any, users their own (another's is a 404, never a 403). */
  const existing = async (id: string, actor?: Actor) => {
    const webhook = await webhooks().get(id);
    if (!webhook || (actor && actor.role !== 'admin' && webhook.ownerId !== actor.id)) throw new NotFoundError('Webhook');
    return webhook;
  };
  return [
    route({
      method: 'get', path: '/webhooks', tag: 'webhooks', access: 'user', summary: 'List webhooks, oldest first (admins: all; users: their own)',
      response: z.array(WebhookSchema),
      async handler({ actor }) {
        return (await webhooks().find(actor.role === 'admin' ? {} : { ownerId: actor.id }, { sort: { createdAt: 1 } })).map(toWebhookDto);
      },
    }),
    route({
      method: 'post', path: '/webhooks', tag: 'webhooks', access: 'user', status: 201,
      summary: 'Register a webhook: matching events from now on are POSTed to it (users: only their own instances\' events)',
      body: CreateWebhook, response: WebhookSchema,
      async handler({ actor, body, context }) {
        const webhookId = randomUUID();
        const { secret, url, scope, ...fields } = body;
        if (body.format === 'email' && !emailEnabled) {
          throw new ValidationError({ format: 'email needs the deployment\'s SMTP relay: TIANQI_SMTP_URL is not set' });
        }
        const mine = (scope ?? (actor.role === 'admin' ? 'platform' : 'mine')) === 'mine';
        if (!mine && actor.role !== 'admin') throw new ForbiddenError('Only admins register webhooks for the whole platform; yours follow your own instances (scope: mine).');
        if (mine) Object.assign(fields, { ownerId: actor.id });
        // A bot's address is its key: sealed like the secret, and only its masked form is kept in plain.
        const bot = body.format !== 'tianqi' && body.format !== 'email';
        const data = {
          webhookId, ...fields, hasSecret: Boolean(secret), url: bot ? maskBotUrl(url) : url, ...(bot ? { urlSealed: secrets.seal(url) } : {}), secretSealed: secrets.seal(secret ?? ''),
        };
        await bus.execute(webhookDecider, webhookStream(webhookId), { type: 'RegisterWebhook', data }, context);
        return reply(201, toWebhookDto(await existing(webhookId)));
      },
    }),
    route({
      method: 'delete', path: '/webhooks/:id', tag: 'webhooks', access: 'user', status: 204, summary: 'Delete a webhook; its deliveries stop (users: their own)',
      async handler({ actor, params, context }) {
        await existing(params.id!, actor);
        await bus.execute(webhookDecider, webhookStream(params.id!), { type: 'DeleteWebhook', data: {} }, context);
        return reply(204);
      },
    }),
    route({
      method: 'get', path: '/webhooks/:id/deliveries', tag: 'webhooks', access: 'user',
      summary: 'The latest delivery attempts (up to 100), newest first, with status codes and errors (users: their own webhooks)',
      response: z.array(DeliveryAttemptSchema),
      async handler({ actor, params }) {
        return (await existing(params.id!, actor)).deliveries;
      },
    }),
  ];
}
