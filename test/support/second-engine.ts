import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { waitFor } from './fixtures.ts';

/** The path of dockerd, '' where it is not installed. */
export const dockerd = (() => {
  try {
    return execFileSync('sh', ['-c', 'command -v dockerd']).toString().trim();
  } catch {
    return '';
  }
})();

/** A second, private engine the test can stop and start: its own data, exec root, pidfile and socket. */
export class SecondEngine {
  readonly dir = mkdtempSync(join(tmpdir(), 'tianqi-dd2-'));
  readonly socket = join(this.dir, 'docker.sock');
  private process?: ChildProcess;

  /**
   * `fakeNvidia`: a stand-in `nvidia-container-runtime-hook` on the engine's PATH, so that dockerd
   * registers its NVIDIA device driver and runs containers with GPU device requests (the hook does
   * nothing; there is no GPU here): what the platform asks of the engine for cards, and what the
   * engine records, are then real.
   */
  async start(options: { fakeNvidia?: boolean } = {}): Promise<void> {
    mkdirSync(join(this.dir, 'data'), { recursive: true });
    const bin = join(this.dir, 'bin');
    if (options.fakeNvidia) {
      mkdirSync(bin, { recursive: true });
      writeFileSync(join(bin, 'nvidia-container-runtime-hook'), '#!/bin/sh\n# stand-in: no GPU on this machine\ncat > /dev/null\nexit 0\n', { mode: 0o755 });
    }
    // A network namespace of its own: an engine that starts or stops rewrites bridges, and the
    // shared engine's docker0 must survive it. (`unshare`, not `ip netns exec`, which hides the cgroups.)
    this.process = spawn('unshare', ['--net', dockerd,
      `--host=unix://${this.socket}`, `--data-root=${join(this.dir, 'data')}`, `--exec-root=${join(this.dir, 'exec')}`,
      `--pidfile=${join(this.dir, 'docker.pid')}`, '--iptables=false', '--ip6tables=false',
    ], { stdio: 'ignore', env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}` } });
    const docker = new Dockerode({ socketPath: this.socket });
    await waitFor(() => docker.ping().then(() => true, () => false), (ok) => ok, 60_000);
  }

  /** Runs a command in the engine's network namespace (the engine must be running). */
  inNetns(command: string[]): { ok: boolean; output: string } {
    const pid = this.process?.pid;
    if (!pid || this.process?.exitCode !== null) throw new Error('the second engine is not running');
    try {
      return { ok: true, output: execFileSync('nsenter', [`--net=/proc/${pid}/ns/net`, ...command], { stdio: ['ignore', 'pipe', 'pipe'] }).toString() };
    } catch (error) {
      return { ok: false, output: String((error as { stderr?: Buffer }).stderr ?? error) };
    }
  }

  async stop(): Promise<void> {
    const p = this.process;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((resolve) => p.once('exit', resolve));
    p.kill('SIGTERM');
    await exited;
  }

  async destroy(): Promise<void> {
    if (existsSync(this.socket) || this.process?.exitCode === null) {
      const docker = new Dockerode({ socketPath: this.socket });
      for (const c of await docker.listContainers({ all: true }).catch(() => [])) await docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined);
    }
    await this.stop();
    // The engine's storage driver may leave mounts under its data root; undo them before removing it.
    const mounts = execFileSync('cat', ['/proc/mounts']).toString().split('\n').map((l) => l.split(' ')[1] ?? '').filter((m) => m.startsWith(this.dir));
    for (const m of mounts.reverse()) execFileSync('umount', ['-l', m]);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
