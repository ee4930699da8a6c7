import type { Command, Decider, DomainEvent } from '../shared/decider.ts';
import { assertNever } from '../shared/decider.ts';
import { ConflictError, NotFoundError } from '../shared/errors.ts';
import type { WebhookFormat } from './bots.ts';

/** An outside receiver of events (admins register it). */
export interface WebhookFields {
  /** http:// or https:// address the events are POSTed to. */
  readonly url: string;
  /** Event type names (`InstanceStateObserved`) or prefixes ending in `*` (`Instance*`, `*`). */
  readonly events: readonly string[];
  readonly description: string;
  /** How events are sent: the platform's signed JSON (absent: this), or a group bot's message. */
  readonly format?: WebhookFormat;
  /** Whether a secret was given (absent: yes; a 企业微信 bot, or a bot without 加签, has none). */
  readonly hasSecret?: boolean;
  /**
   * A user's own webhook: only events of the instances they own reach it (absent: the platform's,
   * made by an admin, with every matching event).
   */
  readonly ownerId?: string;
}

/** The HMAC key is sealed by the SecretBox before it enters the event, like node secrets. */
export type WebhookEvent =
  /** A group bot's address carries its key: `url` is then masked and `urlSealed` the address. */
  | DomainEvent<'WebhookRegistered', WebhookFields & { webhookId: string; secretSealed: string; urlSealed?: string }>
  | DomainEvent<'WebhookDeleted', { webhookId: string }>;

export type WebhookCommand =
  | Command<'RegisterWebhook', WebhookFields & { webhookId: string; secretSealed: string; urlSealed?: string }>
  | Command<'DeleteWebhook', Record<string, never>>;

export type WebhookState =
  | { readonly status: 'none' }
  | { readonly status: 'active' | 'deleted'; readonly webhookId: string; readonly fields: WebhookFields; readonly secretSealed: string; readonly urlSealed?: string };

export const webhookStream = (webhookId: string) => `webhook-${webhookId}`;

export const webhookDecider: Decider<WebhookCommand, WebhookState, WebhookEvent> = {
  initialState: () => ({ status: 'none' }),
  decide(command, state) {
    switch (command.type) {
      case 'RegisterWebhook':
        if (state.status !== 'none') throw new ConflictError('WEBHOOK_EXISTS', 'This webhook already exists.');
        return [{ type: 'WebhookRegistered', data: command.data }];
      case 'DeleteWebhook':
        if (state.status !== 'active') throw new NotFoundError('Webhook');
        return [{ type: 'WebhookDeleted', data: { webhookId: state.webhookId } }];
      default:
        return assertNever(command);
    }
  },
  evolve(state, event) {
    switch (event.type) {
      case 'WebhookRegistered': {
        const { webhookId, secretSealed, urlSealed, ...fields } = event.data;
        return { status: 'active', webhookId, secretSealed, ...(urlSealed ? { urlSealed } : {}), fields };
      }
      case 'WebhookDeleted':
        return state.status === 'none' ? state : { ...state, status: 'deleted' };
      default:
        return assertNever(event);
    }
  },
};
