/**
 * Builds the Vue console into ui/dist when it is missing or older than its sources (`npm start`
 * runs this first, so `npm install && npm start` serves the console on a fresh machine).
 * `--force` builds in any case; `--typecheck` runs vue-tsc over ui/ first (the browser suite does).
 * Usage: tsx scripts/build-ui.ts [--force] [--typecheck]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const UI = fileURLToPath(new URL('../ui/', import.meta.url));
const DIST = join(UI, 'dist');
const INDEX = join(DIST, 'index.html');
const SOURCES = ['src', 'public', 'index.html', 'vite.config.ts'];

function newest(path: string): number {
  let info;
  try {
    info = statSync(path);
  } catch {
    return 0;
  }
  if (!info.isDirectory()) return info.mtimeMs;
  let max = info.mtimeMs;
  for (const entry of readdirSync(path)) max = Math.max(max, newest(join(path, entry)));
  return max;
}

/** True when ui/dist is missing or a source file changed after the last build. */
export function consoleIsStale(): boolean {
  let built: number;
  try {
    built = statSync(INDEX).mtimeMs;
  } catch {
    return true;
  }
  return SOURCES.some((s) => newest(join(UI, s)) > built);
}

export async function buildConsole(options: { force?: boolean; quiet?: boolean; typecheck?: boolean } = {}): Promise<boolean> {
  if (!options.force && !consoleIsStale()) return false;
  if (options.typecheck) {
    // A dev dependency: present after `npm install`, absent after `npm ci --omit=dev`.
    const vueTsc = join(UI, '..', 'node_modules', 'vue-tsc', 'bin', 'vue-tsc.js');
    if (existsSync(vueTsc)) execFileSync(process.execPath, [vueTsc, '-p', join(UI, 'tsconfig.json'), '--noEmit'], { stdio: 'inherit' });
  }
  // Built beside ui/dist, then swapped in: a server (or another build) never sees half a folder.
  const fresh = join(UI, `dist.building-${process.pid}`);
  const old = join(UI, `dist.old-${process.pid}`);
  const { build } = await import('vite');
  try {
    await build({ configFile: join(UI, 'vite.config.ts'), logLevel: options.quiet ? 'warn' : 'info', build: { outDir: fresh, emptyOutDir: true } });
    if (existsSync(DIST)) renameSync(DIST, old);
    renameSync(fresh, DIST);
  } finally {
    rmSync(fresh, { recursive: true, force: true });
    rmSync(old, { recursive: true, force: true });
  }
  return true;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const force = process.argv.includes('--force');
  const typecheck = process.argv.includes('--typecheck');
  try {
    if (!(await buildConsole({ force, typecheck }))) process.stdout.write('ui/dist is up to date\n');
  } catch (err) {
    console.error('building the console failed:', err instanceof Error ? err.message : err);
    process.exit(1);
  }
}
