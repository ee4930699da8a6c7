import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HOST_KEY_FILE, loadOrCreateHostKey } from './host-key.ts';

describe("the jump host's host key", () => {
  it('is made usable on every first start (ssh2 makes an unreadable key about once in 250)', () => {
    const root = mkdtempSync(join(tmpdir(), 'tianqi-hostkey-'));
    try {
      for (let i = 0; i < 1_500; i++) {
        const dir = join(root, String(i));
        expect(() => loadOrCreateHostKey(dir)).not.toThrow();
      }
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }, 60_000);

  it('keeps the key across starts, and refuses a damaged file rather than replacing it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tianqi-hostkey-'));
    try {
      const first = loadOrCreateHostKey(dir);
      expect(loadOrCreateHostKey(dir)).toBe(first);
      writeFileSync(join(dir, HOST_KEY_FILE), 'not a key');
      expect(() => loadOrCreateHostKey(dir)).toThrow(/not a usable SSH host key/);
      expect(readFileSync(join(dir, HOST_KEY_FILE), 'utf8')).toBe('not a key');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
