/** Field names whose values never leave the platform, wherever they sit in an event. */
const SECRET_NAME = /(sealed|password|passwordhash|secret|token|privatekey|tlskey|apikey)$|^(authorization|cookie)$/i;
/** The SecretBox's ciphertext (`v1.<iv>.<tag>.<ciphertext>`, base64url), caught even under an innocent name. */
const SEALED_VALUE = /^v1\.[\w-]{16}\.[\w-]{22}\.[\w-]*$/;
export const REDACTED = '[redacted]';

/**
 * A copy of event data safe to show or send outside (audit feed, webhooks): values of secret-named fields and anything
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
