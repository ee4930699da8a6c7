/**
 * Builds tianqi-helper (helper/: the static program the jump host copies into a container for
 * SFTP and port forwarding) for linux/amd64 and linux/arm64 into dist/helper/, when a build is
 * missing or older than its sources. Needs Go 1.23 or later; without it, says so and leaves the
 * platform without file transfer and port forwarding (the jump host then tells its users why).
 * `npm start` and `npm test` run it first. Usage: tsx scripts/build-helper.ts [--force] [--strict]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SOURCE = fileURLToPath(new URL('../helper/', import.meta.url));
export const HELPER_DIST = fileURLToPath(new URL('../dist/helper/', import.meta.url));
export const HELPER_ARCHITECTURES = ['amd64', 'arm64'] as const;

function mtime(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}

const binary = (arch: string) => join(HELPER_DIST, `linux-${arch}`, 'tianqi-helper');

function stale(arch: string): boolean {
  const built = mtime(binary(arch));
  if (built === 0) return true;
  return readdirSync(SOURCE).some((name) => mtime(join(SOURCE, name)) > built);
}

function hasGo(): boolean {
  try {
    execFileSync('go', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Builds what is stale; returns false (after saying why) when Go is missing. */
export function buildHelper(options: { force?: boolean; log?: (line: string) => void } = {}): boolean {
  const log = options.log ?? ((line: string) => console.warn(line));
  const todo = HELPER_ARCHITECTURES.filter((arch) => options.force || stale(arch));
  if (todo.length === 0) return true;
  if (!hasGo()) {
    log('tianqi-helper: no Go toolchain found (go 1.23+ is needed to build helper/); SFTP, scp and port forwarding through the jump host stay off');
    return false;
  }
  for (const arch of todo) {
    const out = binary(arch);
    mkdirSync(join(HELPER_DIST, `linux-${arch}`), { recursive: true });
    const partial = `${out}.partial`;
    execFileSync('go', ['build', '-trimpath', '-ldflags=-s -w -buildid=', '-o', partial, '.'], {
      cwd: SOURCE,
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, CGO_ENABLED: '0', GOOS: 'linux', GOARCH: arch, GOFLAGS: '-mod=readonly -buildvcs=false' },
    });
    renameSync(partial, out);
    log(`tianqi-helper: built ${out}`);
  }
  return true;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const built = buildHelper({ force: process.argv.includes('--force') });
  if (!built && process.argv.includes('--strict')) process.exit(1);
}
