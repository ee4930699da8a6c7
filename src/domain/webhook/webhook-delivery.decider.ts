import type { Command, Decider, DomainEvent } from '../shared/decider.ts';
import { assertNever } from '../shared/decider.ts';

/** One POST of one event to one webhook. */
export interface DeliveryAttempt {
  readonly eventId: string;
  readonly type: string;
  readonly position: number;
  /** 1 for the first try of this event, 2 for the first retry… */
  readonly attempt: number;
  /** HTTP status of the answer; null when none came (refused, timed out). */
  readonly status: number | null;
  readonly error: string | null;
  readonly durationMs: number;
  readonly at: string;
}

/** How many attempts one record and the deliveries read model keep. */
export const RECENT_ATTEMPTS = 100;

/**
 * The delivery log of one webhook lives in its own stream, apart from `webhook-<id>`, so the
 * delivery loop never competes with admins for the registration stream's revision and can be kept
 * out of deliveries by stream name (a webhook on `*` must not be fed its own records).
 * Each record carries the checkpoint (every event up to `position` is acknowledged or not wanted)
 * and the attempts since the previous record; the loop writes one at most about every second,
 * so the stream grows with delivery activity, never with idle time.
 */
export type WebhookDeliveryEvent = DomainEvent<'WebhookDeliveriesRecorded', {
  webhookId: string;
  position: number;
  attempts: readonly DeliveryAttempt[];
}>;

export type WebhookDeliveryCommand = Command<'RecordWebhookDeliveries', {
  webhookId: string;
  position: number;
  attempts: readonly DeliveryAttempt[];
}>;

export interface WebhookDeliveryState {
  /** The recorded checkpoint; -1 before the first record. */
  readonly position: number;
}

export const webhookDeliveryStream = (webhookId: string) => `webhook-deliveries-${webhookId}`;

export const webhookDeliveryDecider: Decider<WebhookDeliveryCommand, WebhookDeliveryState, WebhookDeliveryEvent> = {
  initialState: () => ({ position: -1 }),
  decide(command, state) {
    switch (command.type) {
      case 'RecordWebhookDeliveries': {
        const { webhookId, position, attempts } = command.data;
        if (attempts.length === 0 && position <= state.position) return [];
        // A checkpoint never moves back: that would re-send acknowledged events after a restart.
        const data = { webhookId, position: Math.max(position, state.position), attempts: attempts.slice(-RECENT_ATTEMPTS) };
        return [{ type: 'WebhookDeliveriesRecorded', data }];
      }
      default:
        return assertNever(command.type);
    }
  },
  evolve(state, event) {
    switch (event.type) {
      case 'WebhookDeliveriesRecorded':
        return { position: Math.max(state.position, event.data.position) };
      default:
        return assertNever(event.type);
    }
  },
};
