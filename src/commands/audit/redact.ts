/** Field names whose values never leave the platform, wherever they sit in an event. */
const SECRET_NAME = /(sealed$|^passwordhash$|^password$|^secret$|^token$|^tlskey$|^sshpassword$|^privatekey$)/i;

/**
 * A copy of an event's data with secrets replaced: ciphertext (`…Sealed`) reads `[encrypted]`,
 * password hashes and anything named like a secret `[redacted]`. Used by the audit feed.
 */
export function redactSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redactSecrets);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(value)) {
    if (SECRET_NAME.test(key)) out[key] = field === null || field === '' ? field : /sealed$/i.test(key) ? '[encrypted]' : '[redacted]';
    else out[key] = redactSecrets(field);
  }
  return out;
}
