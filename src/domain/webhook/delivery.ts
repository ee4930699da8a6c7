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

/** Exponential backoff: `base` before the first retry, doubling, never above `cap`. */
export function retryDelayMs(failedAttempts: number, baseMs: number, capMs: number): number {
  return Math.min(capMs, baseMs * 2 ** Math.max(0, failedAttempts - 1));
}
