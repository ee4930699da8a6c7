/**
 * Builds the Vue console into ui/dist when it is missing or older than its sources (`npm start`
 * runs this first, so `npm install && npm start` serves the console on a fresh machine).
 * `--force` builds in any case. Usage: tsx scripts/build-ui.ts [--force]
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const UI = fileURLToPath(new URL('../ui/', import.meta.url));
const INDEX = join(UI, 'dist', 'index.html');
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

export async function buildConsole(options: { force?: boolean; quiet?: boolean } = {}): Promise<boolean> {
  if (!options.force && !consoleIsStale()) return false;
  const { build } = await import('vite');
  await build({ configFile: join(UI, 'vite.config.ts'), logLevel: options.quiet ? 'warn' : 'info' });
  return true;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const force = process.argv.includes('--force');
  try {
    if (!(await buildConsole({ force }))) process.stdout.write('ui/dist is up to date\n');
  } catch (err) {
    console.error('building the console failed:', err instanceof Error ? err.message : err);
    process.exit(1);
  }
}
