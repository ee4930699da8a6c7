/**
 * tianqi-helper (helper/: the static Go program the platform copies into containers for SFTP and
 * port forwarding, and runs on nodes as the node guard) for linux/amd64 and linux/arm64, into
 * dist/helper/.
 *
 * The project ships the helper built (helper/prebuilt/: gzip'd binaries and MANIFEST.json with
 * the hash of the sources they were built from, the Go version and each binary's sha256), so a
 * machine with only Node.js and Docker gets a working platform: `npm start` and `npm test` unpack
 * the shipped build when it matches the sources. The build is reproducible (-trimpath, no build
 * id, no VCS stamp, CGO off, the Go version pinned by GOTOOLCHAIN), so CI rebuilds it from source
 * and fails when the shipped bytes differ (`--verify`). Who changes helper/ runs `--ship` (needs
 * Go) and commits helper/prebuilt/.
 *
 *   tsx scripts/build-helper.ts            dist/helper up to date: unpack the shipped build, or build with Go when the sources changed
 *   tsx scripts/build-helper.ts --force    build from source with Go (pinned version)
 *   tsx scripts/build-helper.ts --ship     build from source and write helper/prebuilt/
 *   tsx scripts/build-helper.ts --verify   build from source in a temp dir; fail unless it equals helper/prebuilt/
 *   --strict                               exit 1 instead of a warning when no build can be had
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';

const SOURCE = fileURLToPath(new URL('../helper/', import.meta.url));
const PREBUILT = join(SOURCE, 'prebuilt');
export const HELPER_DIST = fileURLToPath(new URL('../dist/helper/', import.meta.url));
export const HELPER_ARCHITECTURES = ['amd64', 'arm64'] as const;
/** The Go release every shipped build is made with (GOTOOLCHAIN): the same bytes on every machine. */
export const HELPER_GO = 'go1.26.8';

export interface HelperManifest {
  /** sha256 over the sources (helper/*.go except tests, go.mod, go.sum), as `sourceHash` makes it. */
  readonly source: string;
  readonly go: string;
  /** sha256 of each architecture's binary (uncompressed). */
  readonly binaries: Readonly<Record<string, string>>;
}

const binaryPath = (dir: string, arch: string) => join(dir, `linux-${arch}`, 'tianqi-helper');
const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

/** What the binaries are built from; tests and the shipped builds left out. */
export function sourceHash(dir = SOURCE): string {
  const hash = createHash('sha256');
  const names = readdirSync(dir).filter((n) => (n.endsWith('.go') && !n.endsWith('_test.go')) || n === 'go.mod' || n === 'go.sum').sort();
  for (const name of names) hash.update(`${name}\0${sha256(readFileSync(join(dir, name)))}\n`);
  return hash.digest('hex');
}

function readManifest(path: string): HelperManifest | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as HelperManifest;
  } catch {
    return null;
  }
}

