import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tarOf } from './tar.ts';

describe('tarOf', () => {
  it('writes an archive GNU tar unpacks: directories, a file with its bytes and mode', () => {
    const content = Buffer.from('#!/bin/sh\necho 天启\n');
    const archive = tarOf([
      { name: '.tianqi/', mode: 0o755 },
      { name: '.tianqi/abc/', mode: 0o755 },
      { name: '.tianqi/abc/tianqi-helper', mode: 0o755, content },
    ]);
    expect(archive.length % 512).toBe(0);
    const dir = mkdtempSync(join(tmpdir(), 'tianqi-tar-'));
    try {
      writeFileSync(join(dir, 'a.tar'), archive);
      execFileSync('tar', ['-C', dir, '-xf', join(dir, 'a.tar')]);
      const file = join(dir, '.tianqi/abc/tianqi-helper');
      expect(readFileSync(file)).toEqual(content);
      expect(statSync(file).mode & 0o777).toBe(0o755);
      expect(execFileSync('tar', ['-tvf', join(dir, 'a.tar')]).toString()).toMatch(/^drwxr-xr-x/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a name ustar cannot hold', () => {
    expect(() => tarOf([{ name: `${'x'.repeat(101)}`, mode: 0o644, content: Buffer.alloc(1) }])).toThrow(/longer than 100 bytes/);
  });
});
