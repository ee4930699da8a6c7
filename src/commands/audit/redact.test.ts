import { describe, expect, it } from 'vitest';
import { redactSecrets } from './redact.ts';

describe('redacting event data', () => {
  it('hides ciphertext, hashes and secret-named fields at any depth, keeps the rest', () => {
    expect(redactSecrets({
      name: 'gpu-01', tlsKeySealed: 'v1.abc', sshPasswordSealed: null, passwordHash: 'scrypt$…',
      nested: [{ secret: 's3cret', token: 'eyJ', keep: 1 }],
    })).toEqual({
      name: 'gpu-01', tlsKeySealed: '[encrypted]', sshPasswordSealed: null, passwordHash: '[redacted]',
      nested: [{ secret: '[redacted]', token: '[redacted]', keep: 1 }],
    });
  });
});