function hasGo(): boolean {
  try {
    execFileSync('go', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Builds every architecture into `dir` with the pinned Go; returns the manifest of what it built. */
function build(dir: string, log: (line: string) => void): HelperManifest {
  const binaries: Record<string, string> = {};
  for (const arch of HELPER_ARCHITECTURES) {
    const out = binaryPath(dir, arch);
    mkdirSync(join(dir, `linux-${arch}`), { recursive: true });
    const partial = `${out}.partial`;
    execFileSync('go', ['build', '-trimpath', '-ldflags=-s -w -buildid=', '-o', partial, '.'], {
      cwd: SOURCE,
      stdio: ['ignore', 'inherit', 'inherit'],
      env: {
        ...process.env, CGO_ENABLED: '0', GOOS: 'linux', GOARCH: arch, GOFLAGS: '-mod=readonly -buildvcs=false',
        // The pinned release (fetched through the Go module proxy when the local Go is another one).
        GOTOOLCHAIN: HELPER_GO,
      },
    });
    renameSync(partial, out);
    binaries[arch] = sha256(readFileSync(out));
    log(`tianqi-helper: built ${out}`);
  }
  return { source: sourceHash(), go: HELPER_GO, binaries };
}

/** The shipped build's binaries, checked against its manifest; null when it does not match the sources. */
function shipped(): { manifest: HelperManifest; binaries: Record<string, Buffer> } | null {
  const manifest = readManifest(join(PREBUILT, 'MANIFEST.json'));
  if (!manifest || manifest.source !== sourceHash()) return null;
  const binaries: Record<string, Buffer> = {};
  for (const arch of HELPER_ARCHITECTURES) {
    const path = join(PREBUILT, `linux-${arch}`, 'tianqi-helper.gz');
    if (!existsSync(path)) return null;
    const binary = gunzipSync(readFileSync(path));
    if (sha256(binary) !== manifest.binaries[arch]) throw new Error(`helper/prebuilt: ${path} does not match MANIFEST.json (a damaged checkout?)`);
    binaries[arch] = binary;
  }
  return { manifest, binaries };
}

/** Whether dist/helper holds a build of the current sources. */
function distIsCurrent(): boolean {
  const manifest = readManifest(join(HELPER_DIST, 'MANIFEST.json'));
  if (!manifest || manifest.source !== sourceHash()) return false;
  return HELPER_ARCHITECTURES.every((arch) => {
    try {
      return statSync(binaryPath(HELPER_DIST, arch)).isFile() && sha256(readFileSync(binaryPath(HELPER_DIST, arch))) === manifest.binaries[arch];
    } catch {
      return false;
    }
  });
}

const NO_GO = [
  'tianqi-helper: helper/ has changed since the shipped build (helper/prebuilt/) and there is no Go toolchain to build it.',
  '  Install Go 1.23+ (https://go.dev/dl/; any release: the pinned one is fetched through the Go module proxy),',
  '  or check out helper/ as committed. Until then SFTP, scp, port forwarding, service links to loopback-only',
  '  services and the node guard are unavailable, and instances cannot be placed on guarded nodes.',
].join('\n');

/**
 * Makes dist/helper current: nothing when it is, the shipped build when it matches the sources,
 * else a build with Go. Returns false (after saying why) when none of these is possible.
 */
export function buildHelper(options: { force?: boolean; log?: (line: string) => void } = {}): boolean {
  const log = options.log ?? ((line: string) => console.warn(line));
  if (!options.force && distIsCurrent()) return true;
  if (!options.force) {
    const prebuilt = shipped();
    if (prebuilt) {
      for (const arch of HELPER_ARCHITECTURES) {
        const out = binaryPath(HELPER_DIST, arch);
        mkdirSync(join(HELPER_DIST, `linux-${arch}`), { recursive: true });
        writeFileSync(`${out}.partial`, prebuilt.binaries[arch]!, { mode: 0o755 });
        renameSync(`${out}.partial`, out);
      }
      writeFileSync(join(HELPER_DIST, 'MANIFEST.json'), `${JSON.stringify(prebuilt.manifest, null, 2)}\n`);
      log(`tianqi-helper: unpacked the shipped build (${prebuilt.manifest.go}) into ${HELPER_DIST}`);
      return true;
    }
  }
  if (!hasGo()) {
    log(NO_GO);
    return false;
  }
  const manifest = build(HELPER_DIST, log);
  writeFileSync(join(HELPER_DIST, 'MANIFEST.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  return true;
}

/** Builds from source and writes helper/prebuilt/ (gzip'd binaries and their manifest). */
export function shipHelper(log: (line: string) => void = (line) => console.warn(line)): HelperManifest {
  const dir = mkdtempSync(join(tmpdir(), 'tianqi-helper-'));
  try {
    const manifest = build(dir, log);
    for (const arch of HELPER_ARCHITECTURES) {
      mkdirSync(join(PREBUILT, `linux-${arch}`), { recursive: true });
      writeFileSync(join(PREBUILT, `linux-${arch}`, 'tianqi-helper.gz'), gzipSync(readFileSync(binaryPath(dir, arch)), { level: 9 }));
    }
    writeFileSync(join(PREBUILT, 'MANIFEST.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    log(`tianqi-helper: shipped build written to ${PREBUILT} (commit it)`);
    return manifest;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Rebuilds from source and says what differs from helper/prebuilt/; empty when nothing does. */
export function verifyHelper(log: (line: string) => void = (line) => console.warn(line)): string[] {
  const problems: string[] = [];
  const manifest = readManifest(join(PREBUILT, 'MANIFEST.json'));
  if (!manifest) return ['helper/prebuilt/MANIFEST.json is missing'];
  if (manifest.source !== sourceHash()) problems.push('helper/ changed after the shipped build was made: run `npm run helper:ship` and commit helper/prebuilt/');
  const dir = mkdtempSync(join(tmpdir(), 'tianqi-helper-'));
  try {
    const built = build(dir, log);
    for (const arch of HELPER_ARCHITECTURES) {
      const packed = join(PREBUILT, `linux-${arch}`, 'tianqi-helper.gz');
      const shippedHash = existsSync(packed) ? sha256(gunzipSync(readFileSync(packed))) : 'missing';
      if (shippedHash !== built.binaries[arch]) problems.push(`linux-${arch}: the shipped binary (${shippedHash.slice(0, 12)}) is not what the sources build (${built.binaries[arch]!.slice(0, 12)}) with ${HELPER_GO}`);
      if (manifest.binaries[arch] !== shippedHash) problems.push(`linux-${arch}: MANIFEST.json does not describe the shipped binary`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return problems;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  if (args.includes('--ship')) {
    shipHelper();
  } else if (args.includes('--verify')) {
    const problems = verifyHelper();
    if (problems.length > 0) {
      console.error(`tianqi-helper: the shipped build does not match its sources:\n  ${problems.join('\n  ')}`);
      process.exit(1);
    }
    console.warn('tianqi-helper: the shipped build is what the sources build, byte for byte');
  } else {
    const built = buildHelper({ force: args.includes('--force') });
    if (!built && args.includes('--strict')) process.exit(1);
  }
}
