import { describe, expect, it } from 'vitest';
import { REDACTED, redactEventData } from '../shared/redact.ts';
import { isDeliverableStream, matchesEventTypes, retryDelayMs } from './delivery.ts';
import { webhookDeliveryDecider } from './webhook-delivery.decider.ts';
import { webhookDecider } from './webhook.decider.ts';
import { NotFoundError } from '../shared/errors.ts';

const sealed = `v1.${'a'.repeat(16)}.${'b'.repeat(22)}.${'c'.repeat(30)}`;
const meta = { now: '2026-11-26T10:00:00.000Z' };

describe('redactEventData', () => {
  it('redacts sealed fields, password hashes, passwords, secrets and tokens at any depth', () => {
    const data = {
      userId: 'u1',
      passwordHash: 'scrypt$abc',
      node: { tlsKeySealed: 'x', sshPasswordSealed: null, sshPassword: 'p', publicIp: '10.0.0.1' },
      webhooks: [{ secretSealed: 'y', secret: 'z', url: 'https://example.com/hook' }],
      session: { token: 't', accessToken: 'a', privateKey: 'k', authorization: 'Bearer t' },
    };
    expect(redactEventData(data)).toEqual({
      userId: 'u1',
      passwordHash: REDACTED,
      node: { tlsKeySealed: REDACTED, sshPasswordSealed: null, sshPassword: REDACTED, publicIp: '10.0.0.1' },
      webhooks: [{ secretSealed: REDACTED, secret: REDACTED, url: 'https://example.com/hook' }],
      session: { token: REDACTED, accessToken: REDACTED, privateKey: REDACTED, authorization: REDACTED },
    });
  });

  it('redacts sealed ciphertext under any field name and leaves ordinary values and the input alone', () => {
    const data = { note: sealed, list: [sealed, 'v1.short'], passwordChangedAt: '2026-01-01', count: 3, ok: true, none: null };
    expect(redactEventData(data)).toEqual({ note: REDACTED, list: [REDACTED, 'v1.short'], passwordChangedAt: '2026-01-01', count: 3, ok: true, none: null });
    expect(data.note).toBe(sealed);
  });
});

describe('what a webhook gets', () => {
  it('matches exact type names and prefixes ending in *', () => {
    expect(matchesEventTypes(['InstanceStateObserved'], 'InstanceStateObserved')).toBe(true);
    expect(matchesEventTypes(['InstanceStateObserved'], 'InstanceStateObservedLater')).toBe(false);
    expect(matchesEventTypes(['Image*', 'UserRegistered'], 'ImageDeleted')).toBe(true);
    expect(matchesEventTypes(['Image*', 'UserRegistered'], 'UserDeleted')).toBe(false);
    expect(matchesEventTypes(['*'], 'Anything')).toBe(true);
  });

  it('never delivers the webhooks own delivery records or idempotency claims', () => {
    expect(isDeliverableStream('webhook-deliveries-1')).toBe(false);
    expect(isDeliverableStream('idempotency-abc')).toBe(false);
    expect(isDeliverableStream('webhook-1')).toBe(true);
    expect(isDeliverableStream('user-1')).toBe(true);
  });

  it('backs off exponentially from the base up to the cap', () => {
    expect([1, 2, 3, 4, 10, 30].map((n) => retryDelayMs(n, 1_000, 300_000))).toEqual([1_000, 2_000, 4_000, 8_000, 300_000, 300_000]);
  });
});

describe('webhook streams', () => {
  it('registers once and deletes once', () => {
    const data = { webhookId: 'w1', url: 'https://example.com/', events: ['*'], description: '', secretSealed: sealed };
    const registered = webhookDecider.decide({ type: 'RegisterWebhook', data, metadata: meta }, webhookDecider.initialState());
    const state = registered.reduce(webhookDecider.evolve, webhookDecider.initialState());
    expect(webhookDecider.decide({ type: 'DeleteWebhook', data: {}, metadata: meta }, state)).toEqual([{ type: 'WebhookDeleted', data: { webhookId: 'w1' } }]);
    const deleted = webhookDecider.evolve(state, { type: 'WebhookDeleted', data: { webhookId: 'w1' } });
    expect(() => webhookDecider.decide({ type: 'DeleteWebhook', data: {}, metadata: meta }, deleted)).toThrow(NotFoundError);
  });

  it('never moves a delivery checkpoint back and records nothing when nothing changed', () => {
    const state = { position: 40 };
    const record = (position: number, attempts = 0) => webhookDeliveryDecider.decide({
      type: 'RecordWebhookDeliveries',
      data: { webhookId: 'w1', position, attempts: Array.from({ length: attempts }, (_, i) => ({ eventId: `e${i}`, type: 'T', position: i, attempt: 1, status: 200, error: null, durationMs: 1, at: meta.now })) },
      metadata: meta,
    }, state);
    expect(record(40)).toEqual([]);
    expect(record(30, 1)[0]!.data.position).toBe(40);
    expect(record(50)[0]!.data.position).toBe(50);
    expect(record(50, 150)[0]!.data.attempts).toHaveLength(100);
  });
});
