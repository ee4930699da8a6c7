import { createTransport } from 'nodemailer';
import { BehaviorSubject } from 'rxjs';
import type { WebhookFormat } from '../../domain/webhook/bots.ts';
import { messageFor, type Names } from './people.ts';
import { NODES, type NodeView } from '../../projections/catalog.projection.ts';
import { INSTANCES, type InstanceView } from '../../projections/instances.projection.ts';
import { USERS, type UserView } from '../../projections/users.projection.ts';
import type { WebhookEvent } from '../../domain/webhook/webhook.decider.ts';
import { webhookDecider, webhookStream } from '../../domain/webhook/webhook.decider.ts';
import type { RecordedEvent } from '../../ports/event-store.port.ts';
import { WEBHOOKS, type WebhookView } from '../../projections/webhooks.projection.ts';
import type { Plugin } from '../plugin-host.ts';
import { DeliveryLoop, type DeliveryOptions } from './delivery-loop.ts';

/** `TIANQI_WEBHOOK_RETRY_BASE_MS` shortens the first retry wait (tests); the default is 1 s. */
function deliveryOptions(env: NodeJS.ProcessEnv): DeliveryOptions {
  const base = Number(env.TIANQI_WEBHOOK_RETRY_BASE_MS);
  return {
    retryBaseMs: Number.isSafeInteger(base) && base > 0 ? base : 1_000,
    retryCapMs: 5 * 60_000,
    timeoutMs: 10_000,
    recordEveryMs: 1_000,
  };
}

/**
 * POSTs matching events to the registered webhooks, each from its own checkpoint (see DeliveryLoop).
 * Loops start and stop as webhooks are registered and deleted; nothing on the command path ever
 * waits for a delivery.
 */
export const webhooksPlugin: Plugin = {
  name: 'webhooks',
  singleton: true,
  async start(ctx) {
    const options = deliveryOptions(process.env);
    const loops = new Map<string, DeliveryLoop>();
    const stopping = new Set<Promise<void>>();
    const deleted = new Set<string>();
    const head$ = new BehaviorSubject((await ctx.eventStore.headPosition()) ?? 0);
    const timeZone = ctx.config.timeZone;
    /** A group bot's words: the instance's or node's name from the read models (a deleted one keeps its id). */
    const message = async (event: RecordedEvent) => {
      const id = event.stream.slice(event.stream.indexOf('-') + 1);
      const names: Names = {};
      if (event.stream.startsWith('instance-')) {
        const instance = await ctx.readStore.collection<InstanceView>(INSTANCES).get(id);
        if (instance) Object.assign(names, { instance: { name: instance.name, ownerName: instance.ownerName } });
      } else if (event.stream.startsWith('node-')) {
        const node = await ctx.readStore.collection<NodeView>(NODES).get(id);
        if (node) Object.assign(names, { node: node.name });
      } else if (event.stream.startsWith('balance-')) {
        const user = await ctx.readStore.collection<UserView>(USERS).get(id);
        if (user) Object.assign(names, { username: user.username });
      }
      return messageFor(event, names, timeZone);
    };
    /** Instance owners never change: looked up once (the read model, or a deleted one's first event). */
    const owners = new Map<string, string | null>();
    const ownerOf = async (instanceId: string): Promise<string | null> => {
      if (owners.has(instanceId)) return owners.get(instanceId)!;
      const view = await ctx.readStore.collection<InstanceView>(INSTANCES).get(instanceId);
      const owner = view?.ownerId
        ?? ((await ctx.eventStore.readStream(`instance-${instanceId}`)).find((e) => e.type === 'InstanceRequested')?.data as { ownerId?: string } | undefined)?.ownerId
        ?? null;
      owners.set(instanceId, owner);
      if (owners.size > 50_000) owners.delete(owners.keys().next().value!);
      return owner;
    };
    // One connection pool to the SMTP relay for every email webhook.
    const transport = ctx.config.smtp ? createTransport(ctx.config.smtp.url) : null;
    const mail = transport
      ? async (to: string, subject: string, text: string) => {
        await transport.sendMail({ from: ctx.config.smtp!.from, to, subject, text });
      }
      : undefined;
    const dependencies = { eventStore: ctx.eventStore, bus: ctx.bus, logger: ctx.logger, head$, message, ownerOf, ...(mail ? { mail } : {}) };

    const startLoop = (webhook: { webhookId: string; url: string; events: readonly string[]; secretSealed: string; urlSealed?: string; format?: WebhookFormat; ownerId?: string }, checkpoint: number) => {
      const { webhookId: id, events, format, ownerId } = webhook;
      if (loops.has(id) || deleted.has(id)) return;
      let secret: string;
      let url: string;
      try {
        secret = ctx.secrets.open(webhook.secretSealed);
        url = webhook.urlSealed ? ctx.secrets.open(webhook.urlSealed) : webhook.url;
      } catch (err) {
        ctx.logger.error({ err, webhookId: id }, 'the webhook secret cannot be opened (another master key?); its deliveries are paused');
        return;
      }
      const loop = new DeliveryLoop({ id, url, events, secret, ...(format ? { format } : {}), ...(ownerId ? { ownerId } : {}) }, checkpoint, dependencies, options);
      loops.set(id, loop);
      loop.start();
    };
    const stopLoop = (id: string) => {
      deleted.add(id);
      const loop = loops.get(id);
      if (!loop) return;
      loops.delete(id);
      const stopped = loop.stop({ record: false }).finally(() => stopping.delete(stopped));
      stopping.add(stopped);
    };

    // Subscribed before the existing webhooks are listed, so a registration in between is not missed.
    const subscription = ctx.events$.subscribe((recorded) => {
      if (recorded.position > head$.value) head$.next(recorded.position);
      const event = recorded as RecordedEvent & WebhookEvent;
      if (event.type === 'WebhookRegistered') startLoop(event.data, recorded.position);
      else if (event.type === 'WebhookDeleted') stopLoop(event.data.webhookId);
    });
    await ctx.waitForProjections(head$.value);
    for (const view of await ctx.readStore.collection<WebhookView>(WEBHOOKS).all()) {
      const { state } = await ctx.bus.load(webhookDecider, webhookStream(view.id));
      if (state.status === 'active') {
        startLoop({ webhookId: view.id, ...state.fields, secretSealed: state.secretSealed, ...(state.urlSealed ? { urlSealed: state.urlSealed } : {}) }, view.checkpoint);
      }
    }
    return {
      async stop() {
        subscription.unsubscribe();
        await Promise.all([...[...loops.values()].map((loop) => loop.stop({ record: true })), ...stopping]);
        loops.clear();
        transport?.close();
      },
    };
  },
};
