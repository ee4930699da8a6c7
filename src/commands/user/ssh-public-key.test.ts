import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseOpenSshPublicKey } from './ssh-public-key.ts';

const dir = mkdtempSync(join(tmpdir(), 'tianqi-keys-'));
let made = 0;
function keygen(type: string, bits?: number): { line: string; fingerprint: string } {
  const file = join(dir, `${type}-${made++}`);
  execFileSync('ssh-keygen', ['-q', '-t', type, ...(bits ? ['-b', String(bits)] : []), '-N', '', '-C', 'lab@gpu', '-f', file]);
  const fingerprint = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${file}.pub`]).toString().split(' ')[1]!;
  return { line: readFileSync(`${file}.pub`, 'utf8'), fingerprint };
}

describe('OpenSSH public keys', () => {
  it.each([['ed25519'], ['rsa', 3072], ['ecdsa', 256]] as const)('accepts a %s key with the fingerprint ssh-keygen prints', (type, bits?: number) => {
    const { line, fingerprint } = keygen(type, bits);
    const parsed = parseOpenSshPublicKey(line);
    expect(parsed).toMatchObject({ fingerprint, comment: 'lab@gpu' });
  });

  it('rejects keys that are not usable, with a reason', () => {
    const { line } = keygen('rsa', 1024);
    expect(parseOpenSshPublicKey(line)).toEqual({ error: 'RSA keys need at least 2048 bits' });
    expect(parseOpenSshPublicKey('hello')).toHaveProperty('error');
    expect(parseOpenSshPublicKey('ssh-dss AAAAB3NzaC1kc3M=')).toHaveProperty('error');
    expect(parseOpenSshPublicKey('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA==')).toHaveProperty('error');
    const ed = keygen('ed25519').line.split(' ');
    expect(parseOpenSshPublicKey(`ssh-rsa ${ed[1]}`)).toEqual({ error: 'the key data does not match its type' });
    expect(parseOpenSshPublicKey(`ssh-ed25519 ${ed[1]!.slice(0, 30)}`)).toHaveProperty('error');
  });
});
