import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HelperBuild, HelperBuilds } from '../../ports/helper-builds.port.ts';

/** Builds from `<dir>/linux-<arch>/tianqi-helper` (scripts/build-helper.ts), read once each; a missing one is looked for again next time. */
export class FileHelperBuilds implements HelperBuilds {
  private readonly builds = new Map<string, HelperBuild>();

  constructor(private readonly dir: string) {}

  forArch(arch: string): HelperBuild | null {
    const known = this.builds.get(arch);
    if (known) return known;
    let binary: Buffer;
    try {
      binary = readFileSync(join(this.dir, `linux-${arch}`, 'tianqi-helper'));
    } catch {
      return null;
    }
    const build = { binary, digest: createHash('sha256').update(binary).digest('hex').slice(0, 16) };
    this.builds.set(arch, build);
    return build;
  }
}
