/** Pure rules of webhook delivery: what a webhook gets, in what shape, and when it is retried. */

/** `Instance*` matches every type starting with `Instance`; `*` matches all; anything else is an exact type name. */
export function matchesEventTypes(patterns: readonly string[], type: string): boolean {
  return patterns.some((p) => (p.endsWith('*') ? type.startsWith(p.slice(0, -1)) : p === type));
}

/**
 * Streams never delivered: the webhooks' own delivery records (a webhook on `*` would otherwise
 * feed itself forever) and idempotency claims (they hold whole request answers, not domain facts).
 */
export function isDeliverableStream(stream: string): boolean {
  return !stream.startsWith('webhook-deliveries-') && !stream.startsWith('idempotency-');
}

/** Field names whose values never leave the platform, wherever they sit in an event. */
const SECRET_NAME = /(sealed|password|passwordhash|secret|token|privatekey|tlskey|apikey)$|^(authorization|cookie)$/i;
/** The SecretBox's ciphertext (`v1.<iv>.<tag>.<ciphertext>`, base64url), caught even under an innocent name. */
const SEALED_VALUE = /^v1\.[\w-]{16}\.[\w-]{22}\.[\w-]*$/;
export const REDACTED = '[redacted]';

/**
 * A copy of event data safe to send to a third party: values of secret-named fields and anything
 * shaped like sealed ciphertext become `[redacted]`. Null and empty values stay as they are, so a
 * receiver still learns whether a secret is set.
 */
export function redactEventData(value: unknown): unknown {
  if (typeof value === 'string') return SEALED_VALUE.test(value) ? REDACTED : value;
  if (Array.isArray(value)) return value.map(redactEventData);
  if (value === null || typeof value !== 'object') return value;
  const copy: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(value)) {
    copy[key] = SECRET_NAME.test(key) && field !== null && field !== '' ? REDACTED : redactEventData(field);
  }
  return copy;
}

/** Exponential backoff: `base` before the first retry, doubling, never above `cap`. */
export function retryDelayMs(failedAttempts: number, baseMs: number, capMs: number): number {
  return Math.min(capMs, baseMs * 2 ** Math.max(0, failedAttempts - 1));
}
