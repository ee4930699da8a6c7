import { createHash, createPublicKey } from 'node:crypto';

export interface ParsedPublicKey {
  readonly keyType: string;
  /** `<type> <base64>` without the comment: what sshd compares. */
  readonly publicKey: string;
  readonly comment: string;
  /** `SHA256:<base64 without padding>`, as `ssh-keygen -lf` prints it. */
  readonly fingerprint: string;
}

const KEY_TYPES = new Set([
  'ssh-ed25519',
  'ssh-rsa',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
]);

/** Reads the SSH wire-format strings of a key blob (RFC 4253 §6.6). */
function readStrings(blob: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let offset = 0;
  while (offset < blob.length) {
    if (offset + 4 > blob.length) throw new Error('truncated');
    const length = blob.readUInt32BE(offset);
    offset += 4;
    if (offset + length > blob.length) throw new Error('truncated');
    out.push(blob.subarray(offset, offset + length));
    offset += length;
  }
  return out;
}

/**
 * Validates one OpenSSH public key line (`ssh-ed25519 AAAA… comment`). Returns a reason in
 * words when it is not a usable key.
 */
export function parseOpenSshPublicKey(line: string): ParsedPublicKey | { error: string } {
  const parts = line.trim().split(/\s+/);
  const [keyType, base64, ...comment] = parts;
  if (!keyType || !base64) return { error: 'must be one OpenSSH public key line: "<type> <base64> [comment]"' };
  if (!KEY_TYPES.has(keyType)) return { error: `unsupported key type ${keyType.slice(0, 40)}` };
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(base64)) return { error: 'the key data is not base64' };
  const blob = Buffer.from(base64, 'base64');
  let fields: Buffer[];
  try {
    fields = readStrings(blob);
  } catch {
    return { error: 'the key data is truncated' };
  }
  if (fields[0]?.toString('latin1') !== keyType) return { error: 'the key data does not match its type' };
  if (keyType === 'ssh-ed25519' && fields[1]?.length !== 32) return { error: 'an ed25519 key has 32 bytes' };
  if (keyType === 'ssh-rsa') {
    const modulus = fields[2];
    const bits = modulus ? (modulus.length - (modulus[0] === 0 ? 1 : 0)) * 8 : 0;
    if (bits < 2048) return { error: 'RSA keys need at least 2048 bits' };
    try {
      createPublicKey({ key: toRsaJwk(fields[1]!, modulus!), format: 'jwk' });
    } catch {
      return { error: 'not a valid RSA key' };
    }
  }
  const fingerprint = `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
  return { keyType, publicKey: `${keyType} ${base64}`, comment: comment.join(' '), fingerprint };
}

function toRsaJwk(exponent: Buffer, modulus: Buffer) {
  const strip = (b: Buffer) => (b[0] === 0 ? b.subarray(1) : b);
  return { kty: 'RSA', e: strip(exponent).toString('base64url'), n: strip(modulus).toString('base64url') };
}
