import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ssh2 from 'ssh2';

export const HOST_KEY_FILE = 'ssh_host_ed25519_key';

/**
 * The jump host's ed25519 key, made on the first start and read on every later one: clients pin
 * it in known_hosts, so a new key would look like a man-in-the-middle to them. OpenSSH's own
 * private key format, because ssh2 parses that (and PKCS1) but not PKCS8.
 */
export function loadOrCreateHostKey(dataDir: string): string {
  const file = join(dataDir, HOST_KEY_FILE);
  mkdirSync(dataDir, { recursive: true });
  try {
    // 'wx': a second process starting at the same moment keeps the first one's key.
    writeFileSync(file, newHostKey(), { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const key = readFileSync(file, 'utf8');
  const parsed = ssh2.utils.parseKey(key);
  // A damaged file is an operator's problem to solve; replacing it would change the key silently.
  if (parsed instanceof Error || !parsed.isPrivateKey()) {
    throw new Error(`${file} is not a usable SSH host key (${parsed instanceof Error ? parsed.message : 'no private key'})`);
  }
  return key;
}

/**
 * A new ed25519 key in OpenSSH's format that ssh2 itself can read back: its generator makes one
 * it cannot parse about once in 250 ("Malformed OpenSSH private key"), which failed a start.
 */
function newHostKey(): string {
  for (let attempt = 1; ; attempt++) {
    const key = ssh2.utils.generateKeyPairSync('ed25519').private;
    const parsed = ssh2.utils.parseKey(key);
    if (!(parsed instanceof Error) && parsed.isPrivateKey()) return key;
    if (attempt >= 20) throw new Error(`could not make an SSH host key: ${parsed instanceof Error ? parsed.message : 'no private key'}`);
  }
}
