import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { NotFoundError } from '../../domain/shared/errors.ts';
import { webhookDecider, webhookStream } from '../../domain/webhook/webhook.decider.ts';
import { WEBHOOK_FORMATS, maskBotUrl } from '../../domain/webhook/bots.ts';
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
  .refine((s) => URL.canParse(s) && ['http:', 'https:'].includes(new URL(s).protocol), 'must be an http:// or https:// URL')
  .refine((s) => !URL.canParse(s) || (new URL(s).username === '' && new URL(s).password === ''), 'must not contain a user name or password')
  .meta({ example: 'https://hooks.example.com/tianqi' });

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
}).superRefine((body, ctx) => {
  if (body.format === 'tianqi' && (body.secret ?? '').length < 16) ctx.addIssue({ code: 'custom', path: ['secret'], message: 'must be at least 16 characters' });
  if (body.format === 'wecom' && body.secret) ctx.addIssue({ code: 'custom', path: ['secret'], message: '企业微信 bots do not sign: leave it out' });
});

export const WebhookSchema = z.object({
  id: z.string(),
  url: z.string(),
  events: z.array(z.string()),
  description: z.string(),
  format: z.enum(WEBHOOK_FORMATS),
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
  return { id, url, events: [...events], description, format: view.format ?? 'tianqi', hasSecret: view.hasSecret ?? true, createdAt };
}

export function webhookRoutes(bus: CommandBus, store: ReadStore, secrets: SecretBox): RouteSpec[] {
  const webhooks = () => store.collection<WebhookView>(WEBHOOKS);
  const existing = async (id: string) => {
    const webhook = await webhooks().get(id);
    if (!webhook) throw new NotFoundError('Webhook');
    return webhook;
  };
  return [
    route({
      method: 'get', path: '/webhooks', tag: 'webhooks', access: 'admin', summary: 'List webhooks, oldest first',
      response: z.array(WebhookSchema),
      async handler() {
        return (await webhooks().find({}, { sort: { createdAt: 1 } })).map(toWebhookDto);
      },
    }),
    route({
      method: 'post', path: '/webhooks', tag: 'webhooks', access: 'admin', status: 201,
      summary: 'Register a webhook: matching events from now on are POSTed to it, signed with the secret',
      body: CreateWebhook, response: WebhookSchema,
      async handler({ body, context }) {
        const webhookId = randomUUID();
        const { secret, url, ...fields } = body;
        // A bot's address is its key: sealed like the secret, and only its masked form is kept in plain.
        const bot = body.format !== 'tianqi';
        const data = {
          webhookId, ...fields, hasSecret: Boolean(secret), url: bot ? maskBotUrl(url) : url, ...(bot ? { urlSealed: secrets.seal(url) } : {}), secretSealed: secrets.seal(secret ?? ''),
        };
        await bus.execute(webhookDecider, webhookStream(webhookId), { type: 'RegisterWebhook', data }, context);
        return reply(201, toWebhookDto(await existing(webhookId)));
      },
    }),
    route({
      method: 'delete', path: '/webhooks/:id', tag: 'webhooks', access: 'admin', status: 204, summary: 'Delete a webhook; its deliveries stop',
      async handler({ params, context }) {
        await bus.execute(webhookDecider, webhookStream(params.id!), { type: 'DeleteWebhook', data: {} }, context);
        return reply(204);
      },
    }),
    route({
      method: 'get', path: '/webhooks/:id/deliveries', tag: 'webhooks', access: 'admin',
      summary: 'The latest delivery attempts (up to 100), newest first, with status codes and errors',
      response: z.array(DeliveryAttemptSchema),
      async handler({ params }) {
        return (await existing(params.id!)).deliveries;
      },
    }),
  ];
}
