import type { DeliveryAttempt, WebhookDeliveryEvent } from '../domain/webhook/webhook-delivery.decider.ts';
import { RECENT_ATTEMPTS } from '../domain/webhook/webhook-delivery.decider.ts';
import type { WebhookEvent, WebhookFields } from '../domain/webhook/webhook.decider.ts';
import type { RecordedEvent } from '../ports/event-store.port.ts';
import { documentProjection } from './projection-runner.ts';

/** A webhook as admins see it; its secret stays sealed in the event log, never in a read model. */
export interface WebhookView extends WebhookFields {
  readonly id: string;
  readonly createdAt: string;
  /** Every event up to this position is acknowledged or not wanted: where the delivery loop resumes. */
  readonly checkpoint: number;
  /** The latest attempts, newest first. */
  readonly deliveries: readonly DeliveryAttempt[];
}

export const WEBHOOKS = 'webhooks';

/** Both streams of a webhook (`webhook-<id>`, `webhook-deliveries-<id>`) fold into one document. */
function webhookIdOf(event: RecordedEvent): string | undefined {
  for (const prefix of ['webhook-deliveries-', 'webhook-']) {
    if (event.stream.startsWith(prefix)) return event.stream.slice(prefix.length);
  }
  return undefined;
}

export const webhooksProjection = documentProjection<WebhookView>({
  name: 'webhooks',
  collection: WEBHOOKS,
  idOf: webhookIdOf,
  evolve(doc, recorded) {
    const event = recorded as RecordedEvent & (WebhookEvent | WebhookDeliveryEvent);
    switch (event.type) {
      case 'WebhookRegistered': {
        const { webhookId, url, events, description, format, hasSecret, ownerId } = event.data;
        // Delivery starts after the registration itself: a webhook gets what happens from then on.
        return { id: webhookId, url, events, description, format: format ?? 'tianqi', hasSecret: hasSecret ?? true, ...(ownerId ? { ownerId } : {}), createdAt: recorded.metadata.time, checkpoint: recorded.position, deliveries: [] };
      }
      case 'WebhookDeliveriesRecorded':
        // A record written while the webhook was being deleted finds no document and is dropped.
        return doc && {
          ...doc,
          checkpoint: Math.max(doc.checkpoint, event.data.position),
          deliveries: [...event.data.attempts].reverse().concat(doc.deliveries).slice(0, RECENT_ATTEMPTS),
        };
      case 'WebhookDeleted':
        return null;
      default:
        return undefined;
    }
  },
});
