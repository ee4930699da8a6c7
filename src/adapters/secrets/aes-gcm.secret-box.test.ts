import { randomBytes } from 'node:crypto';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SecretTamperedError } from '../../ports/secret-box.port.ts';
import { AesGcmSecretBox, loadMasterKey } from './aes-gcm.secret-box.ts';

describe('AES-256-GCM secret box', () => {
  const box = new AesGcmSecretBox(randomBytes(32));

  it('round-trips a secret and never repeats a ciphertext', () => {
    const secret = '-----BEGIN PRIVATE KEY-----\n显存\n-----END PRIVATE KEY-----';
    const a = box.seal(secret);
    expect(box.open(a)).toBe(secret);
    expect(box.seal(secret)).not.toBe(a);
    expect(a).not.toContain('PRIVATE');
  });

  it('rejects tampered, truncated and foreign ciphertext', () => {
    const sealed = box.seal('ssh-password');
    const parts = sealed.split('.');
    const flipped = Buffer.from(parts[3]!, 'base64url');
    flipped[0]! ^= 1;
    expect(() => box.open([parts[0], parts[1], parts[2], flipped.toString('base64url')].join('.'))).toThrow(SecretTamperedError);
    expect(() => box.open(sealed.slice(0, -2))).toThrow(SecretTamperedError);
    expect(() => box.open('garbage')).toThrow(SecretTamperedError);
    expect(() => new AesGcmSecretBox(randomBytes(32)).open(sealed)).toThrow(SecretTamperedError);
  });

  it('derives distinct keys per purpose', () => {
    expect(box.deriveKey('tokens').equals(box.deriveKey('tokens'))).toBe(true);
    expect(box.deriveKey('tokens').equals(box.deriveKey('other'))).toBe(false);
  });
});

describe('master key', () => {
  it('creates a 0600 key file once and reads it back', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tianqi-key-'));
    const first = loadMasterKey(dir, undefined);
    expect(first.source).toBe('created');
    expect(statSync(join(dir, 'master.key')).mode & 0o777).toBe(0o600);
    const second = loadMasterKey(dir, undefined);
    expect(second.source).toBe('file');
    expect(second.key.equals(first.key)).toBe(true);
  });

  it('takes the key from the environment and refuses a wrong length', () => {
    const key = randomBytes(32);
    expect(loadMasterKey('/nonexistent', key.toString('base64')).key.equals(key)).toBe(true);
    expect(() => loadMasterKey('/nonexistent', randomBytes(16).toString('base64'))).toThrow(/32 bytes/);
  });
});
