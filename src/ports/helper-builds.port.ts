/** One build of tianqi-helper for one CPU architecture. */
export interface HelperBuild {
  readonly binary: Buffer;
  /** The first 16 hex digits of the binary's SHA-256: names its place in containers and its image. */
  readonly digest: string;
}

/** The builds of tianqi-helper (helper/) the platform copies into containers and runs as node guard. */
export interface HelperBuilds {
  /** The build for `arch` (Go's name: amd64, arm64), or null when it was not built. */
  forArch(arch: string): HelperBuild | null;
}

/** `docker info`'s Architecture (uname -m) in Go's names, as the helper's builds are named. */
export function goArchitecture(machine: string): string {
  switch (machine) {
    case 'x86_64':
    case 'amd64':
      return 'amd64';
    case 'aarch64':
    case 'arm64':
      return 'arm64';
    default:
      return machine;
  }
}
