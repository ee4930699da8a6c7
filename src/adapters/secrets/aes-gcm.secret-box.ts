import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SecretBox } from '../../ports/secret-box.port.ts';
import { SecretTamperedError } from '../../ports/secret-box.port.ts';

const VERSION = 'v1';
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** AES-256-GCM. Format: `v1.<iv>.<tag>.<ciphertext>`, each part base64url. */
export class AesGcmSecretBox implements SecretBox {
  private readonly key: Buffer;
  private readonly master: Buffer;

  constructor(masterKey: Buffer) {
    if (masterKey.length !== 32) throw new Error('the master key must be 32 bytes');
    // The encryption key is derived too, so no two purposes ever share key material.
    this.key = Buffer.from(hkdfSync('sha256', masterKey, Buffer.alloc(0), 'tianqi/secrets/aes-256-gcm', 32));
    this.master = masterKey;
  }

  seal(plaintext: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return [VERSION, iv, cipher.getAuthTag(), ciphertext].map((p) => (typeof p === 'string' ? p : p.toString('base64url'))).join('.');
  }

  open(sealed: string): string {
    const [version, iv, tag, ciphertext, ...rest] = sealed.split('.');
    if (version !== VERSION || iv === undefined || tag === undefined || ciphertext === undefined || rest.length > 0) {
      throw new SecretTamperedError();
    }
    const ivBytes = Buffer.from(iv, 'base64url');
    const tagBytes = Buffer.from(tag, 'base64url');
    if (ivBytes.length !== IV_BYTES || tagBytes.length !== TAG_BYTES) throw new SecretTamperedError();
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, ivBytes);
      decipher.setAuthTag(tagBytes);
      return Buffer.concat([decipher.update(Buffer.from(ciphertext, 'base64url')), decipher.final()]).toString('utf8');
    } catch {
      throw new SecretTamperedError();
    }
  }

  deriveKey(purpose: string): Buffer {
    return Buffer.from(hkdfSync('sha256', this.master, Buffer.alloc(0), `tianqi/${purpose}`, 32));
  }
}

/**
 * The master key: `TIANQI_MASTER_KEY` (base64 of 32 bytes) or `<dataDir>/master.key`, created
 * with mode 0600 on first start. Losing it makes every sealed secret unreadable.
 */
export function loadMasterKey(dataDir: string, fromEnv: string | undefined): { key: Buffer; source: 'env' | 'file' | 'created' } {
  if (fromEnv) {
    const key = Buffer.from(fromEnv, 'base64');
    if (key.length !== 32) throw new Error('TIANQI_MASTER_KEY must be the base64 encoding of exactly 32 bytes');
    return { key, source: 'env' };
  }
  const file = join(dataDir, 'master.key');
  mkdirSync(dataDir, { recursive: true });
  try {
    const key = Buffer.from(readFileSync(file, 'utf8').trim(), 'base64');
    if (key.length !== 32) throw new Error(`${file} does not hold a base64 32-byte key`);
    if ((statSync(file).mode & 0o077) !== 0) chmodSync(file, 0o600);
    return { key, source: 'file' };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const key = randomBytes(32);
  // `wx`: never overwrite a key another process created a moment ago.
  writeFileSync(file, `${key.toString('base64')}\n`, { mode: 0o600, flag: 'wx' });
  return { key, source: 'created' };
}
