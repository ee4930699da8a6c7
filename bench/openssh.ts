// The OpenSSH clients as the benchmarks drive them: `sftp -b -` kept open between commands and
// `ssh -N -L` in the background, signed in with a key from the run's work folder.
import { spawn, type ChildProcess } from 'node:child_process';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { freePort } from '../test/support/ports.ts';

/** Options for a run's OpenSSH client: no user config, its own known_hosts, the run's key only. */
export function opensshOptions(work: string, logLevel = 'ERROR'): string[] {
  return [
    '-F', '/dev/null', '-o', 'StrictHostKeyChecking=no', '-o', `UserKnownHostsFile=${join(work, 'known_hosts')}`, '-o', `LogLevel=${logLevel}`,
    '-i', join(work, 'id_ed25519'), '-o', 'IdentitiesOnly=yes', '-o', 'IdentityAgent=none', '-o', 'BatchMode=yes',
  ];
}

/**
 * OpenSSH's `sftp -b -`, kept open between commands. Batch mode prints nothing when a `get` is
 * over, so each command is followed by `pwd`, whose answer (stdout is line-buffered) says that
 * the command before it is done; a failed command ends sftp, and with it the wait.
 */
export class SftpBatch {
  private stdout = '';
  private stderr = '';
  private answers = 0;
  private wake: (() => void) | null = null;
  private exited: string | null = null;

  private constructor(private readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8').on('data', (text: string) => {
      this.stdout = (this.stdout + text).slice(-4_096);
      this.answers += text.split('Remote working directory:').length - 1;
      this.wake?.();
    });
    child.stderr!.setEncoding('utf8').on('data', (text: string) => (this.stderr = (this.stderr + text).slice(-4_096)));
    child.once('exit', (code, signal) => {
      this.exited = `sftp exited with ${code ?? signal}: ${this.stderr.trim() || this.stdout.slice(-300)}`;
      this.wake?.();
    });
  }

  /** Signs in with the key and waits for the first answer: the connection and the helper are ready. */
  static async open(work: string, sshPort: number, login: string): Promise<SftpBatch> {
    const batch = new SftpBatch(spawn('sftp', [...opensshOptions(work), '-P', String(sshPort), '-b', '-', `${login}@127.0.0.1`], { stdio: ['pipe', 'pipe', 'pipe'] }));
    await batch.run('pwd');
    return batch;
  }

  /** Runs one command and resolves with the milliseconds until it was done. */
  async run(command: string, timeoutMs = 120_000): Promise<number> {
    const until = this.answers + 1;
    const started = performance.now();
    this.child.stdin!.write(`${command}\npwd\n`);
    const deadline = Date.now() + timeoutMs;
    while (this.answers < until) {
      if (this.exited) throw new Error(this.exited);
      if (Date.now() > deadline) throw new Error(`sftp: no answer to ${command} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1_000);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
    return performance.now() - started;
  }

  close(): void {
    this.child.stdin!.end();
    setTimeout(() => this.child.kill(), 2_000).unref();
  }
}

/**
 * `ssh -N -L 127.0.0.1:<local>:127.0.0.1:<remote>` in the background until `close`; resolves once
 * the local port accepts. The probes reach the jump host as forwarded connections too: the
 * service behind the port should send nothing to a client that sends nothing.
 */
export async function openForward(work: string, sshPort: number, login: string, remotePort: number): Promise<{ local: number; stderr(): string; close(): void }> {
  const local = await freePort();
  // INFO: a forwarded connection the jump host refuses is told at that level.
  const child = spawn('ssh', [...opensshOptions(work, 'INFO'), '-p', String(sshPort), '-N', '-o', 'ExitOnForwardFailure=yes',
    '-L', `127.0.0.1:${local}:127.0.0.1:${remotePort}`, `${login}@127.0.0.1`], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-4_096)));
  let exited = false;
  child.once('exit', () => (exited = true));
  for (const deadline = Date.now() + 30_000; ; await delay(100)) {
    if (exited) throw new Error(`ssh -L exited: ${stderr.trim()}`);
    if (Date.now() > deadline) {
      child.kill();
      throw new Error(`ssh -L: the local port did not open; ${stderr.trim()}`);
    }
    const open = await new Promise<boolean>((resolve) => {
      const socket = tcpConnect(local, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (open) return { local, stderr: () => stderr.trim(), close: () => child.kill() };
  }
}

